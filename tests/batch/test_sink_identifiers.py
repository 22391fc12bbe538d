"""Names and values the database sinks must take as given, through real ``ferry batch`` runs
into SQLite (ADBC ingest and the ``executemany`` fallback) and PostgreSQL: columns called
``order``, ``select``, ``Group``, ``two words`` and ``say "hi"`` in a table called
``Order Book``, replaced, appended to and read back by key; table names whose staging names
would collide (long, or multi-byte in PostgreSQL); names a database would merge or cut,
refused before scoring; ``uint64`` values above 2^63-1 (exact in PostgreSQL, a clear error in
SQLite)."""

from __future__ import annotations

# ruff: noqa: F811 - pytest fixtures imported from test_local and used as arguments

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import Result

from ferry.batch.job import Location
from ferry.batch.predictions import PredictionStore
from ferry.batch.scoring import ChunkResult
from ferry.batch.sinks import DbSink, PublishInfo
from ferry.batch.sinks.base import ChunkCounts
from ferry.batch.sinks.database import staging_tag
from tests.batch.test_local import env, ferry  # noqa: F401 - fixture and helper

TABLE = "Order Book"
QUOTED = 'say "hi"'
PATHS = ["adbc", "executemany", "postgresql"]


@pytest.fixture(params=PATHS)
def output(request: pytest.FixtureRequest, env: Path) -> Iterator[tuple[str, str]]:
    """(path, URL): the output database for one insert path; PostgreSQL's tables starting
    with ``Order`` are dropped afterwards."""
    if request.param != "postgresql":
        yield request.param, f"sqlite:///{env / 'out.db'}"
        return
    url = str(request.getfixturevalue("postgres_url"))
    yield "postgresql", url.replace("postgresql+psycopg://", "postgresql://")
    _drop_order_tables(url)


