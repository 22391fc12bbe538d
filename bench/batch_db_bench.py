"""Database sinks: ``ferry batch`` into SQLite and PostgreSQL against each database's bulk
load of the same rows alone.

Usage: python bench/batch_db_bench.py [WORK] [--rows 2000000] [--runs 3] [--postgres URL]
                                     [--databases sqlite,postgresql] [--no-runs]
                                     [--baseline DIR] [--quiet 0.1]
       (run it under ``flock /tmp/ferry-bench.lock`` on a shared machine)

Builds the ``tabular`` model and input with ``bench/batch_bench.py``'s builders, scores the
input once to Parquet to get the output rows (``id`` string, ``label`` int64,
``probabilities_0/1`` float32, ``model_version``, ``run_id``, ``scored_at``), holds them in
memory as Arrow batches of 65,536 rows, then, for each of ``--runs`` rounds (the loads of (a) in a
new order each round), times:

(a) the bulk load alone: the in-memory rows into a new table, one transaction, no scoring,
    by each candidate path (the fastest one is the reference):

    - SQLite ``executemany`` of rows converted by this script (NumPy ``tolist``), with the
      default pragmas and with ``journal_mode=OFF, synchronous=OFF`` and a 256 MB cache
      (not safe for a table in a database that holds other tables; shown as the ceiling),
      and with the columns that hold one value (``model_version``, ``run_id``,
      ``scored_at``) written into the statement as literals instead of bound per row;
    - SQLite ``executemany`` of rows converted by Ferry's ``sinks.pyrows`` (default pragmas);
    - PostgreSQL ``COPY ... (FORMAT csv)`` of pyarrow's CSV, and ``COPY ... (FORMAT binary)``
      of Ferry's ``sinks.pgcopy`` encoding, into a regular table and an UNLOGGED one;
    - ADBC's ``adbc_ingest`` (SQLite, PostgreSQL) when ``adbc-driver-sqlite`` /
      ``adbc-driver-postgresql`` are importable: all rows in one ingest, ``scored_at``
      (one value) formatted once as the sink's text and repeated (Ferry's SQLite path uses
      the SQLite driver; PostgreSQL's is not used);

    each also timed with ``CREATE INDEX`` on ``id`` after the load (Ferry's publish
    indexes the key), shown in its own column; and Ferry's own ``DbSink`` fed the same
    chunks without scoring (staging, chunk bookkeeping, commit cadence, publish), which
    is what the sink itself costs against the best of the others: for SQLite both its
    paths, ADBC ingest (the default) and the ``executemany`` fallback;
(b) ``ferry batch tabular --key id --output sqlite:///... / postgresql://... --table t`` with
    ``--workers 1`` and ``2``, and the same to Parquet as the scoring-bound reference. Rates
    use the pipeline seconds ferry reports (model load, staging, scoring, writing, swap,
    index, run record); every output's row count is checked;
(c) the anchors' "limit -> SQLite" (``shared/bench/batch/limit.py --sink sqlite``: scoring
    and ``executemany`` by hand in one process), the same job done the plain fast way.

PostgreSQL: a throwaway cluster started like the tests' (``tests/_services.py``: initdb,
trust auth, ``fsync=off``), unless ``--postgres`` names one. Medians are printed as a table.

``--databases`` limits (a) and (b) to some databases; ``--no-runs`` skips (b) and (c), for a
quick look at the loads. ``--baseline DIR`` also times an older Ferry's ``DbSink`` in the same
rounds: DIR holds its ``src/`` (``git archive <commit> src | tar -x -C DIR``); then both
sinks, this tree's and the baseline's, run in a child process each (``--sink-once``, the
same rows read from the work folder; each times its second load, after one to warm up), and
the table gets a line for each, then the two sinks' ratio, per round and its median. Before
each load the bench waits (up to 2 min) until the box is less than ``--quiet`` (10 %) busy,
as ``batch_bench.py`` does.
"""

from __future__ import annotations

import argparse
import io
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

import batch_bench  # noqa: E402 - the data and model builders

from ferry.batch.sinks import pgcopy, pyrows  # noqa: E402

SINK = "Ferry's DbSink alone (no scoring; index column = its publish)"
SINK_FALLBACK = "Ferry's DbSink alone, executemany fallback (adbc=False)"
SINK_BASELINE = "baseline DbSink alone"
Loader = Callable[[list[pa.RecordBatch]], tuple[float, float]]
"""Loads the batches into a new table; returns (load seconds, CREATE INDEX seconds)."""

