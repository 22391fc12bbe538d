"""Every sink keeps its durable chunks' counts with them: ``open(resume=True)`` after a crash
returns each chunk with its rows in/out/rejected, a resume rebuilds the run record from
them, and staging made by an older Ferry (no counts) still resumes, its chunks' counts
unknown (None). The SIGKILL runs through the CLI are in ``test_faults``."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from ferry.batch.job import Location
from ferry.batch.records import RunStore
from ferry.batch.scoring import ChunkResult
from ferry.batch.sinks import PublishInfo, Sink, open_sink
from ferry.batch.sinks.base import ChunkCounts
from ferry.batch.sinks.database import staging_tag
from ferry.batch.sinks.remote import RemoteSink
from tests.batch.conftest import drop_postgres_tables

RUN = "20261121-000000-abcdef12"
TAG = staging_tag(RUN)
SCHEMA = pa.schema([("id", pa.int64()), ("y", pa.float32())])
REJECTS = pa.schema([("id", pa.int64()), ("reject_reason", pa.string())])


def _result(chunk: int, rows_out: int, rows_rejected: int) -> ChunkResult:
    ids = range(chunk * 100, chunk * 100 + rows_out + rows_rejected)
    out = pa.table({"id": list(ids)[:rows_out], "y": [1.0] * rows_out}, schema=SCHEMA)
    rejects = pa.table({"id": list(ids)[rows_out:], "reject_reason": ["bad"] * rows_rejected},
                       schema=REJECTS)
    return ChunkResult(chunk, out, rejects, rows_out + rows_rejected)


@pytest.fixture(params=["parquet", "csv", "folder", "sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Location]:
    kind = request.param
    if kind in ("parquet", "csv"):
        yield Location("file", kind, target=str(tmp_path / f"out.{kind}"))
    elif kind == "folder":
        yield Location("file", "parquet", target=str(tmp_path / "out"), folder=True)
    elif kind == "sqlite":
        yield Location("sql", "sqlite", target=f"sqlite:///{tmp_path / 'o.db'}",
                       table="scores")
    else:
        url = str(request.getfixturevalue("postgres_url"))
        yield Location("sql", "postgresql", target=url, table="scores_counts")
        drop_postgres_tables(url, "scores_counts")


def _sink(location: Location) -> Sink:
    return open_sink(location, None, RUN, "replace", SCHEMA, REJECTS, checkpoint_s=0.0)


def _write(sink: Sink, results: list[ChunkResult]) -> list[int]:
    durable = [c for r in results for c in sink.write(r)]
    return durable + sink.flush()


def _sql(location: Location, *statements: str) -> list[tuple]:
    import sqlalchemy as sa

    engine = sa.create_engine(location.target)
    try:
        with engine.begin() as c:
            rows: list[tuple] = []
            for statement in statements:
                result = c.execute(sa.text(statement))
                rows = [tuple(r) for r in result] if result.returns_rows else []
            return rows
    finally:
        engine.dispose()


def _published(location: Location) -> tuple[int, int]:
    """Rows in the published output and in its rejects."""
    if location.is_sql:
        [(out,)] = _sql(location, f"SELECT count(*) FROM {location.table}")
        [(rejected,)] = _sql(location, f"SELECT count(*) FROM {location.table}_rejects")
        return out, rejected
    target = Path(location.target)
    if location.folder:
        rejects = target.with_name(f"{target.name}.rejects")
        return (ds.dataset(target, format="parquet").count_rows(),
                ds.dataset(rejects, format="parquet").count_rows() if rejects.exists() else 0)
    read = pq.read_table if location.format == "parquet" else pacsv.read_csv
    rejects = target.with_name(f"{target.stem}.rejects{target.suffix}")
    return read(target).num_rows, read(rejects).num_rows if rejects.exists() else 0


def _as_older_ferry(location: Location) -> None:
    """Strip the counts from the staging, as a Ferry before them staged it."""
    if location.is_sql:
        chunks = f"{location.table}__chunks_{TAG}"
        _sql(location, "CREATE TABLE old_chunks (chunk INTEGER PRIMARY KEY)",
             f'INSERT INTO old_chunks SELECT chunk FROM "{chunks}"', f'DROP TABLE "{chunks}"',
             f'ALTER TABLE old_chunks RENAME TO "{chunks}"')
        return
    target = Path(location.target)
    staging = target.parent / f".{target.name}.ferry-{RUN}"
    if location.folder:
        shutil.rmtree(staging.with_name(staging.name + ".counts"))
        return
    for sidecar in staging.glob("part-*.json"):
        sidecar.write_text(json.dumps({"chunks": json.loads(sidecar.read_text())["chunks"]}))


def test_a_crashed_runs_durable_chunks_come_back_with_their_counts(location: Location) -> None:
    sink = _sink(location)
    assert sink.open(resume=False) == {}
    assert sorted(_write(sink, [_result(0, 5, 2), _result(1, 7, 0), _result(2, 0, 3)])) == [
        0, 1, 2]
    sink.close()  # the run stops: staging kept, nothing published
    again = _sink(location)
    assert again.open(resume=True) == {0: ChunkCounts(7, 5, 2), 1: ChunkCounts(7, 7, 0),
                                       2: ChunkCounts(3, 0, 3)}
    assert _write(again, [_result(3, 1, 1)]) == [3]
    again.close()
    third = _sink(location)
    assert third.open(resume=True)[3] == ChunkCounts(2, 1, 1)
    third.publish(PublishInfo(RUN, "m", 1, ["id"], 13))
    third.close()
    assert _published(location) == (13, 6)
    fresh = _sink(location)  # a new run of the same id starts from nothing
    assert fresh.open(resume=False) == {}
    fresh.discard()


def test_staging_of_an_older_ferry_resumes_with_unknown_counts(location: Location) -> None:
    sink = _sink(location)
    sink.open(resume=False)
    _write(sink, [_result(0, 5, 2), _result(1, 7, 0)])
    sink.close()
    _as_older_ferry(location)
    again = _sink(location)
    assert again.open(resume=True) == {0: None, 1: None}
    _write(again, [_result(2, 4, 1)])  # chunks written after the resume have counts
    again.close()
    third = _sink(location)
    assert third.open(resume=True) == {0: None, 1: None, 2: ChunkCounts(5, 4, 1)}
    third.publish(PublishInfo(RUN, "m", 1, ["id"], 16))
    third.close()
    assert _published(location) == (16, 3)


def test_folder_staging_drops_rejects_and_counts_of_chunks_never_made_durable(
        tmp_path: Path) -> None:
    location = Location("file", "parquet", target=str(tmp_path / "out"), folder=True)
    sink = _sink(location)
    sink.open(resume=False)
    _write(sink, [_result(0, 5, 2), _result(1, 3, 3)])
    sink.close()
    staging = tmp_path / f".out.ferry-{RUN}"
    (staging / "part-000001.parquet").unlink()  # chunk 1 was cut short before its part
    again = _sink(location)
    assert again.open(resume=True) == {0: ChunkCounts(7, 5, 2)}
    assert sorted(p.name for p in Path(f"{staging}.rejects").iterdir()) == ["part-000000.parquet"]
    assert sorted(p.name for p in Path(f"{staging}.counts").iterdir()) == ["part-000000.json"]
    again.publish(PublishInfo(RUN, "m", 1, ["id"], 5))
    assert not Path(f"{staging}.counts").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_ferry.json",
                                                                    "part-000000.parquet"]


def test_sqlite_chunks_table_commits_the_counts_with_the_rows(tmp_path: Path) -> None:
    location = Location("sql", "sqlite", target=f"sqlite:///{tmp_path / 'o.db'}", table="scores")
    sink = _sink(location)
    sink.open(resume=False)
    _write(sink, [_result(0, 5, 2), _result(1, 0, 3)])
    sink.close()
    con = sqlite3.connect(tmp_path / "o.db")
    rows = con.execute(f'SELECT * FROM "scores__chunks_{TAG}" ORDER BY chunk').fetchall()
    con.close()
    assert rows == [(0, 7, 5, 2), (1, 3, 0, 3)]


def test_remote_state_of_an_older_ferry_resumes_with_unknown_counts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose output was complete locally but not uploaded: ``published.json``."""
    monkeypatch.setenv("FERRY_CACHE_DIR", str(tmp_path / "cache"))
    target = tmp_path / "out.parquet"
    pq.write_table(SCHEMA.empty_table(), target)
    mirror = tmp_path / "cache" / "batch" / RUN
    mirror.mkdir(parents=True)
    sink = RemoteSink(Location("file", "parquet", target=str(target)), None, RUN,
                      lambda out, rejects: Sink())
    (mirror / "published.json").write_text(json.dumps({"chunks": [0, 1]}))
    assert sink.open(resume=True) == {0: None, 1: None}
    (mirror / "published.json").write_text(json.dumps(
        {"chunks": [0, 1], "counts": [None, [3, 2, 1]]}))
    assert sink.open(resume=True) == {0: None, 1: ChunkCounts(3, 2, 1)}


def test_resume_rebuilds_progress_from_what_the_sink_holds(tmp_path: Path) -> None:
    store = RunStore(f"sqlite:///{tmp_path / 'runs.db'}")
    store.create_run("r", "m", 1, "in", "out", {}, None)
    store.chunks_done("r", [(0, 10, 9, 1), (1, 10, 10, 0), (5, 10, 10, 0)])
    # the staging holds: 0 without counts (an older Ferry's) but recorded; 1 with counts
    # that differ from the record's (the staging wins); 2, committed but never recorded
    # (the kill window); 3 without counts and never recorded. Chunk 5 it does not hold.
    uncounted = store.resume_chunks("r", {0: None, 1: (10, 7, 3), 2: (10, 8, 2), 3: None})
    assert uncounted == [3]
    assert store.done_chunks("r") == {0, 1, 2}
    run = store.get_run("r")
    assert run is not None
    assert (run.chunks_done, run.rows_in, run.rows_out, run.rows_rejected) == (3, 30, 24, 6)
    assert store.resume_chunks("r", {}) == []  # nothing staged: nothing done
    run = store.get_run("r")
    assert run is not None and (run.chunks_done, run.rows_in) == (0, 0)
    store.close()
