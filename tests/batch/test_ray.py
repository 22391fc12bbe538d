"""The Ray engine on a local Ray instance: the same rows as the local engine, rejects
included, through the real CLI. The dev extra (what ``make test`` installs) has Ray; in
another environment the module is skipped when Ray Data is not installed (pip install
'ferry[ray]'), but never in CI, where a missing Ray is an install step gone wrong."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.batch.conftest import iris_table, write_parquet
from tests.batch.test_local import env, ferry, runs  # noqa: F401 - env is a fixture

if os.environ.get("CI"):
    import ray
    import ray.data  # noqa: F401
else:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")


@pytest.fixture(scope="module", autouse=True)
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Ray for the module; its workers see ``FERRY_TEST_CRASH_MARKER`` (the path the
    ``crash`` model marks after killing its process once), which is yielded."""
    marker = tmp_path_factory.mktemp("ray-crash") / "marker"
    previous = os.environ.get("FERRY_TEST_CRASH_MARKER")
    os.environ["FERRY_TEST_CRASH_MARKER"] = str(marker)  # Ray's workers inherit it
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    finally:
        if previous is None:
            del os.environ["FERRY_TEST_CRASH_MARKER"]
        else:
            os.environ["FERRY_TEST_CRASH_MARKER"] = previous
    yield marker
    ray.shutdown()


def _rows(path: Path) -> pa.Table:
    table = ds.dataset(path, format="parquet").to_table()  # a file or a folder of parts
    return table.drop([c for c in ("run_id", "scored_at") if c in table.column_names])


def test_ray_writes_the_same_rows_as_local(env: Path) -> None:  # noqa: F811
    table = iris_table(12000, seed=5)
    x = table["sepal_width"].to_pylist()
    x[7] = x[9000] = None  # two rejects, in different chunks
    table = table.set_column(table.schema.get_field_index("sepal_width"), "sepal_width",
                             pa.array(x, pa.float32()))
    write_parquet(table, env / "in.parquet", row_group=2500)
    common = ["--input", env / "in.parquet", "--key", "id", "--passthrough", "region",
              "--chunk-rows", "1000"]
    ferry("batch", "iris", *common, "--output", env / "local.parquet", "--workers", "2")
    ferry("batch", "iris", *common, "--output", env / "ray.parquet", "--engine", "ray")
    assert _rows(env / "ray.parquet").equals(_rows(env / "local.parquet"))
    assert _rows(env / "ray.rejects.parquet").num_rows == 2
    assert _rows(env / "ray.rejects.parquet").equals(_rows(env / "local.rejects.parquet"))
    # to a folder, the actors write the part files themselves
    ferry("batch", "iris", *common, "--output", f"{env / 'parts'}/", "--engine", "ray")
    assert _rows(env / "parts").equals(_rows(env / "local.parquet"))
    assert _rows(env / "parts.rejects").equals(_rows(env / "local.rejects.parquet"))
    parts_run, ray_run, _ = runs(env)
    for run in (ray_run, parts_run):
        assert (run["status"], run["rows_in"], run["rows_out"], run["rows_rejected"],
                run["chunks_done"]) == ("succeeded", 12000, 11998, 2, 14)


def test_ray_to_sqlite_and_two_actors(env: Path) -> None:  # noqa: F811
    import sqlite3

    write_parquet(iris_table(3000, seed=6), env / "in.parquet", row_group=700)
    ferry("batch", "iris", "--input", env / "in.parquet", "--output", "sqlite:///p.db",
          "--table", "scores", "--key", "id", "--engine", "ray", "--workers", "2")
    ferry("batch", "iris", "--input", env / "in.parquet", "--output", env / "l.parquet",
          "--key", "id")
    with sqlite3.connect(env / "p.db") as db:
        got = db.execute("SELECT id, label FROM scores ORDER BY rowid").fetchall()
    local = pq.read_table(env / "l.parquet")
    assert got == list(zip(local["id"].to_pylist(), local["label"].to_pylist(), strict=True))


