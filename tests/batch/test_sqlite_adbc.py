"""SQLite's ADBC ingest path of the database sink, on real database files: it stores the
values, storage classes (``typeof``) and column types that the ``executemany`` fallback
stores; the staged rows and their chunks' counts commit together or not at all (a reader
during the transaction, a chunk insert that fails after the ingest, a SIGKILL after the
ingest); a write that meets a locked database reconnects and inserts the pending chunks
once; without the driver, or for a URL or type it does not take, the sink falls back."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ferry.batch.job import Location
from ferry.batch.scoring import ChunkResult
from ferry.batch.sinks import DbSink, PublishInfo, SinkError
from ferry.batch.sinks.base import ChunkCounts
from ferry.batch.sinks.database import staging_tag
from tests.batch.test_db_sink import KEYS, _table
from tests.batch.test_local import env, ferry  # noqa: F401 - fixture and helper

RUN = "20261121-000000-abcdef12"
TAG = staging_tag(RUN)
REJECTS = pa.schema([("id", pa.string()), ("reject_reason", pa.string()),
                     ("x", pa.float64())])


def _wide() -> pa.Table:
    """Every column type the sink takes, NULLs, unicode, and the ``tabular`` output's
    columns (float32 probabilities, int64 label, one-value ``model_version``, ``run_id``
    and UTC ``scored_at``)."""
    n = len(KEYS)
    scored = datetime(2026, 11, 21, 2, 0, 0, 123456, tzinfo=UTC)
    return _table().append_column("bin", pa.array(
        [b"\x00\xff", None, b"", b"abc", b"\x01", b"x", b"y", b"z"])).append_column(
        "fixed", pa.array([b"ab", b"cd", None, b"ef", b"gh", b"ij", b"kl", b"mn"],
                          pa.binary(2))).append_column(
        "day64", pa.array([date(999, 1, 2), date(2024, 2, 29), None, date(1, 1, 1),
                           date(9999, 12, 31), date(1970, 1, 1), date(2000, 1, 1),
                           date(2026, 11, 21)], pa.date64())).append_column(
        "half", pa.array([1.5, None, -2.25, 0.0, 65504.0, 3.0, 1.0, 2.0], pa.float16()),
    ).append_column("all_null", pa.nulls(n)).append_column(
        "u64", pa.array([0, 2**63 - 1, None, 3, 4, 5, 6, 7], pa.uint64())).append_column(
        "int_cat", pa.array([1, 2, 1, None, 2, 1, 1, 2]).dictionary_encode()).append_column(
        "label", pa.array([1, 0, 1, 1, 0, 0, 1, 0], pa.int64())).append_column(
        "probabilities_0", pa.array([0.25, 0.5, 0.125, 1 / 3, 0.0, 1.0, 0.75, 0.1],
                                    pa.float32())).append_column(
        "scored_at", pa.array([scored] * n, pa.timestamp("us", tz="UTC")))


def _location(path: Path, table: str = "types") -> Location:
    return Location("sql", "sqlite", target=f"sqlite:///{path}", table=table)


def _sink(path: Path, schema: pa.Schema, adbc: bool = True, **kw: object) -> DbSink:
    return DbSink(_location(path), "types_rejects", RUN, "replace", schema, REJECTS,
                  adbc=adbc, **kw)  # type: ignore[arg-type]


def _rejects(n: int) -> pa.Table:
    return pa.table({"id": ["r-é", None, "r'3"][:n], "reject_reason": ["bad 'x'", "🙂", "z"][:n],
                     "x": [1.5, None, float("nan")][:n]}, schema=REJECTS)


def _write_and_publish(sink: DbSink, table: pa.Table) -> None:
    assert sink.open(resume=False) == {}
    sink.write(ChunkResult(0, table.slice(0, 5), _rejects(3), 8))
    sink.write(ChunkResult(1, table.slice(5), _rejects(0), 3))
    sink.publish(PublishInfo(RUN, "m", 1, ["id"], table.num_rows))
    sink.close()


def _dump(db: Path, table: str) -> tuple[list[tuple], list[tuple]]:
    """The table's declared columns, and every row's values each with its ``typeof``."""
    con = sqlite3.connect(db)
    try:
        declared = [(r[1], r[2]) for r in con.execute(f'PRAGMA table_info("{table}")')]
        values = ", ".join(f'"{c}", typeof("{c}")' for c, _ in declared)
        rows = con.execute(f'SELECT {values} FROM "{table}" ORDER BY rowid').fetchall()
    finally:
        con.close()
    return declared, rows


def test_adbc_stores_what_executemany_stores(tmp_path: Path) -> None:
    table = _wide()
    via_adbc, via_rows = _sink(tmp_path / "a.db", table.schema), _sink(
        tmp_path / "b.db", table.schema, adbc=False)
    assert via_adbc.adbc_path == str(tmp_path / "a.db") and via_rows.adbc_path is None
    _write_and_publish(via_adbc, table)
    _write_and_publish(via_rows, table)
    for name in ("types", "types_rejects"):
        assert _dump(tmp_path / "a.db", name) == _dump(tmp_path / "b.db", name)
    declared, rows = _dump(tmp_path / "a.db", "types")
    kinds = dict(declared)
    assert (kinds["id"], kinds["i64"], kinds["label"], kinds["f32"], kinds["probabilities_0"],
            kinds["ts"], kinds["scored_at"], kinds["flag"]) == (
        "TEXT", "INTEGER", "INTEGER", "REAL", "REAL", "TEXT", "TEXT", "INTEGER")
    got = {c: [(r[2 * i], r[2 * i + 1]) for r in rows] for i, (c, _) in enumerate(declared)}
    assert got["id"] == [(k, "text") for k in KEYS]
    assert got["scored_at"] == [("2026-11-21 02:00:00.123456Z", "text")] * len(KEYS)
    assert got["ts"][0] == ("2026-11-21 02:00:00.123456Z", "text") and got["ts"][1] == (
        None, "null")
    assert got["label"][0] == (1, "integer") and got["flag"][:3] == [
        (1, "integer"), (0, "integer"), (None, "null")]
    assert got["probabilities_0"][3] == (float(pa.scalar(1 / 3, pa.float32()).as_py()), "real")
    assert got["f32"][4] == (None, "null")  # NaN is stored as NULL by SQLite, either way
    assert got["day64"][0] == ("0999-01-02", "text") and got["bin"][0] == (b"\x00\xff", "blob")
    assert got["run_id"] == [("run 'one'", "text")] * len(KEYS)  # a literal in the fallback


def _query_elsewhere(db: Path, sql: str) -> list[list[object]]:
    """``sql``'s rows, read by another process (in this one, Python's copy of SQLite would
    not see the locks of the driver's copy: see ``sinks/sqlite_adbc.py``)."""
    code = ("import json, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "print(json.dumps(c.execute(sys.argv[2]).fetchall()))")
    proc = subprocess.run([sys.executable, "-c", code, str(db), sql], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_a_reader_sees_the_rows_and_their_chunks_only_after_the_commit(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    table = _wide()
    sink = _sink(db, table.schema, commit_rows=10**9, commit_s=3600.0)
    sink.open(resume=False)
    assert sink.adbc_path is not None
    assert sink.write(ChunkResult(0, table, _rejects(2), 10)) == []
    count = (f'SELECT (SELECT count(*) FROM "types__stage_{TAG}"), '
             f'(SELECT count(*) FROM "types_rejects__stage_{TAG}"), '
             f'(SELECT count(*) FROM "types__chunks_{TAG}")')
    assert _query_elsewhere(db, count) == [[0, 0, 0]]  # ingested, in the open transaction
    assert sink.flush() == [0]
    assert _query_elsewhere(db, count) == [[len(KEYS), 2, 1]]
    sink.close()


def test_a_chunk_insert_failing_after_the_ingest_rolls_the_rows_back(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    table = _wide()
    sink = _sink(db, table.schema, commit_rows=10**9, commit_s=3600.0)
    sink.open(resume=False)
    assert sink.adbc_path is not None
    sink.write(ChunkResult(0, table.slice(0, 3), _rejects(1), 4))
    assert sink.flush() == [0]
    # chunk 0 again: its rows are ingested, then the chunks table's primary key refuses
    # the chunk's row, in the same transaction (and again after the reconnect)
    sink.write(ChunkResult(0, table.slice(3), _rejects(2), 7))
    with pytest.raises(SinkError, match="UNIQUE constraint failed"):
        sink.flush()
    sink.close()
    again = _sink(db, table.schema)
    assert again.open(resume=True) == {0: ChunkCounts(4, 3, 1)}
    again.close()
    con = sqlite3.connect(db)
    assert [r[0] for r in con.execute(f'SELECT id FROM "types__stage_{TAG}"')] == KEYS[:3]
    assert con.execute(f'SELECT count(*) FROM "types_rejects__stage_{TAG}"').fetchone() == (1,)
    con.close()


_KILLED = """
import os, signal, sys
import pyarrow as pa
from ferry.batch.job import Location
from ferry.batch.scoring import ChunkResult
from ferry.batch.sinks import DbSink

schema = pa.schema([("id", pa.string()), ("y", pa.float32())])
rejects = pa.schema([("id", pa.string()), ("reject_reason", pa.string())])
sink = DbSink(Location("sql", "sqlite", target=sys.argv[1], table="scores"), "scores_rejects",
              "{run}", "replace", schema, rejects, commit_rows=10**9, commit_s=3600.0)
assert sink.adbc_path is not None
sink.open(resume=False)

def chunk(i):
    out = pa.table({{"id": [f"{{i}}-{{j}}" for j in range(100)], "y": [float(i)] * 100}},
                   schema=schema)
    return ChunkResult(i, out, pa.table({{"id": ["r"], "reject_reason": ["bad"]}},
                                        schema=rejects), 101)

sink.write(chunk(0))
assert sink.flush() == [0]
sink.write(chunk(1))
sink.write(chunk(2))  # both ingested into the open transaction
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_after_the_ingest_leaves_neither_rows_nor_counts(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    proc = subprocess.run([sys.executable, "-c", _KILLED.format(run=RUN), f"sqlite:///{db}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    schema = pa.schema([("id", pa.string()), ("y", pa.float32())])
    sink = DbSink(_location(db, "scores"), "scores_rejects", RUN, "replace", schema,
                  pa.schema([("id", pa.string()), ("reject_reason", pa.string())]))
    assert sink.open(resume=True) == {0: ChunkCounts(101, 100, 1)}
    sink.close()
    con = sqlite3.connect(db)
    assert con.execute(f'SELECT count(*), min(y), max(y) FROM "scores__stage_{TAG}"'
                       ).fetchone() == (100, 0.0, 0.0)
    assert con.execute(f'SELECT count(*) FROM "scores_rejects__stage_{TAG}"').fetchone() == (1,)
    con.close()


def test_a_locked_database_is_retried_on_a_new_connection_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Another connection holds the database past the busy timeout (5 s): the ingest fails,
    the sink reconnects, inserts the pending chunks again and commits each row once."""
    db = tmp_path / "o.db"
    table = _wide()
    sink = _sink(db, table.schema, commit_rows=10**9, commit_s=3600.0)
    sink.open(resume=False)
    assert sink.adbc_path is not None
    sink.write(ChunkResult(0, table.slice(0, 4), _rejects(0), 4))
    assert sink.flush() == [0]
    code = ("import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(6.5); "
            "c.execute('ROLLBACK')")
    holder = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with caplog.at_level("WARNING", logger="ferry.batch"):
            assert sink.write(ChunkResult(1, table.slice(4, 2), _rejects(1), 3)) == []
        assert "database is locked" in caplog.text
        assert "reconnecting and retrying once" in caplog.text
        assert sink.write(ChunkResult(2, table.slice(6), _rejects(0), 2)) == []
        assert sink.flush() == [1, 2]
    finally:
        holder.kill()
        holder.communicate()
    sink.publish(PublishInfo(RUN, "m", 1, ["id"], table.num_rows))
    sink.close()
    con = sqlite3.connect(db)
    assert [r[0] for r in con.execute("SELECT id FROM types ORDER BY rowid")] == KEYS
    assert con.execute("SELECT count(*) FROM types_rejects").fetchone() == (1,)
    con.close()


def test_the_sink_falls_back_to_executemany_where_adbc_does_not_apply(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.string()), ("y", pa.float32())])
    assert _sink(tmp_path / "a.db", schema).adbc_path is not None
    con = sqlite3.connect(tmp_path / "a.db")  # this process has the file open: sqlite3 only
    con.execute("CREATE TABLE other (x)")
    assert _sink(tmp_path / "a.db", schema).adbc_path is None
    con.close()
    assert _sink(tmp_path / "a.db", schema).adbc_path is not None
    with_decimal = pa.schema([("id", pa.string()), ("price", pa.decimal128(10, 2))])
    assert _sink(tmp_path / "a.db", with_decimal).adbc_path is None
    for target in ("sqlite://", "sqlite:///:memory:", f"sqlite:///{tmp_path / 'a.db'}?timeout=9",
                   f"sqlite:///file:{tmp_path / 'a.db'}?mode=rwc&uri=true"):
        sink = DbSink(Location("sql", "sqlite", target=target, table="t"), "t_rejects", RUN,
                      "replace", schema, REJECTS)
        assert sink.adbc_path is None, target
        sink.close()


_NO_DRIVER = """
import sys
sys.modules["adbc_driver_sqlite"] = None  # as if the package were not installed
import pyarrow as pa
from ferry.batch.job import Location
from ferry.batch.scoring import ChunkResult
from ferry.batch.sinks import DbSink, PublishInfo

schema = pa.schema([("id", pa.string()), ("y", pa.float32())])
rejects = pa.schema([("id", pa.string()), ("reject_reason", pa.string())])
sink = DbSink(Location("sql", "sqlite", target=sys.argv[1], table="scores"), "scores_rejects",
              "20261121-000000-abcdef12", "replace", schema, rejects)
assert sink.adbc_path is None
sink.open(resume=False)
sink.write(ChunkResult(0, pa.table({"id": ["a", "b"], "y": [1.0, 2.0]}, schema=schema),
                       rejects.empty_table(), 2))
sink.publish(PublishInfo("20261121-000000-abcdef12", "m", 1, ["id"], 2))
sink.close()
"""


def test_without_the_driver_the_sink_writes_with_executemany(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_NO_DRIVER),
                           f"sqlite:///{db}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    con = sqlite3.connect(db)
    assert con.execute("SELECT id, y FROM scores").fetchall() == [("a", 1.0), ("b", 2.0)]
    con.close()


def test_a_run_whose_store_is_the_output_file_keeps_executemany(
        env: Path, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    """The run store (``sqlite3``) holds the output's file open in the run's process: the
    sink must not open it with the driver's second copy of SQLite."""
    n = 64 * 4
    pq.write_table(pa.table({"id": [f"k{i}" for i in range(n)],
                             "x": pa.array(range(n), pa.float32())}), env / "in.parquet")
    db = env / "both.db"
    with caplog.at_level("INFO", logger="ferry.batch"):
        ferry("batch", "slow", "--input", env / "in.parquet", "--output", f"sqlite:///{db}",
              "--table", "scores", "--key", "id", "--store", f"sqlite:///{db}", "-q")
    assert "is open in this process already" in caplog.text
    assert _query_elsewhere(db, "SELECT count(*), sum(y) FROM scores") == [
        [n, float(sum(2 * i for i in range(n)))]]
    assert _query_elsewhere(db, "SELECT status FROM batch_runs") == [["succeeded"]]
