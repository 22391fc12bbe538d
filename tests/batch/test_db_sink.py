"""The database sink's bulk paths on real SQLite and PostgreSQL: binary COPY, SQLite's ADBC
ingest and the executemany conversion round-trip every column type, NULLs and unicode;
one-value columns written as SQL literals (executemany); a run killed mid-way (SIGKILL) or
whose connection is cut resumes or retries without losing or duplicating rows."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ferry.batch.job import Location
from ferry.batch.records import RunStore
from ferry.batch.scoring import ChunkResult
from ferry.batch.sinks import DbSink, PublishInfo
from tests.batch.test_local import (  # noqa: F401 - fixture and helpers
    env,
    ferry,
    runs,
    wait_for_chunks,
)

KEYS = ["a", "ü-é", "日本語", "quote's \"q\"", "tab\tnew\nline\\back", "🙂", "", "z"]
TS = [datetime(2026, 11, 21, 2, 0, 0, 123456, tzinfo=UTC), None,
      datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC),
      datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 6, 1, 12, tzinfo=UTC), None,
      datetime(1900, 3, 4, 5, 6, 7, 8, tzinfo=UTC)]


def _table() -> pa.Table:
    n = len(KEYS)
    return pa.table({
        "id": pa.array(KEYS),
        "flag": pa.array([True, False, None, True, False, True, None, False]),
        "small": pa.array([-128, 127, None, 0, 1, -1, 5, 6], pa.int8()),
        "i32": pa.array([-2**31, 2**31 - 1, 0, None, 7, 8, 9, 10], pa.int32()),
        "u32": pa.array([0, 2**32 - 1, None, 3, 4, 5, 6, 7], pa.uint32()),
        "i64": pa.array([-2**63, 2**63 - 1, None, 3, 4, 5, 6, 7], pa.int64()),
        "f32": pa.array([0.1, -1.5, float("inf"), None, float("nan"), 3.25, 1e-30, 7.0],
                        pa.float32()),
        "f64": pa.array([0.1, None, -float("inf"), 1e300, 2.5, 3.5, 4.5, 5.5]),
        "ts": pa.array(TS, pa.timestamp("us", tz="UTC")),
        "ts_naive_ns": pa.array([1_700_000_000_123_456_789 + i for i in range(n)],
                                pa.timestamp("ns")),
        "day": pa.array([date(2024, 1, 2)] * (n - 1) + [None], pa.date32()),
        "cat": pa.array(["x", "y", None, "x", "y", "x", "x", "y"]).dictionary_encode(),
        "big_text": pa.array(["é" * 3000, None, "b", "c", "d", "e", "f", "g"], pa.large_string()),
        "run_id": pa.array(["run 'one'"] * n),  # one value: an SQL literal in SQLite
        "version": pa.array([3] * n, pa.int64()),
    })


def _sink(location: Location, table: pa.Table, run_id: str = "20261121-000000-abcdef12",
          **kw: object) -> DbSink:
    rejects = pa.schema([("id", pa.string()), ("reject_reason", pa.string())])
    return DbSink(location, f"{location.table}_rejects", run_id, "replace", table.schema,
                  rejects, **kw)  # type: ignore[arg-type]


def _write(sink: DbSink, table: pa.Table) -> None:
    assert sink.open(resume=False) == {}
    rejects = pa.table({"id": ["r-é", None], "reject_reason": ["bad 'x'", "🙂"]})
    sink.write(ChunkResult(0, table.slice(0, 5), rejects, 7))
    sink.write(ChunkResult(1, table.slice(5), rejects.slice(0, 0), 3))
    sink.publish(PublishInfo("20261121-000000-abcdef12", "m", 1, ["id"], table.num_rows))
    sink.close()


def _same_float(got: float | None, want: float | None, width: type) -> bool:
    if got is None or want is None:
        return got is None and want is None
    if math.isnan(want):
        return math.isnan(got)
    return bool(width(got) == width(want))


def test_binary_copy_round_trips_types_nulls_and_unicode(postgres_url: str) -> None:
    import sqlalchemy as sa

    table = _table()
    _write(_sink(Location("sql", "postgresql", target=postgres_url, table="types_pg"), table),
           table)
    engine = sa.create_engine(postgres_url)
    with engine.connect() as c:
        got = [dict(r._mapping) for r in c.execute(sa.text("SELECT * FROM types_pg"))]
        rejects = c.execute(sa.text("SELECT id, reject_reason FROM types_pg_rejects")).all()
        kinds = dict(c.execute(sa.text(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'types_pg'")).all())
    engine.dispose()
    assert kinds["flag"] == "boolean" and kinds["u32"] == "bigint"
    assert kinds["ts"] == "timestamp with time zone" and kinds["f32"] == "real"
    want = table.drop_columns(["ts_naive_ns"]).to_pylist()  # as_py of ns needs pandas
    assert [r["id"] for r in got] == KEYS  # in order, unicode and special characters intact
    for g, w in zip(got, want, strict=True):
        for name in ("flag", "small", "i32", "u32", "i64", "ts", "big_text", "run_id",
                     "version", "cat"):
            assert g[name] == w[name], (name, g[name], w[name])
        assert _same_float(g["f32"], w["f32"], np.float32)
        assert _same_float(g["f64"], w["f64"], float)
        assert g["day"] == (None if w["day"] is None else w["day"].isoformat())
        # nanoseconds are rounded to PostgreSQL's microseconds
        assert g["ts_naive_ns"] == datetime(2023, 11, 14, 22, 13, 20, 123457)
    assert rejects == [("r-é", "bad 'x'"), (None, "🙂")]


def test_binary_copy_of_a_chunk_in_slices_round_trips(postgres_url: str) -> None:
    """A chunk of 2.5 slices (``pgcopy.SLICE_ROWS``) with NULLs on and around the slice
    edges: every row arrives once, with its values."""
    import sqlalchemy as sa

    from ferry.batch.sinks import pgcopy

    n = 2 * pgcopy.SLICE_ROWS + pgcopy.SLICE_ROWS // 2
    edges = {0, pgcopy.SLICE_ROWS - 1, pgcopy.SLICE_ROWS, 2 * pgcopy.SLICE_ROWS, n - 1}
    nulls = [i in edges or i % 7 == 0 for i in range(n)]
    table = pa.table({
        "id": pa.array([f"k{i}-é" for i in range(n)]),
        "v": pa.array([None if z else i for i, z in enumerate(nulls)], pa.int64()),
        "f": pa.array([None if z else i / 4 for i, z in enumerate(nulls)], pa.float32()),
        "s": pa.array([None if z else "x" * (i % 5) for i, z in enumerate(nulls)]),
        "ts": pa.array([None if z else i * 1_000_000 for i, z in enumerate(nulls)],
                       pa.timestamp("us", tz="UTC")),
        "u": pa.array([None if z else 2**64 - 1 - i for i, z in enumerate(nulls)], pa.uint64()),
    })
    sink = _sink(Location("sql", "postgresql", target=postgres_url, table="types_pg_sliced"),
                 table)
    sink.open(resume=False)
    sink.write(ChunkResult(0, table, None, n))
    sink.publish(PublishInfo("20261121-000000-abcdef12", "m", 1, [], n))
    sink.close()
    engine = sa.create_engine(postgres_url)
    with engine.connect() as c:
        got = [tuple(r) for r in c.execute(sa.text(
            "SELECT id, v, f, s, ts, u FROM types_pg_sliced"))]
    engine.dispose()
    want = [tuple(r.values()) for r in table.to_pylist()]
    got.sort(key=lambda row: int(row[0][1:].split("-")[0]))
    assert [(g[0], g[1], g[2], g[3], g[4], None if g[5] is None else int(g[5])) for g in got] \
        == want


def test_a_transaction_commits_once_its_chunks_hold_commit_bytes(postgres_url: str) -> None:
    """PostgreSQL commits by size (and time) only; the chunks kept for a replay stay under
    ``commit_bytes``."""
    table = _x_table(300)
    location = Location("sql", "postgresql", target=postgres_url, table="scores_bytes")
    sink = _sink(location, table, commit_s=3600.0, commit_bytes=2 * table.slice(0, 100).nbytes)
    assert sink.commit_rows > 10**9  # no row bound for PostgreSQL
    sink.open(resume=False)
    empty = pa.table({"id": pa.array([], pa.string()),
                      "reject_reason": pa.array([], pa.string())})
    assert sink.write(ChunkResult(0, table.slice(0, 100), empty, 100)) == []
    assert sink.write(ChunkResult(1, table.slice(100, 100), empty, 100)) == [0, 1]
    assert sink.write(ChunkResult(2, table.slice(200), empty, 100)) == []
    assert sink.flush() == [2]
    sink.discard()


@pytest.mark.parametrize("adbc", [True, False], ids=["adbc", "executemany"])
def test_sqlite_rows_round_trip_and_literals(tmp_path: Path, adbc: bool) -> None:
    table = _table()
    db = tmp_path / "types.db"
    sink = _sink(Location("sql", "sqlite", target=f"sqlite:///{db}", table="types"), table,
                 adbc=adbc)
    assert (sink.adbc_path is not None) == adbc
    _write(sink, table)
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    got = [dict(r) for r in con.execute("SELECT * FROM types")]
    rejects = con.execute("SELECT id, reject_reason FROM types_rejects").fetchall()
    con.close()
    want = table.drop_columns(["ts_naive_ns"]).to_pylist()  # as_py of ns needs pandas
    assert [r["id"] for r in got] == KEYS
    for g, w in zip(got, want, strict=True):
        for name in ("small", "i32", "u32", "i64", "big_text", "run_id", "version", "cat"):
            assert g[name] == w[name], (name, g[name], w[name])
        assert g["flag"] == (None if w["flag"] is None else int(w["flag"]))
        assert _same_float(g["f32"], w["f32"], np.float32) or (
            w["f32"] is not None and math.isnan(w["f32"]) and g["f32"] is None)  # NaN -> NULL
        assert _same_float(g["f64"], w["f64"], float)
    # timestamps keep the text Arrow gives them (what the sink always stored)
    assert [r["ts"] for r in got] == table["ts"].cast(pa.string()).to_pylist()
    assert [r["ts_naive_ns"] for r in got] == table["ts_naive_ns"].cast(pa.string()).to_pylist()
    assert [tuple(r) for r in rejects] == [("r-é", "bad 'x'"), (None, "🙂")]


def _x_table(n: int) -> pa.Table:
    return pa.table({"id": pa.array([f"k-{i}-é" for i in range(n)]),
                     "x": pa.array(np.arange(n, dtype=np.float32))})


def _output(kind: str, env: Path, postgres_url: str | None) -> tuple[str, object]:  # noqa: F811
    if kind == "sqlite":
        db = env / "o.db"

        def read_sqlite() -> list[tuple[str, float]]:
            con = sqlite3.connect(db)
            rows = con.execute("SELECT id, y FROM scores").fetchall()
            con.close()
            return rows

        return f"sqlite:///{db}", read_sqlite
    import sqlalchemy as sa

    assert postgres_url is not None

    def read_pg() -> list[tuple[str, float]]:
        engine = sa.create_engine(postgres_url)
        with engine.connect() as c:
            rows = [tuple(r) for r in c.execute(sa.text("SELECT id, y FROM scores"))]
        engine.dispose()
        return rows

    return postgres_url.replace("postgresql+psycopg://", "postgresql://"), read_pg


@pytest.fixture(params=["sqlite", "postgresql"])
def output_db(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return "sqlite"


@pytest.fixture(autouse=True)
def _drop_pg_tables(request: pytest.FixtureRequest) -> Iterator[None]:
    """Leave the session's PostgreSQL as found (other tests list its tables)."""
    yield
    if "postgres_url" not in request.fixturenames:
        return
    import sqlalchemy as sa

    engine = sa.create_engine(request.getfixturevalue("postgres_url"))
    with engine.begin() as c:
        c.execute(sa.text("SET LOCAL lock_timeout = '20s'"))  # fail, never hang, on a leak
        for name in sa.inspect(c).get_table_names():
            if name.startswith(("types_pg", "scores")):
                c.execute(sa.text(f'DROP TABLE "{name}"'))
        c.execute(sa.text("DELETE FROM batch_tables WHERE table_name LIKE 'types_pg%' "
                          "OR table_name LIKE 'scores%'"))
    engine.dispose()


