"""Faults: Ctrl-C/SIGTERM then --resume (no rescoring, no duplicates), crashing workers."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ferry.batch.sinks.database import staging_tag
from tests.batch.conftest import drop_postgres_tables
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


# -- SIGKILL between a chunk becoming durable and the run record counting it --------------

KINDS = ["parquet", "csv", "folder", "sqlite", "postgresql"]


def _x_with_nulls(n: int) -> pa.Table:
    """``x`` null on every 7th row: those rows are rejected, so all three counts move."""
    x = pa.array(np.arange(n, dtype=np.float32), mask=np.arange(n) % 7 == 3)
    return pa.table({"id": pa.array(np.arange(n)), "x": x})


@pytest.fixture(params=KINDS)
def output_kind(request: pytest.FixtureRequest) -> Iterator[tuple[str, str | None]]:
    """An output kind, with the session's PostgreSQL URL for ``postgresql`` (whose tables
    this test leaves as it found them)."""
    if request.param != "postgresql":
        yield request.param, None
        return
    url = str(request.getfixturevalue("postgres_url"))
    yield request.param, url
    drop_postgres_tables(url, "scores")


def _target(kind: str, root: Path, pg_url: str | None) -> str:
    if kind == "postgresql":
        assert pg_url is not None
        return pg_url.replace("postgresql+psycopg://", "postgresql://")
    return {"parquet": str(root / "out.parquet"), "csv": str(root / "out.csv"),
            "sqlite": f"sqlite:///{root / 'o.db'}", "folder": f"{root / 'out'}/"}[kind]


def _query(kind: str, root: Path, pg_url: str | None, sql: str) -> list[tuple]:
    if kind == "sqlite":
        con = sqlite3.connect(root / "o.db", timeout=30)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    import sqlalchemy as sa

    assert pg_url is not None
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as c:
            return [tuple(r) for r in c.execute(sa.text(sql))]
    finally:
        engine.dispose()


def _durable_chunks(kind: str, root: Path, pg_url: str | None, run_id: str) -> int:
    """How many chunks the output's staging holds (read from outside, as resume would)."""
    if kind in ("parquet", "csv"):
        staging = root / f".out.{kind}.ferry-{run_id}"
        return sum(len(json.loads(p.read_text())["chunks"])
                   for p in staging.glob("part-*.json"))
    if kind == "folder":
        return len(list((root / f".out.ferry-{run_id}").glob("part-*.parquet")))
    table = f"scores__chunks_{staging_tag(run_id)}"
    try:
        return int(_query(kind, root, pg_url, f'SELECT count(*) FROM "{table}"')[0][0])
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def _outputs(kind: str, root: Path, pg_url: str | None) -> tuple[pa.Table, int]:
    """The published output (id, y) and the number of rows in the rejects output."""
    if kind in ("sqlite", "postgresql"):
        rows = _query(kind, root, pg_url, "SELECT id, y FROM scores")
        [(rejected,)] = _query(kind, root, pg_url, "SELECT count(*) FROM scores_rejects")
        return pa.table({"id": [int(r[0]) for r in rows], "y": [r[1] for r in rows]}), rejected
    if kind == "folder":
        return (ds.dataset(root / "out", format="parquet").to_table(),
                ds.dataset(root / "out.rejects", format="parquet").count_rows())
    read = pq.read_table if kind == "parquet" else pacsv.read_csv
    return read(root / f"out.{kind}"), read(root / f"out.rejects.{kind}").num_rows