def _drop_order_tables(url: str) -> None:
    """Leave the session's PostgreSQL as found: drop this file's tables (their names start
    with ``Order``, and may hold double quotes) and their ``batch_tables`` rows."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(sa.text("SET LOCAL lock_timeout = '20s'"))
            for name in sa.inspect(c).get_table_names():
                if name.startswith("Order"):
                    c.execute(sa.text(f'DROP TABLE "{name.replace(chr(34), 2 * chr(34))}"'))
            if sa.inspect(c).has_table("batch_tables"):
                c.execute(sa.text("DELETE FROM batch_tables WHERE table_name LIKE 'Order%'"))
    finally:
        engine.dispose()


def _store_args(path: str, url: str) -> list[str]:
    """The fallback is taken in a real run when the run store is the output's file (see
    ``sinks/sqlite_adbc.py``); the other paths keep the store of ``env``."""
    return ["--store", url] if path == "executemany" else []


def _runs(path: str, url: str) -> list[dict]:
    """The run records, from the store the run used (``_store_args``)."""
    import json

    result = ferry("batch", "runs", "--format", "json", *_store_args(path, url))
    return json.loads(result.output)  # type: ignore[attr-defined,no-any-return]


def _query(url: str, sql: str) -> list[tuple]:
    if url.startswith("sqlite:///"):
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as c:
            return [tuple(r) for r in c.execute(sa.text(sql))]
    finally:
        engine.dispose()


def _execute(url: str, *statements: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as c:
            for statement in statements:
                c.execute(sa.text(statement))
    finally:
        engine.dispose()


def _input(env: Path, n: int, start: int = 0) -> Path:
    path = env / f"in-{start}.parquet"
    pq.write_table(
        pa.table(
            {
                "order": [f"k-{i}" for i in range(start, start + n)],
                "select": pa.array(range(start, start + n), pa.int64()),
                "Group": [f"g{i % 3}" for i in range(start, start + n)],
                "two words": pa.array([float(i) for i in range(start, start + n)], pa.float32()),
                QUOTED: [f"'{i}'" for i in range(start, start + n)],
            }
        ),
        path,
    )
    return path


def _score(
    url: str, table: str, source: Path, *extra: str, path: str = "adbc", ok: bool = True
) -> Result:
    """``ferry batch slow`` (y = 2 * x, x read from ``two words``) into ``table``."""
    args = ["batch", "slow", "--input", str(source), "--output", url, "--table", table]
    args += ["--map", "x=two words", "--chunk-rows", "64", "-q", *_store_args(path, url)]
    return ferry(*args, *extra, ok=ok)  # type: ignore[return-value]


def test_keyword_mixed_case_and_spaced_names_replace_append_and_read_by_key(
    env: Path, output: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    path, url = output
    with caplog.at_level(logging.DEBUG, logger="ferry.batch"):
        _score(
            url,
            TABLE,
            _input(env, 200),
            "--key",
            "order",
            "--passthrough",
            f"select,Group,{QUOTED}",
            path=path,
        )
        # appended by column name: this run's columns come in another order
        _score(
            url,
            TABLE,
            _input(env, 100, start=200),
            "--key",
            "order",
            "--passthrough",
            f"{QUOTED},Group,select",
            "--mode",
            "append",
            path=path,
        )
    way = {"adbc": "ADBC ingest", "executemany": "executemany", "postgresql": "binary COPY"}
    assert f"rows go in by {way[path]}" in caplog.text
    assert [r["status"] for r in _runs(path, url)] == ["succeeded"] * 2
    columns = (
        _query(url, f"SELECT name FROM pragma_table_info('{TABLE}') ORDER BY cid")
        if path != "postgresql"
        else _query(
            url,
            f"SELECT column_name FROM information_schema.columns WHERE table_name = '{TABLE}' "
            f"ORDER BY ordinal_position",
        )
    )
    assert [c[0] for c in columns] == [
        "order",
        "select",
        "Group",
        QUOTED,
        "y",
        "model_version",
        "run_id",
        "scored_at",
    ]
    rows = _query(
        url, f'SELECT "order", "select", "Group", "say ""hi""", y FROM "{TABLE}" ORDER BY "select"'
    )
    assert rows == [(f"k-{i}", i, f"g{i % 3}", f"'{i}'", 2.0 * i) for i in range(300)]
    # the key index is on "order", and the staging and chunks tables are gone
    if path == "postgresql":
        indexes = _query(url, f"SELECT indexdef FROM pg_indexes WHERE tablename = '{TABLE}'")
        assert [i[0] for i in indexes] == [
            f'CREATE INDEX "{TABLE}__key" ON public."{TABLE}" USING btree ("order")'
        ]
        tables = _query(url, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'Order%'")
    else:
        indexes = _query(url, f"SELECT name FROM pragma_index_list('{TABLE}')")
        assert indexes == [(f"{TABLE}__key",)]
        tables = _query(
            url, "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'Order%'"
        )
    assert sorted(t[0] for t in tables) == [TABLE, f"{TABLE}_rejects"]
    store = PredictionStore(url)
    got = store.lookup(TABLE, "k-250")
    store.engine.dispose()
    assert got["key"] == {"order": "k-250"}
    assert {k: got["prediction"][k] for k in ("select", "Group", QUOTED, "y")} == {
        "select": 250,
        "Group": "g1",
        QUOTED: "'250'",
        "y": 500.0,
    }


def test_append_to_a_table_without_a_column_of_the_run_is_refused(
    env: Path, output: tuple[str, str]
) -> None:
    path, url = output
    _score(url, TABLE, _input(env, 10), "--key", "order", "--passthrough", "select", path=path)
    result = _score(
        url,
        TABLE,
        _input(env, 10, start=10),
        "--key",
        "order",
        "--passthrough",
        f"select,Group,{QUOTED}",
        "--mode",
        "append",
        path=path,
        ok=False,
    )
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert f"table {TABLE} has no column(s) ['Group', '{QUOTED}']" in result.output
    assert _query(url, f'SELECT count(*) FROM "{TABLE}"') == [(10,)]


def _sink(
    url: str, table: str, schema: pa.Schema, adbc: bool, run_id: str = "20261121-000000-abcdef12"
) -> DbSink:
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    url = url.replace("postgresql://", "postgresql+psycopg://")
    rejects = pa.schema([("order", pa.string()), ("reject_reason", pa.string())])
    return DbSink(
        Location("sql", dialect, target=url, table=table),
        f"{table}_rejects",
        run_id,
        "replace",
        schema,
        rejects,
        adbc=adbc,
    )


def test_staging_of_quoted_names_resumes(output: tuple[str, str]) -> None:
    """A run stopped after a durable chunk resumes from its staging: the chunks table and
    staging tables of a table named with quotes and keywords are found again."""
    path, url = output
    table = 'Order "quoted" select'
    schema = pa.schema([("order", pa.string()), ("Group", pa.int64())])
    rows = pa.table({"order": ["a", "b", "c"], "Group": [1, 2, 3]}, schema=schema)
    first = _sink(url, table, schema, adbc=path == "adbc")
    assert first.open(resume=False) == {}
    first.write(ChunkResult(0, rows.slice(0, 2), None, 2))
    assert first.flush() == [0]
    first.close()
    again = _sink(url, table, schema, adbc=path == "adbc")
    assert again.open(resume=True) == {0: ChunkCounts(2, 2, 0)}
    again.write(ChunkResult(1, rows.slice(2), None, 1))
    again.publish(PublishInfo("20261121-000000-abcdef12", "m", 1, ["order"], 3))
    again.close()
    got = _query(url, 'SELECT "order", "Group" FROM "Order ""quoted"" select"')
    assert sorted(got) == [("a", 1), ("b", 2), ("c", 3)]


@pytest.mark.parametrize(
    "table", ["Order" + "x" * 40, "Order" + "表" * 19], ids=["45-characters", "multi-byte"]
)
def test_long_table_names_get_distinct_staging_tables(
    env: Path, output: tuple[str, str], table: str
) -> None:
    """A table name of 40 characters or more once gave the rejects' staging table the name
    of the rows' one; in PostgreSQL, which keeps 63 bytes of a name, a multi-byte name gave
    the staging and chunks tables one name."""
    path, url = output
    rejects = [] if table.isascii() else ["--rejects", "Order_rejects"]  # <= 63 bytes
    _score(url, table, _input(env, 100), "--key", "order", *rejects, path=path)
    assert [r["status"] for r in _runs(path, url)] == ["succeeded"]
    assert _query(url, f'SELECT count(*) FROM "{table}"') == [(100,)]


def _refused(env: Path, url: str, table: pa.Table, *args: str) -> str:
    pq.write_table(table, env / "bad.parquet")
    result = _score(url, "Order_refused", env / "bad.parquet", *args, ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert _runs("adbc", url) == []  # refused before the run started
    return result.output


def test_columns_sqlite_would_merge_are_refused_before_scoring(env: Path) -> None:
    table = pa.table({"Group": ["a"], "group": ["b"], "two words": pa.array([1.0], pa.float32())})
    out = _refused(env, f"sqlite:///{env / 'o.db'}", table, "--passthrough", "Group,group")
    assert "columns 'Group' and 'group'" in out and "ignore upper and lower case" in out


def test_names_postgresql_would_cut_are_refused_before_scoring(
    env: Path, postgres_url: str
) -> None:
    long = "c" * 60 + "ü" * 3
    table = pa.table({long: ["a"], "two words": pa.array([1.0], pa.float32())})
    out = _refused(env, postgres_url, table, "--passthrough", long)
    assert f"column '{long}' of table Order_refused is 66 bytes long" in out
    assert "PostgreSQL keeps the first 63 bytes" in out


U64 = [0, 1, 9999, 10000, 2**63 - 1, 2**63, 12345678901234567890, 2**64 - 1]


def _u64_input(env: Path, values: list[int]) -> Path:
    path = env / "u64.parquet"
    pq.write_table(
        pa.table(
            {
                "id": pa.array(values, pa.uint64()),
                "hash": pa.array(values[::-1], pa.uint64()),
                "two words": pa.array([1.0] * len(values), pa.float32()),
            }
        ),
        path,
    )
    return path


def test_uint64_up_to_2_64_is_exact_in_postgresql(env: Path, postgres_url: str) -> None:
    url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        _score(url, "Order_u64", _u64_input(env, U64), "--key", "id", "--passthrough", "hash")
        got = _query(url, 'SELECT id, hash FROM "Order_u64" ORDER BY id')
        assert [(int(a), int(b)) for a, b in got] == list(zip(U64, U64[::-1], strict=True))
        kinds = _query(
            url,
            "SELECT data_type, numeric_precision FROM information_schema.columns "
            "WHERE table_name = 'Order_u64' AND column_name = 'id'",
        )
        assert kinds == [("numeric", 20)]
        store = PredictionStore(url)
        top = store.lookup("Order_u64", str(2**64 - 1))
        store.engine.dispose()
        assert top["key"] == {"id": 2**64 - 1} and top["prediction"]["hash"] == 0
    finally:
        _drop_order_tables(postgres_url)


@pytest.mark.parametrize("path", ["adbc", "executemany"])
def test_uint64_above_2_63_fails_a_sqlite_run_naming_the_column(env: Path, path: str) -> None:
    url = f"sqlite:///{env / 'out.db'}"

    def score(values: list[int], ok: bool = True) -> Result:
        return _score(
            url,
            "Order_u64",
            _u64_input(env, values),
            "--key",
            "id",
            "--passthrough",
            "hash",
            "--chunk-rows",
            "4",
            path=path,
            ok=ok,
        )

    score([0, 2**63 - 1, 5, 6])  # up to 2^63-1: stored as INTEGER, as before
    assert _query(url, 'SELECT id, typeof(id) FROM "Order_u64" ORDER BY id') == [
        (0, "integer"),
        (5, "integer"),
        (6, "integer"),
        (2**63 - 1, "integer"),
    ]
    result = score(U64, ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "column 'hash' (uint64) holds 18446744073709551615 in chunk 0" in result.output
    assert "SQLite has no unsigned 64-bit integer" in result.output
    assert [r["status"] for r in _runs(path, url)] == ["failed", "succeeded"]
    # the table of the first run is untouched: nothing of the failed run was published
    assert _query(url, 'SELECT count(*) FROM "Order_u64"') == [(4,)]


def test_two_runs_of_one_table_started_in_the_same_minute_keep_their_own_staging(
    output: tuple[str, str],
) -> None:
    """Their staging tables once had one name (the run id to the minute): the second run's
    start dropped the first's staging, and the first published the second's rows."""
    path, url = output
    schema = pa.schema([("order", pa.string())])

    def rows(*ids: str) -> pa.Table:
        return pa.table({"order": list(ids)}, schema=schema)

    first, second = (
        _sink(url, "Order_same", schema, adbc=path == "adbc", run_id=run_id)
        for run_id in ("20261121-163001-aaaaaaaa", "20261121-163059-bbbbbbbb")
    )
    assert (first.stage, second.stage) == (
        "Order_same__stage_261121aaaaaa",
        "Order_same__stage_261121bbbbbb",
    )
    assert staging_tag("my own run id") == staging_tag("my own run id") != staging_tag("x")
    first.open(resume=False)
    first.write(ChunkResult(0, rows("a1"), None, 1))
    assert first.flush() == [0]
    second.open(resume=False)
    second.write(ChunkResult(0, rows("b1", "b2"), None, 2))
    assert second.flush() == [0]
    first.write(ChunkResult(1, rows("a2"), None, 1))
    first.publish(PublishInfo("20261121-163001-aaaaaaaa", "m", 1, [], 2))
    first.close()
    assert sorted(_query(url, 'SELECT "order" FROM "Order_same"')) == [("a1",), ("a2",)]
    second.discard()


def test_a_run_staged_under_the_old_tag_resumes(output: tuple[str, str]) -> None:
    """Staging named by a Ferry before ``staging_tag`` (the run id's first 12 digits) is
    found by a resume of that run."""
    path, url = output
    run_id = "20261121-163001-aaaaaaaa"
    legacy = run_id.replace("-", "")[:12]
    schema = pa.schema([("order", pa.string()), ("Group", pa.int64())])
    rows = pa.table({"order": ["a", "b"], "Group": [1, 2]}, schema=schema)
    old = _sink(url, "Order_legacy", schema, adbc=path == "adbc", run_id=run_id)
    old.open(resume=False)
    old.write(ChunkResult(0, rows.slice(0, 1), None, 1))
    assert old.flush() == [0]
    old.close()
    renames = [
        (old.stage, f"Order_legacy__stage_{legacy}"),
        (old.chunks, f"Order_legacy__chunks_{legacy}"),
        (old.rejects_stage, f"Order_legacy_rejects__stage_{legacy}"),
    ]
    _execute(url, *(f'ALTER TABLE "{a}" RENAME TO "{b}"' for a, b in renames))
    again = _sink(url, "Order_legacy", schema, adbc=path == "adbc", run_id=run_id)
    assert again.open(resume=True) == {0: ChunkCounts(1, 1, 0)}
    again.write(ChunkResult(1, rows.slice(1), None, 1))
    again.publish(PublishInfo(run_id, "m", 1, ["order"], 2))
    again.close()
    assert sorted(_query(url, 'SELECT "order", "Group" FROM "Order_legacy"')) == [
        ("a", 1),
        ("b", 2),
    ]