PG_DDL = ("id TEXT, label BIGINT, probabilities_0 REAL, probabilities_1 REAL, "
          "model_version BIGINT, run_id TEXT, scored_at TIMESTAMPTZ")
SQLITE_DDL = ("id TEXT, label INTEGER, probabilities_0 REAL, probabilities_1 REAL, "
              "model_version INTEGER, run_id TEXT, scored_at TEXT")


def _plain_columns(batch: pa.RecordBatch) -> list[list[object]]:
    """This script's own Arrow -> Python conversion (not Ferry's): NumPy ``tolist``."""
    out = []
    for col in batch.columns:
        if pa.types.is_timestamp(col.type):  # UTC text, as the sink stores it
            col = pc.binary_join_element_wise(
                col.cast(pa.timestamp(col.type.unit)).cast(pa.string()), "Z", "")
        out.append(col.to_numpy(zero_copy_only=False).tolist())
    return out


def _own_statement(batch: pa.RecordBatch, literals: bool) -> tuple[str, list[int]]:
    """INSERT for ``batch``; with ``literals``, columns with one value are written into the
    statement (quoted by hand) instead of bound per row. Returns it and the bound columns."""
    names, values, bound = [], [], []
    for i, col in enumerate(batch.columns):
        bounds = pc.min_max(col)
        if literals and not col.null_count and bounds["min"] == bounds["max"]:
            value = _plain_columns(pa.record_batch([col.slice(0, 1)], names=["c"]))[0][0]
            names.append(batch.schema.names[i])
            values.append(str(value) if isinstance(value, int)
                          else "'" + str(value).replace("'", "''") + "'")
        else:
            bound.append(i)
    names = [batch.schema.names[i] for i in bound] + names
    values = ["?"] * len(bound) + values
    return f"INSERT INTO t ({', '.join(names)}) VALUES ({', '.join(values)})", bound


def sqlite_loader(path: Path, pragmas: list[str], conversion: str) -> Loader:
    """``conversion``: ``own``, ``own+literals`` or ``ferry`` (``sinks.pyrows``, all bound)."""

    def load(batches: list[pa.RecordBatch]) -> tuple[float, float]:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        con = sqlite3.connect(path, isolation_level=None)
        for pragma in pragmas:
            con.execute(pragma)
        con.execute(f"CREATE TABLE t ({SQLITE_DDL})")
        start = time.perf_counter()
        con.execute("BEGIN")
        for batch in batches:
            if conversion == "ferry":
                con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)",
                                pyrows.rows(pa.Table.from_batches([batch])))
                continue
            insert, bound = _own_statement(batch, conversion == "own+literals")
            con.executemany(insert, zip(*_plain_columns(batch.select(bound)), strict=True))
        con.execute("COMMIT")
        loaded = time.perf_counter()
        con.execute("CREATE INDEX t_id ON t (id)")
        indexed = time.perf_counter()
        assert con.execute("SELECT COUNT(*) FROM t").fetchone()[0] == _rows(batches)
        con.close()
        return loaded - start, indexed - loaded

    return load


def sqlite_adbc(path: Path) -> Loader:
    import adbc_driver_sqlite.dbapi as adbc

    def load(batches: list[pa.RecordBatch]) -> tuple[float, float]:
        path.unlink(missing_ok=True)
        with adbc.connect(str(path)) as con, con.cursor() as cur:
            cur.execute(f"CREATE TABLE t ({SQLITE_DDL})")
            con.commit()
            start = time.perf_counter()
            table = pa.Table.from_batches(batches)
            i = table.schema.get_field_index("scored_at")
            col = table.column(i)
            bounds = pc.min_max(col)
            if bounds["min"] == bounds["max"] and not col.null_count:  # format it once
                col = col.slice(0, 1)
            text = pc.binary_join_element_wise(col.cast(pa.timestamp("us")).cast(pa.string()),
                                               "Z", "")
            if len(text) == 1 < table.num_rows:
                text = pa.repeat(text[0], table.num_rows)
            cur.adbc_ingest("t", table.set_column(i, "scored_at", text), mode="append")
            con.commit()
            loaded = time.perf_counter()
            cur.execute("CREATE INDEX t_id ON t (id)")
            con.commit()
            return loaded - start, time.perf_counter() - loaded

    return load


