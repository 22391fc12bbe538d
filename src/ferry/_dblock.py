"""One database-wide lock per name, held for one write transaction: how Ferry's schema
migrations stay correct when several processes open one store at the same moment.

``locked_transaction(engine, name)`` yields a connection inside a transaction that no other
``locked_transaction`` of the same ``name`` on the same database overlaps:

- PostgreSQL: ``pg_advisory_xact_lock(key)`` first, with ``key`` derived from ``name``
  (``lock_key``); the lock goes with the transaction (commit, rollback or a dropped
  connection), so a process killed mid-migration never leaves it held.
- SQLite: ``BEGIN IMMEDIATE``, which takes the file's write lock before the first read, so
  the check and the change are one write transaction (a second process waits for it, up to
  the connection's busy timeout, 30 s in Ferry).
- Other databases: a plain transaction (no lock; Ferry supports only the two above).

The caller re-checks, under the lock, whatever it read before deciding to change the schema
(``migrate_once`` does both): the loser of a race waits, then finds the work done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text


def lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name`` (the first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def locked_transaction(engine: Engine, name: str) -> Iterator[Connection]:
    """A connection in a transaction holding the lock ``name``; committed when the block
    ends, rolled back when it raises."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            # the sqlite3 module begins no transaction before DDL or SELECT; this one
            # covers every statement of the block, and commit() ends it
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})
        yield conn


def migrate_once(engine: Engine, name: str, needed: Callable[[Connection], bool],
                 migrate: Callable[[Connection], None]) -> bool:
    """Run ``migrate`` when ``needed`` says so, checking again under the lock ``name``.

    The first check is a plain read (no lock, no write transaction), so opening a store
    that is up to date costs one query. Returns whether this call migrated."""
    with engine.connect() as conn:
        if not needed(conn):
            return False
    with locked_transaction(engine, name) as conn:
        if not needed(conn):
            return False
        migrate(conn)
        return True