def _stream_input(where: Path, kind: str) -> list[str]:
    """Iris rows as ``kind`` (csv, jsonl, sqlite) with a few that do not fit the signature
    (text where a number belongs, a missing value), spread over several chunks; the
    ``--input`` arguments that read it."""
    rows = iris_table(2400, seed=8).to_pylist()
    rows[5]["sepal_length"] = "abc"
    rows[1300]["petal_width"] = None
    rows[2399]["sepal_width"] = "1,5"
    if kind == "csv":
        with open(where / "in.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return ["--input", str(where / "in.csv")]
    if kind == "jsonl":
        with open(where / "in.jsonl", "w") as fh:
            fh.writelines(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n"
                          for row in rows)
        return ["--input", str(where / "in.jsonl")]
    with sqlite3.connect(where / "in.db") as db:  # REAL columns holding text: SQLite keeps it
        db.execute("CREATE TABLE flowers (id TEXT, region TEXT, sepal_length REAL, "
                   "sepal_width REAL, petal_length REAL, petal_width REAL)")
        db.executemany("INSERT INTO flowers VALUES (:id, :region, :sepal_length, "
                       ":sepal_width, :petal_length, :petal_width)", rows)
    return ["--input", "sqlite:///in.db", "--input-table", "flowers"]


@pytest.mark.parametrize("kind", ["csv", "jsonl", "sqlite"])
def test_ray_scores_stream_inputs_like_local(env: Path, kind: str) -> None:  # noqa: F811
    common = [*_stream_input(env, kind), "--key", "id", "--passthrough", "region",
              "--chunk-rows", "400"]
    ferry("batch", "iris", *common, "--output", env / "local.parquet")
    ferry("batch", "iris", *common, "--output", env / "ray.parquet", "--engine", "ray")
    assert _rows(env / "ray.parquet").equals(_rows(env / "local.parquet"))
    rejects = _rows(env / "ray.rejects.parquet")
    assert rejects["id"].to_pylist() == ["row-5", "row-1300", "row-2399"]
    assert rejects.equals(_rows(env / "local.rejects.parquet"))
    ray_run, local_run = runs(env)
    for run in (ray_run, local_run):
        assert (run["status"], run["rows_in"], run["rows_out"], run["rows_rejected"],
                run["chunks_done"]) == ("succeeded", 2400, 2397, 3, 6)


def test_ray_resume_of_a_stream_input_skips_finished_chunks(env: Path) -> None:  # noqa: F811
    def write(x: np.ndarray) -> None:
        (env / "in.csv").write_text("id,x\n" + "".join(f"{i},{v}\n" for i, v in enumerate(x)))

    x = np.arange(600, dtype=np.float32)
    bad = x.copy()
    bad[550:] = -1  # the last chunk: every row makes the model raise, so the run fails
    write(bad)
    result = ferry("batch", "raiser", "--input", env / "in.csv", "--output", env / "o.parquet",
                   "--key", "id", "--chunk-rows", "50", "--engine", "ray", ok=False)
    assert result.exit_code == 1
    assert "negative values are not allowed" in result.output
    [run] = runs(env)
    assert run["status"] == "failed" and run["chunks_done"] >= 4  # at most 8 chunks unwritten
    # Now the first chunk would fail and the last would not: the resume must skip the first.
    fixed = x.copy()
    fixed[:50] = -1
    write(fixed)
    ferry("batch", "--resume", run["run_id"], "-q")
    [resumed] = runs(env)
    assert (resumed["status"], resumed["rows_in"], resumed["rows_out"],
            resumed["chunks_done"]) == ("succeeded", 600, 600, 12)
    out = pq.read_table(env / "o.parquet")
    assert out["id"].to_pylist() == [str(i) for i in range(600)]
    np.testing.assert_array_equal(out["y"].to_numpy(), x + 1)


def test_ray_actor_killed_on_a_stream_chunk_is_restarted_once(env: Path,  # noqa: F811
                                                             local_ray: Path) -> None:
    x = np.arange(400, dtype=np.float32)
    x[330] = -1  # the crash model kills its actor here, the first time only
    (env / "in.jsonl").write_text("".join(json.dumps({"id": i, "x": float(v)}) + "\n"
                                          for i, v in enumerate(x)))
    ferry("batch", "crash", "--input", env / "in.jsonl", "--output", env / "o.parquet",
          "--key", "id", "--chunk-rows", "50", "--engine", "ray")
    assert local_ray.exists()  # it did crash once
    out = pq.read_table(env / "o.parquet")
    assert out["id"].to_pylist() == [str(i) for i in range(400)]
    np.testing.assert_array_equal(out["y"].to_numpy(), x * 2)
    [run] = runs(env)
    assert (run["status"], run["rows_out"], run["chunks_done"]) == ("succeeded", 400, 8)
