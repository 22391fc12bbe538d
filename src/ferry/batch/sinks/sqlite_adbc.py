"""SQLite's bulk path for the database sink: ADBC's ``adbc_ingest`` (``adbc-driver-sqlite``),
which binds Arrow arrays to a prepared INSERT in C, with no Python value per cell.

``usable`` is the one place that decides between it and the ``executemany`` fallback
(``pyrows``): ADBC is used when the driver imports, the URL names a database file (no
``:memory:``, no URL options, no ``file:`` URI), no other connection of this process has
that file open, and every column has a type that ``arrow`` turns into the values
``executemany`` stores.

Why the open-file check: the driver links its own copy of SQLite, beside Python's
``sqlite3``. POSIX file locks belong to the process, so two copies of SQLite in one process
do not see each other's locks on a file, and a ``close()`` in one copy drops the locks of the
other: SQLite's "How To Corrupt An SQLite Database File", section 2.2.1. A run whose input
or run store (``--store``) is the output's file has it open through ``sqlite3`` already
(both are opened before the sink), and keeps ``executemany``; so does a program that keeps a
``sqlite3`` connection to the output open while it runs a job. Other processes (the
server's predictions route, a reader in a shell) lock against either copy as usual.
Windows locks per handle, so there the check is not needed.

The table is still created by the sink with its own DDL, and rows are ingested in append
mode, so column types, values and their SQLite storage classes (``typeof()``) are the
fallback's:

- integers and booleans as INTEGER (booleans 0/1), floats as REAL (NaN as NULL, which is
  what SQLite makes of it either way), text and blobs as they are;
- timestamps as the sink's text for them (``pyrows.sqlite_value``: ADBC's own formatting
  differs, ``2026-11-21T02:00:00.000000``); a column with one value in a chunk (a run's
  ``scored_at``) formatted once and repeated (formatting each value cost ~10 % of the load);
- dates as ISO text (``date.isoformat()``, as Python's sqlite3 adapts them); dictionaries
  decoded; ``float16`` widened; fixed-size binary as binary. Other types (decimals, lists,
  times, view types, ...) leave the sink on ``executemany``.

Transactions: an ADBC connection keeps one open (``autocommit`` off): ``commit()`` commits
it and begins the next. ``adbc_ingest`` then runs inside it, so the rows and the chunk
numbers inserted before the sink's ``commit()`` become durable together, or not at all.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pyarrow as pa

from ferry.batch.sinks import pyrows

log = logging.getLogger("ferry.batch")

BUSY_TIMEOUT_MS = 5000
"""How long a statement waits for another connection's lock: Python's sqlite3 default."""


def usable(target: str, *schemas: pa.Schema) -> str | None:
    """The database file an ADBC connection should open for the SQLAlchemy URL ``target``,
    or None when the sink must use ``executemany``: the driver does not import, the URL is
    not a plain file, this process has the file open already, or a column type is one
    ``arrow`` does not convert."""
    try:
        import adbc_driver_sqlite.dbapi  # noqa: F401
    except ImportError:
        return None
    import sqlalchemy as sa

    url = sa.engine.make_url(target)
    path = url.database
    if url.query or not path or path == ":memory:" or path.startswith("file:"):
        return None
    unsupported = [f"{f.name}: {f.type}" for schema in schemas for f in schema
                   if not _supported(f.type)]
    if unsupported:
        log.info("%s: column type(s) %s are inserted with executemany, not ADBC", path,
                 ", ".join(unsupported))
        return None
    if _open_in_this_process(path):
        log.info("%s is open in this process already (the input or the run store?): "
                 "inserting with sqlite3's executemany, not a second copy of SQLite", path)
        return None
    return path


def connect(path: str) -> Any:
    """An ADBC DB-API connection to ``path`` with a transaction open, waiting for locks
    as sqlite3 does, with helper threads for the key index's sort at publish."""
    import adbc_driver_sqlite.dbapi as adbc

    conn = adbc.connect(path)
    try:
        with conn.cursor() as cur:
            cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cur.fetchall()
            cur.execute("PRAGMA threads = 2")
            cur.fetchall()
    except Exception:
        conn.close()
        raise
    return conn


def _open_in_this_process(path: str) -> bool:
    """Whether a file descriptor of this process refers to the file at ``path`` (or, where
    the descriptors cannot be listed, True: the safe answer)."""
    if os.name == "nt":
        return False  # per-handle locks: copies of SQLite in one process see each other
    try:
        target = os.stat(path)
    except FileNotFoundError:
        return False  # nobody has it open: the sink creates it
    try:
        fds = os.listdir("/dev/fd")
    except OSError:
        return True
    for fd in fds:
        try:
            st = os.fstat(int(fd))
        except (OSError, ValueError):
            continue  # closed meanwhile, or the listing's own descriptor
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False


def ingest(cur: Any, name: str, columns: list[str], tables: list[pa.Table]) -> None:
    """Append ``tables`` to table ``name`` (whose columns are ``columns``, in order) in the
    cursor's open transaction."""
    for table in tables:
        cur.adbc_ingest(name, arrow(table, columns), mode="append")


def arrow(table: pa.Table, columns: list[str]) -> pa.Table:
    """``table`` as ADBC should bind it into a table with ``columns`` (in that order: the
    ingest's INSERT names none): missing columns as NULL, each value as ``executemany``
    stores it."""
    n = table.num_rows
    arrays = [_column(_one_array(table.column(c)), n) if c in table.column_names
              else pa.nulls(n, pa.string()) for c in columns]
    return pa.Table.from_arrays(arrays, names=columns)


def _one_array(col: pa.ChunkedArray) -> pa.Array:
    """The column as one array, copied only if it has several chunks (a chunk's output has
    one: ``combine_chunks`` copied it anyway, ~1 % of the load)."""
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def _column(col: pa.Array, n: int) -> pa.Array:
    t = col.type
    if pa.types.is_dictionary(t):
        return _column(col.dictionary_decode(), n)
    if pa.types.is_timestamp(t):
        if n > 1 and col.null_count == 0 and pyrows.constant(col):
            return pa.repeat(pyrows.sqlite_value(col.slice(0, 1))[0], n)
        return pyrows.sqlite_value(col)
    if pa.types.is_date(t) or pa.types.is_null(t):
        return col.cast(pa.string())
    if pa.types.is_float16(t):
        return col.cast(pa.float32())
    if pa.types.is_fixed_size_binary(t):
        return col.cast(pa.binary())
    return col


def _supported(t: pa.DataType) -> bool:
    """Types ``arrow`` binds as the values ``executemany`` stores for them."""
    if pa.types.is_dictionary(t):
        return _supported(t.value_type)
    return bool(pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)
                or pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_binary(t) or pa.types.is_large_binary(t)
                or pa.types.is_fixed_size_binary(t) or pa.types.is_timestamp(t)
                or pa.types.is_date(t) or pa.types.is_null(t))