def pg_loader(url: str, fmt: str, unlogged: bool) -> Loader:
    import psycopg

    def load(batches: list[pa.RecordBatch]) -> tuple[float, float]:
        with psycopg.connect(url) as con:
            con.execute("DROP TABLE IF EXISTS t")
            con.execute(f"CREATE {'UNLOGGED ' if unlogged else ''}TABLE t ({PG_DDL})")
            con.commit()
            start = time.perf_counter()
            with con.cursor() as cur:
                if fmt == "binary":
                    with cur.copy("COPY t FROM STDIN (FORMAT binary)") as copy:
                        copy.write(pgcopy.HEADER)
                        for batch in batches:
                            for data in pgcopy.encode(batch):
                                copy.write(data)
                        copy.write(pgcopy.TRAILER)
                else:
                    for batch in batches:
                        i = batch.schema.get_field_index("scored_at")
                        text = pc.binary_join_element_wise(
                            batch.column(i).cast(pa.timestamp("us")).cast(pa.string()), "Z", "")
                        table = pa.Table.from_batches([batch]).set_column(i, "scored_at", text)
                        buf = io.BytesIO()
                        pacsv.write_csv(table, buf, pacsv.WriteOptions(
                            include_header=False, quoting_style="all_valid"))
                        with cur.copy("COPY t FROM STDIN (FORMAT csv)") as copy:
                            copy.write(buf.getbuffer())
            con.commit()
            loaded = time.perf_counter()
            con.execute("CREATE INDEX t_id ON t (id)")
            con.commit()
            indexed = time.perf_counter()
            assert con.execute("SELECT COUNT(*) FROM t").fetchone()[0] == _rows(batches)
            con.execute("DROP TABLE t")
            con.commit()
        return loaded - start, indexed - loaded

    return load


def pg_adbc(url: str) -> Loader:
    import adbc_driver_postgresql.dbapi as adbc
    import psycopg

    def load(batches: list[pa.RecordBatch]) -> tuple[float, float]:
        with psycopg.connect(url) as con:
            con.execute("DROP TABLE IF EXISTS t")
            con.execute(f"CREATE TABLE t ({PG_DDL})")
        with adbc.connect(url) as con, con.cursor() as cur:
            start = time.perf_counter()
            cur.adbc_ingest("t", pa.Table.from_batches(batches), mode="append")
            con.commit()
            loaded = time.perf_counter()
            cur.execute("CREATE INDEX t_id ON t (id)")
            con.commit()
            indexed = time.perf_counter()
            cur.execute("DROP TABLE t")
            con.commit()
        return loaded - start, indexed - loaded

    return load


def ferry_sink(dialect: str, url: str, adbc: bool = True) -> Loader:
    """Ferry's own ``DbSink`` fed the rows as chunks, without scoring: staging table,
    chunk bookkeeping in the same transactions, commit cadence; the publish (swap, key
    index, ``batch_tables``) is timed as the index column. ``adbc=False``: SQLite's
    ``executemany`` fallback."""
    from ferry.batch.job import Location
    from ferry.batch.scoring import ChunkResult
    from ferry.batch.sinks import DbSink, PublishInfo

    run_id = "20261121-000000-00000000"
    rejects = pa.schema([("id", pa.string()), ("reject_reason", pa.string()),
                         ("run_id", pa.string())])

    def load(batches: list[pa.RecordBatch]) -> tuple[float, float]:
        if dialect == "sqlite":
            Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
        sink = DbSink(Location("sql", dialect, target=url, table="t"), "t_rejects", run_id,
                      "replace", batches[0].schema, rejects, adbc=adbc)
        if dialect == "sqlite" and adbc and sink.adbc_path is None:
            raise SystemExit("DbSink did not take the ADBC path: is adbc-driver-sqlite "
                             "installed?")
        sink.open(resume=False)
        start = time.perf_counter()
        for i, batch in enumerate(batches):
            sink.write(ChunkResult(i, pa.Table.from_batches([batch]), rejects.empty_table(),
                                   batch.num_rows))
        sink.flush()
        loaded = time.perf_counter()
        sink.publish(PublishInfo(run_id, "tabular", 1, ["id"], _rows(batches)))
        published = time.perf_counter()
        sink.close()
        return loaded - start, published - loaded

    return load