def _kill_in_the_window(kind: str, root: Path, pg_url: str | None,
                        workers: int = 1) -> tuple[str, int]:
    """Start a run and SIGKILL it after its sink made a chunk durable but before the run
    store counted it: the test holds the run store's write lock, so the run blocks in
    exactly that window, and waits until the staging holds more chunks than the record.
    Returns the run id and the chunks recorded."""
    cmd = [sys.executable, "-m", "ferry", "batch", "slow", "--input", str(root / "in.parquet"),
           "--output", _target(kind, root, pg_url), "--table", "scores", "--key", "id",
           "--chunk-rows", "64", "--checkpoint-s", "0", "--workers", str(workers), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = sqlite3.connect(root / "runs.db", timeout=30, isolation_level=None)
    try:
        wait_for_chunks(3)
        lock.execute("BEGIN IMMEDIATE")  # the run's next record of progress waits here
        [(run_id, recorded)] = lock.execute("SELECT run_id, chunks_done FROM batch_runs")
        deadline = time.monotonic() + 60
        while _durable_chunks(kind, root, pg_url, run_id) <= recorded:
            assert time.monotonic() < deadline, "the sink made no chunk durable"
            assert proc.poll() is None, "the run ended on its own"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # no handler runs: staging and record as they are
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if lock.in_transaction:
            lock.rollback()
        lock.close()
    [run] = runs(root)
    assert run["status"] == "running"
    assert run["chunks_done"] == recorded < _durable_chunks(kind, root, pg_url, run_id)
    return run_id, recorded


@dataclass
class _Resumed:
    """A run killed in the window and resumed: its input, the record after the resume, and
    what the output and the rejects output hold."""

    input: pa.Table
    record: dict
    out: pa.Table
    rejected: int


def _kill_then_resume(kind: str, root: Path, pg_url: str | None, workers: int = 1,
                      before_resume: Callable[[str], None] | None = None) -> _Resumed:
    """Score 40 chunks of ``_x_with_nulls`` rows, SIGKILL the run in the window, resume it
    (after ``before_resume(run_id)``), and check that every scorable row is out once."""
    n = 64 * 40
    table = _x_with_nulls(n)
    pq.write_table(table, root / "in.parquet", row_group_size=64 * 10)
    run_id, _ = _kill_in_the_window(kind, root, pg_url, workers=workers)
    if before_resume is not None:
        before_resume(run_id)
    ferry("batch", "--resume", run_id, "-q")
    [record] = runs(root)
    assert record["run_id"] == run_id
    out, rejected = _outputs(kind, root, pg_url)
    assert sorted(out["id"].to_pylist()) == [i for i in range(n) if i % 7 != 3]  # each once
    return _Resumed(table, record, out, rejected)


def test_sigkill_after_the_sink_commits_but_before_the_record_resumes_with_exact_counts(
        env: Path, output_kind: tuple[str, str | None]) -> None:  # noqa: F811
    """The window the run record used to lose a chunk in (it finished one chunk short).
    After ``--resume`` the record's counts must equal the rows in the output and in the
    rejects output, because they are rebuilt from the counts the sink keeps."""
    kind, pg_url = output_kind
    r = _kill_then_resume(kind, env, pg_url)
    resumed, out, rejected = r.record, r.out, r.rejected
    nulls = r.input["x"].null_count
    assert (rejected, out.num_rows) == (nulls, r.input.num_rows - nulls)
    assert resumed["status"] == "succeeded"
    assert (resumed["rows_in"], resumed["rows_out"], resumed["rows_rejected"],
            resumed["chunks_done"]) == (out.num_rows + rejected, out.num_rows, rejected, 40)


def test_sigkill_with_workers_writing_parts_ahead_of_the_record_resumes_with_exact_counts(
        env: Path) -> None:  # noqa: F811
    """With ``--workers 2`` to a folder, the workers make chunks durable themselves, ahead of
    the writer that records them: a kill can leave several chunks uncounted."""
    r = _kill_then_resume("folder", env, None, workers=2)
    resumed, out, rejected, n = r.record, r.out, r.rejected, r.input.num_rows
    assert (resumed["status"], resumed["rows_in"], resumed["rows_out"],
            resumed["rows_rejected"], resumed["chunks_done"]) == (
        "succeeded", n, out.num_rows, rejected, 40)


def _as_older_ferry(kind: str, root: Path, run_id: str) -> None:
    """Strip the chunk counts from a run's staging, as a Ferry before them staged it."""
    if kind == "parquet":
        for sidecar in (root / f".out.parquet.ferry-{run_id}").glob("part-*.json"):
            sidecar.write_text(json.dumps({"chunks": json.loads(sidecar.read_text())["chunks"]}))
    elif kind == "folder":
        shutil.rmtree(root / f".out.ferry-{run_id}.counts")
    else:
        table = f"scores__chunks_{staging_tag(run_id)}"
        con = sqlite3.connect(root / "o.db", isolation_level=None)
        con.executescript(f'BEGIN; CREATE TABLE old (chunk INTEGER PRIMARY KEY); INSERT INTO '
                          f'old SELECT chunk FROM "{table}"; DROP TABLE "{table}"; ALTER '
                          f'TABLE old RENAME TO "{table}"; COMMIT;')
        con.close()


@pytest.mark.parametrize("kind", ["parquet", "folder", "sqlite"])
def test_staging_of_an_older_ferry_still_resumes(env: Path, kind: str) -> None:  # noqa: F811
    """Staging without counts (an older Ferry's) resumes as before: every row once, and the
    run's counts from the run store, so a chunk the kill kept from being recorded stays out
    of them (the documented fallback)."""
    r = _kill_then_resume(kind, env, None,
                          before_resume=lambda run_id: _as_older_ferry(kind, env, run_id))
    resumed, out, rejected, n = r.record, r.out, r.rejected, r.input.num_rows
    nulls = r.input["x"].null_count
    assert (rejected, out.num_rows) == (nulls, n - nulls)
    assert (resumed["status"], resumed["chunks_done"]) == ("succeeded", 39)  # one uncounted
    assert resumed["rows_in"] == n - 64
    assert resumed["rows_out"] + resumed["rows_rejected"] == n - 64
