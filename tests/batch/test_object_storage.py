"""Inputs and outputs on object storage: moto's standalone S3 server on loopback (real S3
over HTTP, read and written through fsspec/s3fs), driven through the real CLI."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.batch.conftest import iris_table
from tests.batch.test_local import (  # noqa: F401 - fixture and helpers
    env,
    ferry,
    runs,
    wait_for_chunks,
)

pytest.importorskip("s3fs")
S3 = pytest.importorskip("tests.integration.test_object_storage").S3


@pytest.fixture()
def s3(env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:  # noqa: F811
    store = S3()
    httpx.post(f"{store.endpoint}/moto-api/reset").raise_for_status()  # moto's state is global
    for name, value in {"AWS_ENDPOINT_URL": store.endpoint, "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                        "FERRY_CACHE_DIR": str(env / "cache")}.items():
        monkeypatch.setenv(name, value)
    for bucket in ("data", "out"):
        store.client.create_bucket(Bucket=bucket)
    yield store
    store.stop()


def _put(s3: S3, key: str, body: bytes, bucket: str = "data") -> None:
    s3.client.put_object(Bucket=bucket, Key=key, Body=body)


def _parquet_bytes(table: pa.Table, row_group: int = 1000) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group)
    return sink.getvalue()


def _keys(s3: S3, bucket: str, prefix: str = "") -> list[str]:
    listed = s3.client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def _read(s3: S3, bucket: str, key: str) -> bytes:
    return s3.client.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[no-any-return]


def _folder(s3: S3, bucket: str, prefix: str) -> pa.Table:
    parts = [k for k in _keys(s3, bucket, prefix + "/") if k.endswith(".parquet")]
    return pa.concat_tables(pq.read_table(io.BytesIO(_read(s3, bucket, k))) for k in parts)


def _with_nulls(n: int) -> pa.Table:
    table = iris_table(n)
    width = table["sepal_width"].to_numpy().astype(object)
    width[[3, 1700]] = None
    return table.set_column(table.schema.get_field_index("sepal_width"), "sepal_width",
                            pa.array(width.tolist(), pa.float32()))


def test_parquet_folder_on_s3_to_an_s3_folder_with_two_workers(env: Path,  # noqa: F811
                                                               s3: S3) -> None:
    table = _with_nulls(3000)
    _put(s3, "day=2026-11-20/part-0.parquet", _parquet_bytes(table.slice(0, 2000)))
    _put(s3, "day=2026-11-20/part-1.parquet", _parquet_bytes(table.slice(2000)))
    _put(s3, "day=2026-11-20/_SUCCESS", b"")
    pq.write_table(table, env / "local.parquet", row_group_size=1000)
    args = ("--key", "id", "--passthrough", "region", "--chunk-rows", "500", "-q")
    ferry("batch", "iris", "--input", env / "local.parquet", "--output", env / "one.parquet",
          *args)
    # the workers read their Parquet slices from S3 themselves
    ferry("batch", "iris", "--input", "s3://data/day=2026-11-20/", "--output",
          "s3://out/scores/", "--workers", "2", *args)
    [remote_run, local_run] = runs(env)
    assert (remote_run["status"], remote_run["rows_in"], remote_run["rows_rejected"]) == (
        "succeeded", 3000, 2)
    assert remote_run["chunks_done"] == 6
    single = pq.read_table(env / "one.parquet")
    got = _folder(s3, "out", "scores")
    for column in ("id", "region", "label", "probabilities_0", "probabilities_2"):
        assert got[column].equals(single[column]), column
    marker = json.loads(_read(s3, "out", "scores/_ferry.json"))
    assert (marker["run_id"], marker["rows"]) == (remote_run["run_id"], 2998)
    rejects = _folder(s3, "out", "scores.rejects")
    assert sorted(rejects["id"].to_pylist()) == ["row-1700", "row-3"]
    assert not [k for k in _keys(s3, "out") if ".ferry-" in k]  # no temporary keys left
    assert not list((env / "cache" / "batch").iterdir())  # nor a local mirror

    # a rerun with fewer chunks replaces the folder: no part of the first run is left
    _put(s3, "small.parquet", _parquet_bytes(iris_table(700)))
    ferry("batch", "iris", "--input", "s3://data/small.parquet", "--output", "s3://out/scores",
          *args)
    assert _keys(s3, "out", "scores/") == ["scores/_ferry.json", "scores/part-000000.parquet",
                                           "scores/part-000001.parquet"]
    assert _folder(s3, "out", "scores").num_rows == 700
    assert _keys(s3, "out", "scores.rejects/") == []  # no rejects this time: none left over


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_text_globs_on_s3_to_one_s3_file(env: Path, s3: S3, fmt: str) -> None:  # noqa: F811
    table = iris_table(900)
    for i, start in enumerate((0, 450)):
        part = table.slice(start, 450)
        if fmt == "csv":
            sink = io.BytesIO()
            pacsv.write_csv(part, sink)
            body = sink.getvalue()
        else:
            body = "".join(json.dumps(r) + "\n" for r in part.to_pylist()).encode()
        _put(s3, f"text/rows-{i}.{fmt}", body)
    _put(s3, "text/rows-bad.txt", b"not matched by the glob")
    ferry("batch", "iris", "--input", f"s3://data/text/*.{fmt}", "--output",
          "s3://out/preds/iris.csv", "--key", "id", "--chunk-rows", "200", "-q")
    out = pacsv.read_csv(io.BytesIO(_read(s3, "out", "preds/iris.csv")))
    assert out["id"].to_pylist() == table["id"].to_pylist()
    pq.write_table(table, env / "same.parquet")
    ferry("batch", "iris", "--input", env / "same.parquet", "--output", env / "same.csv",
          "--key", "id", "-q")
    local = pacsv.read_csv(env / "same.csv")
    np.testing.assert_allclose(out["probabilities_1"].to_numpy(),
                               local["probabilities_1"].to_numpy(), rtol=1e-6)
    assert _keys(s3, "out") == ["preds/iris.csv"]  # no rejects, no temporary key


def test_bad_object_storage_locations_fail_before_scoring(env: Path, s3: S3) -> None:  # noqa: F811
    _put(s3, "in.parquet", _parquet_bytes(iris_table(10)))
    empty = ferry("batch", "iris", "--input", "s3://data/nothing/", "--output",
                  env / "o.parquet", ok=False)
    assert empty.exit_code == 1 and "s3://data/nothing/' matches no file" in empty.output
    missing = ferry("batch", "iris", "--input", "s3://data/in.parquet", "--output",
                    "s3://no-such-bucket/o.parquet", ok=False)
    assert missing.exit_code == 1
    assert "--output s3://no-such-bucket/o.parquet: cannot write there" in missing.output
    _put(s3, "mine/notes.txt", b"keep me", bucket="out")
    foreign = ferry("batch", "iris", "--input", "s3://data/in.parquet", "--output",
                    "s3://out/mine/", ok=False)
    assert "Ferry did not write" in foreign.output
    assert _keys(s3, "out") == ["mine/notes.txt"]
    root = ferry("batch", "iris", "--input", "s3://data/in.parquet", "--output", "s3://out/",
                 ok=False)
    assert "name a file or folder inside the bucket" in root.output
    assert [r["status"] for r in runs(env)] == ["failed"] * 3


def test_a_failed_upload_is_resumed_without_rescoring(env: Path, batch_repo: Path,  # noqa: F811
                                                      s3: S3) -> None:
    n = 600
    rows = pa.table({"id": pa.array(np.arange(n)), "x": pa.array(np.arange(n, dtype=np.float32))})
    _put(s3, "x.parquet", _parquet_bytes(rows, row_group=100))
    cmd = [sys.executable, "-m", "ferry", "batch", "slow", "--input", "s3://data/x.parquet",
           "--output", "s3://out/y.parquet", "--key", "id", "--chunk-rows", "20",
           "--checkpoint-s", "0", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    wait_for_chunks(1)  # scoring: the write probe is done and deleted
    s3.client.delete_bucket(Bucket="out")  # gone while the run scores: its upload fails
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "uploading s3://out/y.parquet failed" in err
    [run] = runs(env)
    assert (run["status"], run["chunks_done"]) == ("failed", 30)
    mirror = env / "cache" / "batch" / run["run_id"]
    assert (mirror / "out.parquet").exists()
    published = json.loads((mirror / "published.json").read_text())
    assert published == {"chunks": list(range(30)), "counts": [[20, 20, 0]] * 30}

    s3.client.create_bucket(Bucket="out")
    changed = rows.set_column(1, "x", pa.array(np.full(n, -5, dtype=np.float32)))
    _put(s3, "x.parquet", _parquet_bytes(changed, row_group=100))  # rescoring would show
    ferry("batch", "--resume", run["run_id"], "-q")
    out = pq.read_table(io.BytesIO(_read(s3, "out", "y.parquet")))
    assert out["id"].to_pylist() == list(range(n))
    np.testing.assert_array_equal(out["y"].to_numpy(), np.arange(n, dtype=np.float32) * 2)
    [resumed] = runs(env)
    assert (resumed["status"], resumed["rows_in"], resumed["rows_out"],
            resumed["chunks_done"]) == ("succeeded", n, n, 30)
    assert not mirror.exists()


def test_an_interrupted_run_resumes_from_its_local_staging(env: Path, batch_repo: Path,  # noqa: F811
                                                           s3: S3) -> None:
    n = 600
    rows = pa.table({"id": pa.array(np.arange(n)), "x": pa.array(np.arange(n, dtype=np.float32))})
    _put(s3, "x.parquet", _parquet_bytes(rows, row_group=100))
    cmd = [sys.executable, "-m", "ferry", "batch", "slow", "--input", "s3://data/x.parquet",
           "--output", "s3://out/y/", "--key", "id", "--chunk-rows", "20", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    wait_for_chunks(5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    [run] = runs(env)
    done = run["chunks_done"]
    assert run["status"] == "interrupted" and 5 <= done < 30
    assert _keys(s3, "out") == []  # nothing published

    changed = rows.set_column(1, "x", pa.array(np.full(n, -5, dtype=np.float32)))
    _put(s3, "x.parquet", _parquet_bytes(changed, row_group=100))
    ferry("batch", "--resume", run["run_id"], "-q")
    out = _folder(s3, "out", "y")
    assert out["id"].to_pylist() == list(range(n))  # every row once, in order
    y = out["y"].to_numpy()
    # the chunks staged before the interruption were not scored again (the staging may hold
    # one chunk more than the record: SIGTERM can land between the two)
    kept = int(np.argmax(y == -10))
    assert kept % 20 == 0 and done * 20 <= kept <= (done + 1) * 20, (kept, done)
    np.testing.assert_array_equal(y[:kept], np.arange(kept, dtype=np.float32) * 2)
    assert (y[kept:] == -10).all()
    [resumed] = runs(env)  # counted from the staging, that extra chunk included
    assert (resumed["status"], resumed["rows_in"], resumed["rows_out"],
            resumed["chunks_done"]) == ("succeeded", n, n, 30)


def test_a_chunk_writer_away_from_the_mirror_hands_rows_back(tmp_path: Path) -> None:
    from ferry.batch.scoring import ChunkResult
    from ferry.batch.sinks.folder import ChunkFileWriter
    from ferry.batch.sinks.remote import MirrorWriter

    staging, rejects = tmp_path / "stage", tmp_path / "stage.rejects"
    counts = tmp_path / "stage.counts"
    for folder in (staging, rejects, counts):
        folder.mkdir()
    writer = MirrorWriter(ChunkFileWriter("parquet", staging, rejects, counts),
                          str(tmp_path / "gone"))
    table = pa.table({"y": [1.0, 2.0]})
    result = writer(ChunkResult(0, table, table.slice(0, 0), 2))
    assert not result.stored and result.output is table  # the driver writes it
    assert list(staging.iterdir()) == []
    here = MirrorWriter(writer.inner, str(tmp_path))
    assert here(ChunkResult(1, table, table.slice(0, 0), 2)).stored
    assert [p.name for p in staging.iterdir()] == ["part-000001.parquet"]
    assert json.loads((counts / "part-000001.json").read_text()) == [2, 2, 0]