def test_sigkill_mid_run_then_resume_writes_every_row_once(env: Path,  # noqa: F811
                                                           output_db: str) -> None:
    n = 64 * 40
    pq.write_table(_x_table(n), env / "in.parquet", row_group_size=64 * 10)
    kind = "sqlite" if output_db == "sqlite" else "postgresql"
    target, read = _output(kind, env, None if kind == "sqlite" else output_db)
    cmd = [sys.executable, "-m", "ferry", "batch", "slow", "--input", str(env / "in.parquet"),
           "--output", target, "--table", "scores", "--key", "id", "--chunk-rows", "64",
           "--checkpoint-s", "0", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_chunks(5)
    proc.send_signal(signal.SIGKILL)  # no handler runs: staging and records as they were
    proc.wait(30)
    [run] = runs(env)
    assert run["status"] == "running" and 5 <= run["chunks_done"] < 40
    ferry("batch", "--resume", run["run_id"], "-q")
    [resumed] = runs(env)
    # wherever the kill landed, the record is rebuilt from the chunks the sink committed
    assert (resumed["status"], resumed["rows_in"], resumed["rows_out"],
            resumed["chunks_done"]) == ("succeeded", n, n, 40)
    rows = read()
    assert sorted(r[0] for r in rows) == sorted(f"k-{i}-é" for i in range(n))  # each once
    assert all(r[1] == 2 * int(r[0].split("-")[1]) for r in rows)


def test_connection_cut_mid_run_is_retried_without_duplicates(env: Path,  # noqa: F811
                                                              postgres_url: str) -> None:
    import sqlalchemy as sa

    n = 64 * 40
    pq.write_table(_x_table(n), env / "in.parquet", row_group_size=64 * 10)
    target, read = _output("postgresql", env, postgres_url)
    cmd = [sys.executable, "-m", "ferry", "batch", "slow", "--input", str(env / "in.parquet"),
           "--output", target, "--table", "scores", "--key", "id", "--chunk-rows", "64",
           "--checkpoint-s", "0", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = RunStore(os.environ["FERRY_BATCH_STORE"])
    engine = sa.create_engine(postgres_url)
    cut = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not cut:
        recorded = store.list_runs(1)
        if recorded and recorded[0].chunks_done >= 5:
            with engine.begin() as c:
                cut = len(c.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'")).all())
        time.sleep(0.05)
    engine.dispose()
    out, err = proc.communicate(timeout=120)
    assert cut >= 1
    assert proc.returncode == 0, err
    assert "reconnecting and retrying once" in err
    [run] = runs(env)
    assert (run["status"], run["rows_out"]) == ("succeeded", n)
    assert sorted(r[0] for r in read()) == sorted(f"k-{i}-é" for i in range(n))
    store.close()


def test_lost_connection_replays_the_uncommitted_chunks_once(postgres_url: str) -> None:
    """Chunks inserted into the open transaction are lost with the connection; the retry
    inserts all of them again, and the commit counts each chunk once."""
    import sqlalchemy as sa

    table = _x_table(300)
    location = Location("sql", "postgresql", target=postgres_url, table="scores_replay")
    sink = _sink(location, table, commit_rows=10**9, commit_s=3600.0)
    sink.open(resume=False)
    empty = pa.table({"id": pa.array([], pa.string()),
                      "reject_reason": pa.array([], pa.string())})
    assert sink.write(ChunkResult(0, table.slice(0, 100), empty, 100)) == []
    assert sink.write(ChunkResult(1, table.slice(100, 100), empty, 100)) == []
    engine = sa.create_engine(postgres_url)
    with engine.begin() as c:  # cut the sink's connection while its transaction is open
        cut = c.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
            "current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'")).all()
    assert len(cut) == 1
    assert sink.write(ChunkResult(2, table.slice(200), empty, 100)) == []  # retried inside
    assert sink.flush() == [0, 1, 2]
    sink.publish(PublishInfo("20261121-000000-abcdef12", "m", 1, ["id"], 300))
    sink.close()
    with engine.connect() as c:
        ids = [r[0] for r in c.execute(sa.text("SELECT id FROM scores_replay"))]
    engine.dispose()
    assert ids == table["id"].to_pylist()
