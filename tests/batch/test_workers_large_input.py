"""``--workers 2`` on stream inputs (CSV, JSON Lines, a database table), whose chunks travel
to the workers as rows and come back as rows: each chunk and each result is far larger than
the buffer between the processes (64 KiB for a pipe, ~208 KiB for the socket pair
multiprocessing uses). This once deadlocked: the parent blocked sending a chunk to a worker
that was itself blocked sending a result the parent had not read yet. The run is a
subprocess with a timeout, so a deadlock fails the test instead of hanging the suite."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.batch.conftest import IRIS_FEATURES, features, iris_table, reference
from tests.batch.test_local import env, runs  # noqa: F401 - fixture and helper

ROWS = 120_000
CHUNK_ROWS = 30_000  # 4 chunks of ~1.1 MB of input rows and ~1 MB of results
TIMEOUT_S = 20  # a run takes 2-4 s
CRASH_ROWS, CRASH_CHUNK = 800_000, 100_000  # 8 chunks of ~1.2 MB (id and x)
BUFFER = 212_992  # bytes a socket pair holds one way (net.core.wmem_default)


def _input(table: pa.Table, where: Path, fmt: str) -> list[str]:
    """``table`` written as ``fmt``; the ``--input`` arguments that read it."""
    path = where / f"in.{fmt}"
    if fmt == "csv":
        pacsv.write_csv(table, path)
    elif fmt == "jsonl":
        with path.open("w") as f:
            f.writelines(json.dumps(row) + "\n" for row in table.to_pylist())
    else:
        with sqlite3.connect(path) as db:
            db.execute(f"CREATE TABLE flowers ({', '.join(table.column_names)})")
            columns = [table[c].to_pylist() for c in table.column_names]
            db.executemany(f"INSERT INTO flowers VALUES ({', '.join('?' * len(columns))})",
                           zip(*columns, strict=True))
        db.close()
        return ["--input", f"sqlite:///{path}", "--input-table", "flowers"]
    return ["--input", str(path)]


def _score(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ferry batch`` in its own process group; kill the group if it hangs."""
    cmd = [sys.executable, "-m", "ferry", "batch", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the workers too
        proc.communicate()
        out = err = None
    if err is None:
        pytest.fail(f"`ferry batch {' '.join(args)}` did not finish in {TIMEOUT_S} s "
                    f"(deadlocked?)")
    if ok:
        assert proc.returncode == 0, err
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "db"])
def test_two_workers_score_every_row_of_a_large_stream_input_once(
        env: Path, batch_repo: Path, fmt: str) -> None:  # noqa: F811
    table = iris_table(ROWS, seed=7)
    source = _input(table, env, fmt)
    assert table.slice(0, CHUNK_ROWS).nbytes > 4 * BUFFER

    _score("iris", *source, "--output", str(env / "out.parquet"), "--key", "id",
           "--chunk-rows", str(CHUNK_ROWS), "--workers", "2", "-q")

    out = pq.read_table(env / "out.parquet")
    sent_back = out.drop(["model_version", "run_id", "scored_at"])  # per-run: not sent
    assert sent_back.slice(0, CHUNK_ROWS).nbytes > 4 * BUFFER
    assert out["id"].to_pylist() == table["id"].to_pylist()  # each row once, in input order
    label, probs = reference(batch_repo / "iris" / "2" / "model.onnx",
                             features(table, IRIS_FEATURES))
    np.testing.assert_array_equal(out["label"].to_numpy(), label)
    got = np.stack([out[f"probabilities_{k}"].to_numpy() for k in range(3)], axis=1)
    np.testing.assert_allclose(got, probs, rtol=1e-5, atol=1e-6)
    [run] = runs(env)
    assert (run["status"], run["rows_in"], run["rows_out"], run["rows_rejected"],
            run["chunks_done"]) == ("succeeded", ROWS, ROWS, 0, ROWS // CHUNK_ROWS)


def test_a_chunk_that_kills_its_worker_fails_the_run_cleanly_then_is_retried_once(
        env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """The crash path with large chunks: a dead worker's chunks (the one that killed it and
    the next) go to a new worker, which dies of the first while the second may still be
    being sent to it; the run must still fail as "died twice", and resume."""
    x = np.arange(CRASH_ROWS, dtype=np.float32)
    x[2 * CRASH_CHUNK + 10] = -1  # the model kills its process on this row
    pacsv.write_csv(pa.table({"id": np.arange(CRASH_ROWS), "x": x}), env / "in.csv")
    monkeypatch.delenv("FERRY_TEST_CRASH_MARKER", raising=False)  # kills it every time
    failed = _score("crash", "--input", str(env / "in.csv"), "--output",
                    str(env / "out.parquet"), "--key", "id", "--chunk-rows", str(CRASH_CHUNK),
                    "--workers", "2", "-q", ok=False)
    assert failed.returncode == 1, failed.stderr
    assert "a worker died twice scoring chunk 2" in failed.stderr
    [run] = runs(env)
    assert run["status"] == "failed"
    assert run["rows_in"] == run["chunks_done"] * CRASH_CHUNK <= 2 * CRASH_CHUNK

    monkeypatch.setenv("FERRY_TEST_CRASH_MARKER", str(tmp_path / "marker"))  # kills it once
    _score("--resume", run["run_id"], "-q")
    assert (tmp_path / "marker").exists()
    out = pq.read_table(env / "out.parquet")
    assert out["id"].cast(pa.int64()).to_pylist() == list(range(CRASH_ROWS))
    np.testing.assert_array_equal(out["y"].to_numpy(), x * 2)
    [resumed] = runs(env)
    assert (resumed["status"], resumed["rows_in"], resumed["rows_out"],
            resumed["chunks_done"]) == ("succeeded", CRASH_ROWS, CRASH_ROWS, 8)