def child_sink(dialect: str, url: str, rows: Path, baseline: str | None = None) -> Loader:
    """``ferry_sink`` run by a child process (``--sink-once``) on ``rows``; with
    ``baseline``, the Ferry under ``baseline/src`` instead of this tree's."""
    import os
    import subprocess

    def load(batches: list[pa.RecordBatch]) -> tuple[float, float]:
        env = {**os.environ, "PYTHONPATH": f"{baseline}/src"} if baseline else None
        out = subprocess.run([sys.executable, __file__, "--sink-once", dialect, url, str(rows)],
                             capture_output=True, text=True, env=env)
        if out.returncode:
            raise SystemExit(f"--sink-once failed:\n{out.stdout}\n{out.stderr}")
        load_s, publish_s = out.stdout.split("SINK ", 1)[1].split()[:2]
        return float(load_s), float(publish_s)

    return load


def sink_once(dialect: str, url: str, rows: Path) -> None:
    """The child's side of ``child_sink``: print the sink's load and publish seconds, of a
    second load (the first warms the process up, as the parent's loaders are)."""
    import ferry

    batches = pq.read_table(rows).combine_chunks().to_batches(max_chunksize=65536)
    ferry_sink(dialect, url)(batches)
    load_s, publish_s = ferry_sink(dialect, url)(batches)
    print(f"SINK {load_s} {publish_s} {Path(ferry.__file__).parent}")


def _rows(batches: list[pa.RecordBatch]) -> int:
    return sum(b.num_rows for b in batches)


def ferry(work: Path, data: Path, repo: Path, output: str, workers: int, rows: int,
          count: Callable[[], int]) -> float:
    cmd = [sys.executable, "-m", "ferry", "batch", "tabular", "--input", str(data), "--output",
           output, "--map", "input=f{i}", "--key", "id", "--workers", str(workers), "-q",
           "--repository", str(repo), "--store", f"sqlite:///{work / 'runs.db'}"]
    if not output.endswith(".parquet"):
        cmd += ["--table", "t"]
    text = batch_bench.run(cmd)
    match = re.search(r"(\d+) rows in, (\d+) out.*?, ([\d.]+) s \(", text)
    if match is None:
        raise SystemExit(text)
    if int(match.group(2)) != rows or count() != rows:
        raise SystemExit(f"ferry wrote {match.group(2)} rows to {output}, expected {rows}")
    return rows / float(match.group(3))


