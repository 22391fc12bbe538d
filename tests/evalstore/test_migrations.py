"""Schema migrations under a database lock: two processes (here, two threads with their own
engines) opening one store at the same moment apply each migration once, and neither fails.

The race is made certain rather than likely: the test holds a lock on the store's empty
``ferry_schema`` table (PostgreSQL: ``LOCK TABLE``; SQLite: a ``BEGIN IMMEDIATE``
transaction) until both openers are waiting at the check, then lets them go. Check-then-act
code (Ferry before the lock) runs the first migration's ``CREATE TABLE`` twice, and the
second one fails."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import Engine, create_engine, event, text

from ferry._dblock import lock_key
from ferry.batch.records import RunStore
from ferry.evalstore.schema import SCHEMA_VERSION, open_engine, schema_versions
from tests.evalstore.conftest import fresh_postgres

_CREATE = re.compile(r"^\s*CREATE TABLE (?:IF NOT EXISTS )?\"?(\w+)", re.I)


class DdlCounter:
    """Counts ``CREATE TABLE`` statements sent by every engine of this process."""

    def __init__(self) -> None:
        self.created: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __enter__(self) -> DdlCounter:
        event.listen(Engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if m := _CREATE.match(statement):
            with self._lock:
                self.created[m.group(1)] += 1


def _race(url: str, opener, hold, released) -> list[object]:  # type: ignore[no-untyped-def]
    """Run ``opener(url)`` on two threads while ``hold`` keeps them at the check; returns
    each thread's result or exception."""
    results: list[object] = [None, None]

    def run(i: int) -> None:
        try:
            results[i] = opener(url)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    with hold():
        for t in threads:
            t.start()
        released()
    for t in threads:
        t.join(120)
    return results


def wait_for_waiters(url: str, n: int, timeout: float = 60) -> None:
    """Return once ``n`` sessions of ``url``'s PostgreSQL database wait for a lock."""
    database = url.rsplit("/", 1)[1]
    admin = create_engine(url.rsplit("/", 1)[0] + "/ferry")
    deadline = time.monotonic() + timeout
    try:
        with admin.connect() as conn:
            while time.monotonic() < deadline:
                waiting = conn.execute(text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE NOT l.granted AND a.datname = :db"), {"db": database}).scalar()
                if waiting >= n:
                    return
                conn.rollback()
                time.sleep(0.05)
    finally:
        admin.dispose()
    raise AssertionError(f"{n} sessions never waited for the lock")


def _open_and_close(url: str) -> int:
    engine = open_engine(url)
    engine.dispose()
    return SCHEMA_VERSION


@pytest.fixture(params=["sqlite", "postgres"])
def held_store(request, tmp_path):  # type: ignore[no-untyped-def]
    """A store whose empty ``ferry_schema`` a context manager can hold locked, and a
    function that returns once two other sessions wait for that lock."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'race.db'}"
        path = tmp_path / "race.db"
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        engine = create_engine(url)
        schema_versions.create(engine)
        engine.dispose()

        class Hold:
            def __enter__(self) -> None:
                self.conn = sqlite3.connect(path, isolation_level=None)
                self.conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, *exc: object) -> None:
                self.conn.execute("COMMIT")
                self.conn.close()

        def released() -> None:
            time.sleep(2.0)  # SQLite cannot list its waiters: give both threads time

        yield url, Hold, released
        return
    url = fresh_postgres(request.getfixturevalue("postgres_url"))
    engine = create_engine(url)
    schema_versions.create(engine)

    class PgHold:
        def __enter__(self) -> None:
            self.conn = engine.connect()
            self.conn.execute(text("LOCK TABLE ferry_schema IN ACCESS EXCLUSIVE MODE"))

        def __exit__(self, *exc: object) -> None:
            self.conn.commit()
            self.conn.close()

    def waiting() -> None:
        wait_for_waiters(url, 2)

    yield url, PgHold, waiting
    engine.dispose()


def test_two_openers_of_one_store_apply_each_migration_once(held_store):
    url, hold, released = held_store
    with DdlCounter() as ddl:
        results = _race(url, _open_and_close, hold, released)
    assert results == [SCHEMA_VERSION, SCHEMA_VERSION], results
    assert ddl.created["predictions"] == 1, ddl.created
    assert ddl.created["alert_states"] == 1, ddl.created
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM ferry_schema ORDER BY version")
                            ).scalars().all() == list(range(1, SCHEMA_VERSION + 1))
    engine.dispose()


def test_two_run_stores_opening_one_fresh_store_create_its_tables_once(store_url):
    """The batch run-record tables: created under their own lock, once."""
    def opener(url: str) -> int:
        RunStore(url).close()
        return 1

    barrier = threading.Barrier(4)
    with DdlCounter() as ddl:
        results: list[object] = []

        def run() -> None:
            barrier.wait()
            try:
                results.append(opener(store_url))
            except Exception as exc:  # noqa: BLE001
                results.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert results == [1, 1, 1, 1], results
    assert ddl.created["batch_runs"] == 1, ddl.created


def test_lock_keys_are_stable_signed_64_bit_and_distinct():
    keys = {lock_key("ferry.evalstore.schema"), lock_key("ferry.batch.schema")}
    assert len(keys) == 2
    assert all(-(1 << 63) <= k < (1 << 63) for k in keys)
    assert lock_key("ferry.evalstore.schema") == lock_key("ferry.evalstore.schema")
