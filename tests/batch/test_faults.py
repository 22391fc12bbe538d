"""Faults: Ctrl-C/SIGTERM then --resume (no rescoring, no duplicates), crashing workers."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.batch.test_local import (  # noqa: F401 - fixture and helpers
    env,
    ferry,
    runs,
    wait_for_chunks,
)


def _x_table(n: int) -> pa.Table:
    return pa.table({"id": pa.array(np.arange(n)), "x": pa.array(np.arange(n, dtype=np.float32))})


@pytest.mark.parametrize("output", ["parquet", "sqlite", "folder"])
def test_sigterm_marks_interrupted_and_resume_finishes_without_duplicates(
        env: Path, batch_repo: Path, output: str) -> None:  # noqa: F811
    n = 64 * 60
    pq.write_table(_x_table(n), env / "in.parquet", row_group_size=64 * 10)
    target = {"parquet": str(env / "out.parquet"), "sqlite": f"sqlite:///{env / 'o.db'}",
              "folder": f"{env / 'out'}/"}[output]
    cmd = [sys.executable, "-m", "ferry", "batch", "slow", "--input", str(env / "in.parquet"),
           "--output", target, "--table", "scores", "--key", "id", "--chunk-rows", "64",
           "--checkpoint-s", "0", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_chunks(5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    [run] = runs(env)
    assert run["status"] == "interrupted"
    assert f"ferry batch --resume {run['run_id']}" in err
    done_before = run["chunks_done"]
    assert 5 <= done_before < 60
    ferry("batch", "--resume", run["run_id"], "-q")
    [resumed] = runs(env)
    assert (resumed["run_id"], resumed["status"]) == (run["run_id"], "succeeded")
    assert (resumed["rows_in"], resumed["rows_out"], resumed["chunks_done"]) == (n, n, 60)
    if output != "sqlite":
        out = pq.read_table(env / "out.parquet") if output == "parquet" else ds.dataset(
            env / "out", format="parquet").to_table()
        ids, ys = out["id"].to_numpy(), out["y"].to_numpy()
    else:
        con = sqlite3.connect(env / "o.db")
        rows = con.execute("SELECT id, y FROM scores").fetchall()
        con.close()
        ids, ys = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    assert sorted(ids.tolist()) == list(range(n))  # every row exactly once
    np.testing.assert_array_equal(ys, ids.astype(np.float32) * 2)


def test_crashing_worker_chunk_is_retried_once(env: Path, tmp_path: Path,  # noqa: F811
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.arange(2000, dtype=np.float32)
    values[777] = -1
    pq.write_table(pa.table({"id": np.arange(2000), "x": values}), env / "in.parquet",
                   row_group_size=250)
    monkeypatch.setenv("FERRY_TEST_CRASH_MARKER", str(tmp_path / "marker"))
    ferry("batch", "crash", "--input", env / "in.parquet", "--output", env / "o.parquet",
          "--key", "id", "--workers", "2", "-q")
    assert (tmp_path / "marker").exists()  # it did crash once
    out = pq.read_table(env / "o.parquet")
    np.testing.assert_array_equal(out["y"].to_numpy(), values * 2)
    assert runs(env)[0]["status"] == "succeeded"


def test_worker_crashing_twice_fails_the_run_cleanly(env: Path,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.arange(1000, dtype=np.float32)
    values[900] = -1  # in the last chunk: the three before it are saved for --resume
    pq.write_table(pa.table({"x": values}), env / "in.parquet", row_group_size=250)
    monkeypatch.delenv("FERRY_TEST_CRASH_MARKER", raising=False)
    result = ferry("batch", "crash", "--input", env / "in.parquet", "--output",
                   env / "o.parquet", "--workers", "2", ok=False)
    assert result.exit_code == 1
    assert "died twice scoring chunk 3" in result.output
    [run] = runs(env)
    assert run["status"] == "failed" and "resumed" in run["error"]
    assert not (env / "o.parquet").exists()
    staging = [p.name for p in env.iterdir() if p.name.startswith(".o.parquet.ferry-")]
    assert staging == [f".o.parquet.ferry-{run['run_id']}"]  # kept for --resume
    listed = ferry("batch", "runs")
    assert run["run_id"] in listed.output and "died twice" in listed.output
    assert json.loads(ferry("batch", "runs", "--format", "json").output)[0]["rows_in"] == 750
