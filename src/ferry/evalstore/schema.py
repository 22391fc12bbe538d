"""The evaluation store's tables, its versioned migrations, and opening an engine.

Tables (SQLAlchemy Core, one ``MetaData``):

- ``ferry_schema``: one row per applied migration (``version``, ``applied``). Migrations
  are numbered functions in ``_MIGRATIONS``; ``open_engine`` applies the missing ones in
  order inside a transaction, so two servers opening the same PostgreSQL store at once
  converge (the loser of a race sees the table and skips).
- ``predictions``: one row per recorded inference (not per value): request id, time,
  model, version, endpoint, outcome, latency, row count, and the inputs and outputs as one
  compact blob each (``evalstore.codec``).
- ``feedback``: append-only; the newest row per request id wins (duplicates are kept, so
  every label ever sent is recorded).
- ``model_versions``: the feature layout of each served version, so tools reading the store
  (``ferry export``, ``ferry monitor --store``) name columns without the repository.
- ``references``: reference profiles per model version (``monitoring.reference``).

SQLite runs in WAL mode with ``synchronous=NORMAL``: readers never block the writer and a
commit costs no fsync of the main file.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
)

from ferry.errors import StoreUnavailable

metadata = MetaData()

schema_versions = Table(
    "ferry_schema", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied", Float, nullable=False),
)

predictions = Table(
    "predictions", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("request_id", String(128), nullable=False),
    Column("ts", Float, nullable=False),
    Column("model", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("endpoint", String(128)),
    Column("outcome", String(64), nullable=False),
    Column("error", Text),
    Column("latency_ms", Float, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("inputs", LargeBinary, nullable=False),
    Column("outputs", LargeBinary),
    Index("ix_predictions_model_ts", "model", "ts"),
    Index("ix_predictions_request_id", "request_id"),
)

feedback = Table(
    "feedback", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("request_id", String(128), nullable=False),
    Column("ts", Float, nullable=False),
    Column("label", Text),  # JSON: one value, or one per row of the request
    Column("reward", Float),
    Index("ix_feedback_request_id", "request_id"),
)

model_versions = Table(
    "model_versions", metadata,
    Column("model", String(128), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("layout", Text, nullable=False),  # JSON of FeatureLayout.to_json()
    Column("updated", Float, nullable=False),
)

references = Table(
    "references", metadata,
    Column("model", String(128), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("source", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created", Float, nullable=False),
    Column("profile", LargeBinary, nullable=False),
)


def _v1(conn: Connection) -> None:
    for table in (predictions, feedback, model_versions, references):
        table.create(conn, checkfirst=True)


_MIGRATIONS: list[Callable[[Connection], None]] = [_v1]
"""Migration N is ``_MIGRATIONS[N - 1]``; append, never edit a released one."""

SCHEMA_VERSION = len(_MIGRATIONS)


def normalize_url(url: str) -> str:
    """Accept the plain ``postgresql://`` and ``postgres://`` forms (psycopg 3 driver)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def open_engine(url: str, migrate: bool = True) -> Engine:
    """An engine for ``url`` with the schema migrated to ``SCHEMA_VERSION``.

    Raises ``StoreUnavailable`` when the database cannot be reached or migrated.
    """
    url = normalize_url(url)
    kwargs: dict[str, object] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 5}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"check_same_thread": False, "timeout": 30}}
    try:
        engine = create_engine(url, **kwargs)  # type: ignore[arg-type]
    except Exception as exc:
        raise StoreUnavailable(f"store URL {url!r} is not usable: {exc}; use "
                               f"sqlite:///PATH or postgresql://USER@HOST/DB") from None
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    if migrate:
        try:
            migrate_schema(engine)
        except StoreUnavailable:
            raise
        except Exception as exc:
            engine.dispose()
            raise StoreUnavailable(f"store {engine.url.render_as_string()} cannot be "
                                   f"reached or migrated: {type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0]}") from None
    return engine


def migrate_schema(engine: Engine) -> int:
    """Apply the migrations this store lacks; returns the schema version reached."""
    with engine.begin() as conn:
        schema_versions.create(conn, checkfirst=True)
    with engine.begin() as conn:
        applied = {v for (v,) in conn.execute(schema_versions.select().with_only_columns(
            schema_versions.c.version))}
        if applied and max(applied) > SCHEMA_VERSION:
            raise StoreUnavailable(f"store schema version {max(applied)} is newer than this "
                                   f"Ferry's {SCHEMA_VERSION}; upgrade Ferry")
        for number, migration in enumerate(_MIGRATIONS, start=1):
            if number not in applied:
                migration(conn)
                conn.execute(schema_versions.insert(), {"version": number,
                                                        "applied": time.time()})
    return SCHEMA_VERSION


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())