def output_rows(work: Path, data: Path, repo: Path) -> list[pa.RecordBatch]:
    """The rows ferry writes for this input, scored once, in memory as Arrow batches."""
    out = work / "rows.parquet"
    if not out.exists():
        batch_bench.run([sys.executable, "-m", "ferry", "batch", "tabular", "--input",
                         str(data), "--output", str(out), "--map", "input=f{i}", "--key", "id",
                         "-q", "--repository", str(repo),
                         "--store", f"sqlite:///{work / 'runs.db'}"])
    table = pq.read_table(out).combine_chunks()
    return table.to_batches(max_chunksize=65536)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", nargs="?")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--postgres", help="postgresql:// URL of a database to use (default: a "
                    "throwaway cluster started like the tests')")
    ap.add_argument("--databases", default="sqlite,postgresql",
                    help="comma-separated: the databases of (a) and (b)")
    ap.add_argument("--no-runs", action="store_true", help="skip (b) and (c)")
    ap.add_argument("--baseline", help="folder holding an older Ferry's src/: its DbSink is "
                    "timed too, both sinks in child processes")
    ap.add_argument("--quiet", type=float, default=0.1,
                    help="wait before each load until the box is less busy than this (0: "
                    "do not wait)")
    ap.add_argument("--sink-once", nargs=3, metavar=("DIALECT", "URL", "ROWS"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.sink_once:
        sink_once(*a.sink_once)
        return
    work = Path(a.work or tempfile.mkdtemp(prefix="ferry-batch-db-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    repo = work / "repo"
    if not (repo / "tabular" / "1" / "model.onnx").exists():
        batch_bench.run([sys.executable, str(ROOT / "bench" / "models.py"), str(work)])
    data = work / f"tabular-{a.rows}.parquet"
    if not data.exists():
        batch_bench.make_data(data, a.rows)
    batches = output_rows(work, data, repo)
    server = None
    if a.postgres:
        pg_url = a.postgres
    else:
        from tests._services import PostgresServer

        server = PostgresServer()
        pg_url = server.url
    pg_url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        run_all(a, work, data, repo, batches, pg_url)
    finally:
        if server is not None:
            server.stop()


def run_all(a: argparse.Namespace, work: Path, data: Path, repo: Path,
            batches: list[pa.RecordBatch], pg_url: str) -> None:
    import psycopg

    db = work / "load.db"
    pg_sink_url = pg_url.replace("postgresql://", "postgresql+psycopg://")
    loaders: dict[str, dict[str, Loader]] = {
        "sqlite": {
            "executemany, own conversion, default pragmas": sqlite_loader(db, [], "own"),
            "executemany, own conversion, journal/sync OFF, 256 MB cache (unsafe)":
                sqlite_loader(db, ["PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF",
                                   "PRAGMA cache_size=-262144"], "own"),
            "executemany, own conversion, one-value columns as SQL literals":
                sqlite_loader(db, [], "own+literals"),
            "executemany, Ferry's pyrows conversion (all bound)":
                sqlite_loader(db, [], "ferry"),
            SINK: ferry_sink("sqlite", f"sqlite:///{db}"),
            SINK_FALLBACK: ferry_sink("sqlite", f"sqlite:///{db}", adbc=False),
        },
        "postgresql": {
            "COPY csv (pyarrow), regular table": pg_loader(pg_url, "csv", False),
            "COPY binary (Ferry's pgcopy), regular table": pg_loader(pg_url, "binary", False),
            "COPY binary (Ferry's pgcopy), UNLOGGED table": pg_loader(pg_url, "binary", True),
            SINK: ferry_sink("postgresql", pg_sink_url),
        },
    }
    if a.baseline:  # both sinks in child processes, side by side
        rows = work / "rows.parquet"
        for dbname, url in (("sqlite", f"sqlite:///{db}"), ("postgresql", pg_sink_url)):
            loaders[dbname][SINK] = child_sink(dbname, url, rows)
            loaders[dbname][f"{SINK_BASELINE} {a.baseline}"] = child_sink(dbname, url, rows,
                                                                          a.baseline)
    wanted = a.databases.split(",")
    loaders = {dbname: named for dbname, named in loaders.items() if dbname in wanted}
    try:
        if "sqlite" in loaders:
            loaders["sqlite"]["ADBC adbc_ingest (Ferry's SQLite path)"] = sqlite_adbc(db)
    except ImportError:
        pass
    try:
        if "postgresql" in loaders:
            loaders["postgresql"]["ADBC adbc_ingest (not used by Ferry)"] = pg_adbc(pg_url)
    except ImportError:
        pass
    sqlite_out = work / "ferry.db"

    def sqlite_count() -> int:
        with sqlite3.connect(sqlite_out) as con:
            return int(con.execute("SELECT COUNT(*) FROM t").fetchone()[0])

    def pg_count() -> int:
        with psycopg.connect(pg_url) as con:
            return int(con.execute("SELECT COUNT(*) FROM t").fetchone()[0])

    def parquet_count() -> int:
        return pq.ParquetFile(work / "ferry.parquet").metadata.num_rows

    outputs = {"sqlite": (f"sqlite:///{sqlite_out}", sqlite_count),
               "postgresql": (pg_url, pg_count),
               "parquet": (str(work / "ferry.parquet"), parquet_count)}
    outputs = {k: v for k, v in outputs.items() if k in wanted + ["parquet"]}
    n = _rows(batches)
    onnx = work / "tabular.onnx"  # limit.py tells the model by the file's name
    onnx.write_bytes((repo / "tabular" / "1" / "model.onnx").read_bytes())
    by_hand: list[float] = []
    load: dict[tuple[str, str], list[float]] = {}
    indexed: dict[tuple[str, str], list[float]] = {}
    runs: dict[tuple[str, int], list[float]] = {}
    for round_ in range(a.runs):
        for dbname, named in loaders.items():
            order = list(named.items())  # a new order each round: a checkpoint or another
            random.Random(round_).shuffle(order)  # job's burst does not land on one path
            for name, loader in order:
                batch_bench.wait_quiet(a.quiet)
                seconds, index_s = loader(batches)
                load.setdefault((dbname, name), []).append(n / seconds)
                indexed.setdefault((dbname, name), []).append(n / (seconds + index_s))
        if a.no_runs:
            continue
        by_hand.append(limit_sqlite(work, data, onnx))
        for dbname, (url, count) in outputs.items():
            for workers in (1, 2):
                runs.setdefault((dbname, workers), []).append(
                    ferry(work, data, repo, url, workers, n, count))
    db.unlink(missing_ok=True)
    med = {k: statistics.median(v) for k, v in load.items()}
    med_ix = {k: statistics.median(v) for k, v in indexed.items()}
    run_med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\n{n:,} tabular output rows, medians of {a.runs} (work: {work})\n")
    print("(a) bulk load alone\n")
    print("| database | path | rows/s load | rows/s load + index on id | min-max load | "
          "vs best load (+ index) |")
    print("|---|---|--:|--:|--:|--:|")
    for (dbname, name), v in med.items():
        r = load[(dbname, name)]
        ix = med_ix[(dbname, name)]
        print(f"| {dbname} | {name} | {v:,.0f} | {ix:,.0f} | {min(r):,.0f}-{max(r):,.0f} | "
              f"{v / _best(med, dbname):.2f} ({ix / _best(med_ix, dbname):.2f}) |")
    print("\nThe sinks against their database's plain bulk load, medians of the per-round "
          "ratios (steadier than ratios of medians on a busy machine):")
    for dbname, reference in (("sqlite", "ADBC adbc_ingest (Ferry's SQLite path)"),
                              ("postgresql", "COPY binary (Ferry's pgcopy), regular table")):
        for (db_, name), rates in load.items():
            if db_ == dbname and (db_, reference) in load and (
                    name in (SINK, SINK_FALLBACK) or name.startswith(SINK_BASELINE)):
                ratios = [x / y for x, y in zip(rates, load[(db_, reference)], strict=True)]
                print(f"- {dbname}: {name} / {reference}: {statistics.median(ratios):.3f} "
                      f"(rounds {min(ratios):.2f}-{max(ratios):.2f})")
    for dbname in loaders:
        own = [(name, v) for (db_, name), v in med.items() if db_ == dbname
               and name.startswith(SINK_BASELINE)]
        for name, v in own:
            print(f"\n{dbname}: this tree's DbSink / the baseline's: "
                  f"{med[(dbname, SINK)] / v:.3f}; per round: " + ", ".join(
                      f"{x / y:.3f}" for x, y in zip(load[(dbname, SINK)], load[(dbname, name)],
                                                      strict=True)))
    if a.no_runs:
        return
    print(f"\n(b) ferry batch, {n:,} rows from Parquet, pipeline rows/s\n")
    print("| output | workers | rows/s | min-max | (b)/(a) best load | (b)/(a) best load + "
          "index | vs Parquet output |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for (dbname, workers), v in run_med.items():
        r = runs[(dbname, workers)]
        if dbname == "parquet":
            print(f"| parquet | {workers} | {v:,.0f} | {min(r):,.0f}-{max(r):,.0f} | | | 1.00 |")
            continue
        best, best_ix = _best(med, dbname), _best(med_ix, dbname)
        print(f"| {dbname} | {workers} | {v:,.0f} | {min(r):,.0f}-{max(r):,.0f} | "
              f"{v / best:.2f} | {v / best_ix:.2f} | {v / run_med[('parquet', workers)]:.2f} |")
    hand = statistics.median(by_hand)
    print(f"\n(c) scoring and loading by hand in one process (shared/bench/batch/limit.py "
          f"--sink sqlite: ORT, executemany, one transaction, no index): {hand:,.0f} rows/s "
          f"(min-max {min(by_hand):,.0f}-{max(by_hand):,.0f}); ferry to SQLite --workers 1 "
          f"= {run_med[('sqlite', 1)] / hand:.2f}x of it, --workers 2 = "
          f"{run_med[('sqlite', 2)] / hand:.2f}x")


def limit_sqlite(work: Path, data: Path, onnx: Path) -> float:
    """The anchors' "limit -> SQLite": in-process ORT and executemany, rows/s."""
    import json

    out = work / "limit.db"
    out.unlink(missing_ok=True)
    text = batch_bench.run([sys.executable, str(batch_bench.SHARED / "limit.py"), str(data),
                            str(onnx), str(out), "--batch", "8192", "--sink", "sqlite"])
    result = json.loads(text.split("RESULT ", 1)[1].splitlines()[0])
    out.unlink(missing_ok=True)
    return float(result["rows"]) / float(result["seconds"])


def _best(rates: dict[tuple[str, str], float], dbname: str) -> float:
    """The fastest load of ``dbname`` other than Ferry's sink itself."""
    return max(v for (db, name), v in rates.items()
               if db == dbname and name not in (SINK, SINK_FALLBACK)
               and not name.startswith(SINK_BASELINE))


if __name__ == "__main__":
    main()
