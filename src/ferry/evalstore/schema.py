"""The evaluation store's tables, its versioned migrations, and opening an engine.

Tables (SQLAlchemy Core, one ``MetaData``):

- ``ferry_schema``: one row per applied migration (``version``, ``applied``). Migrations
  are numbered functions in ``_MIGRATIONS``; ``open_engine`` applies the missing ones in
  order in one transaction that holds the store's migration lock (``ferry._dblock``: an
  advisory lock in PostgreSQL, ``BEGIN IMMEDIATE`` in SQLite) and checks again what is
  applied once it has it. Two servers opening one fresh store at once: one migrates, the
  other waits for it and finds nothing to do.
- ``prediction_batches`` (v2): one row per model version per writer flush: the records'
  inputs and outputs stacked into one ``codec`` blob each, their timestamps, latencies and
  row counts as one more blob, their request ids as a JSON list, and ``ts_min``/``ts_max``
  for window queries (``evalstore.batches``).
- ``prediction_index`` (v2): request id → (batch id, position in the batch), for feedback
  lookups and joins: three narrow columns in one B-tree keyed by request id (retention
  deletes by batch id scan it, once an hour). Since v3 it holds the ids clients chose and,
  added when feedback arrives, the server-made ids that got feedback; server-made ids
  (``<8 hex>-<counter>``) are found through the batches' id ranges instead
  (``evalstore.requestids``), which saves a B-tree insert per request.
- ``prediction_batches.id_prefix/id_lo/id_hi`` (v3): the range of counters of the
  server-made ids in the batch (one prefix per batch), with a covering index.
- ``predictions`` (v1, legacy): one row per record. Migration 2 converts its rows into
  batches (in the migrating transaction) and drops it.
- ``feedback``: append-only; the newest row per request id wins (duplicates are kept, so
  every label ever sent is recorded).
- ``model_versions``: the feature layout of each served version, so tools reading the store
  (``ferry export``, ``ferry monitor --store``) name columns without the repository.
- ``references``: reference profiles per model version (``monitoring.reference``).
- ``alert_states`` (v4): per (model, alert) the status the replicas agreed on (firing or
  resolved), whether its notification went out, and the lease of the replica sending it
  (``evalstore.alertstates``, ``monitoring.firing``).
- ``endpoint_policies`` (v5): the routing policy of each endpoint (model name) that is not
  the default, as JSON, with the last stable policy (for rollback) and a revision counted
  up at each change (``evalstore.endpoints``).
- ``endpoint_events`` (v5): append-only history of policy changes: what (policy and the
  one before), why, by whom, from where; its largest ``id`` is the change counter that
  servers sharing the store poll.

SQLite runs in WAL mode with ``synchronous=NORMAL``: readers never block the writer and a
commit costs no fsync of the main file. New SQLite files use 64 KiB pages (batch blobs are
hundreds of KiB; see ``open_engine``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
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
    text,
    event,
    inspect,
    select,
)

from ferry._dblock import migrate_once
from ferry.errors import StoreUnavailable

log = logging.getLogger("ferry.evalstore")

metadata = MetaData()

schema_versions = Table(
    "ferry_schema", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied", Float, nullable=False),
)

predictions = Table(  # v1 only: migration 2 converts its rows to batches and drops it
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

prediction_batches = Table(
    "prediction_batches", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("model", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("ts_min", Float, nullable=False),
    Column("ts_max", Float, nullable=False),
    Column("records", Integer, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("request_ids", Text, nullable=False),  # JSON list, record order
    Column("meta", LargeBinary, nullable=False),  # codec: ts, latency_ms, rows per record
    Column("extra", Text),  # JSON outcome/error/endpoint lists, NULL when all defaults
    Column("inputs", LargeBinary, nullable=False),
    Column("outputs", LargeBinary),
    Column("id_prefix", String(16)),  # v3: server-made ids of the batch, see requestids
    Column("id_lo", BigInteger),
    Column("id_hi", BigInteger),
    Index("ix_prediction_batches_model_ts", "model", "ts_min"),
)

_ID_RANGE_INDEX = Index("ix_prediction_batches_id_range", prediction_batches.c.id_prefix,
                        prediction_batches.c.id_hi, prediction_batches.c.id_lo)

prediction_index = Table(  # one B-tree keyed by request id (no rowid, no second index)
    "prediction_index", metadata,
    Column("request_id", String(128), primary_key=True),
    Column("batch_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=False),
    Column("position", Integer, primary_key=True, autoincrement=False),
    sqlite_with_rowid=False,
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

alert_states = Table(
    "alert_states", metadata,
    Column("model", String(128), primary_key=True),
    Column("alert", String(128), primary_key=True),
    Column("status", String(16), nullable=False),  # firing | resolved
    Column("since", Float, nullable=False),  # when the status began
    Column("judged", Float, nullable=False),  # window end of the judgement that set it
    Column("value", Float),
    Column("event", Text, nullable=False),  # JSON body of the notification
    Column("notified", Boolean, nullable=False),
    Column("notified_at", Float),
    Column("lease_until", Float, nullable=False),  # a replica is notifying until then
    Column("lease_owner", String(128)),  # host:pid, for people reading the table
    Column("seq", Integer, nullable=False),  # bumped by every claim (compare-and-set)
)


endpoint_policies = Table(
    "endpoint_policies", metadata,
    Column("model", String(128), primary_key=True),
    Column("policy", Text, nullable=False),  # JSON, routing.policies.Policy.to_json()
    Column("stable", Text, nullable=False),  # JSON, the policy a rollback returns to
    Column("revision", Integer, nullable=False),
    Column("updated", Float, nullable=False),
)

endpoint_events = Table(
    "endpoint_events", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("model", String(128), nullable=False),
    Column("ts", Float, nullable=False),
    Column("action", String(32), nullable=False),  # set, rollback, version_gone, ...
    Column("policy", Text),  # JSON of the policy after the event
    Column("previous", Text),  # JSON of the policy before it
    Column("reason", Text),
    Column("actor", String(128), nullable=False),  # admin token, loopback, or the server
    Column("client", String(64)),  # the caller's address
    Column("notes", Text),  # JSON list of what the server changed (normalised weights)
    Index("ix_endpoint_events_model_id", "model", "id"),
)


def _v1(conn: Connection) -> None:
    for table in (predictions, feedback, model_versions, references):
        table.create(conn, checkfirst=True)


def _v2(conn: Connection) -> None:
    """Batched predictions: convert every v1 row, oldest first, then drop ``predictions``.
    Every converted id gets an index row (feedback rows of v1 may point at any of them)."""
    from ferry.evalstore.batches import build_batches, insert_batches, records_of

    prediction_batches.create(conn, checkfirst=True)
    prediction_index.create(conn, checkfirst=True)
    if not inspect(conn).has_table("predictions"):
        return
    cols = predictions.c
    last = 0
    while True:
        rows = [dict(r._mapping) for r in conn.execute(
            predictions.select().where(cols.id > last).order_by(cols.id).limit(4096))]
        if not rows:
            break
        last = rows[-1]["id"]
        insert_batches(conn, build_batches(records_of(rows)), index_all=True)
    predictions.drop(conn)


def _v3(conn: Connection) -> None:
    """Id ranges of server-made request ids per batch (``requestids``): three nullable
    columns and their index. Existing batches keep their index rows and get NULL ranges."""
    have = {c["name"] for c in inspect(conn).get_columns("prediction_batches")}
    guard = "IF NOT EXISTS " if conn.dialect.name == "postgresql" else ""  # racing servers
    for name, kind in (("id_prefix", "VARCHAR(16)"), ("id_lo", "BIGINT"), ("id_hi", "BIGINT")):
        if name not in have:
            conn.execute(text(f"ALTER TABLE prediction_batches ADD COLUMN {guard}{name} {kind}"))
    _ID_RANGE_INDEX.create(conn, checkfirst=True)


def _v4(conn: Connection) -> None:
    """Alert state shared by the replicas on one store (``monitoring.firing``)."""
    alert_states.create(conn, checkfirst=True)


def _v5(conn: Connection) -> None:
    """Endpoint routing policies and their event history (``routing``)."""
    endpoint_policies.create(conn, checkfirst=True)
    endpoint_events.create(conn, checkfirst=True)


_MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3, _v4, _v5]
"""Migration N is ``_MIGRATIONS[N - 1]``; append, never edit a released one."""

SCHEMA_VERSION = len(_MIGRATIONS)

SQLITE_PAGE_SIZE = 65536


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
            # a new file gets 64 KiB pages (ignored for an existing one): a batch's blobs
            # span 16x fewer overflow pages, which makes writing them ~2.5x cheaper
            cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
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


MIGRATION_LOCK = "ferry.evalstore.schema"
"""The name of the lock migrations hold (``ferry._dblock``)."""


def applied_versions(conn: Connection) -> set[int]:
    """The migrations applied to this store (none when it has no ``ferry_schema``)."""
    if not inspect(conn).has_table(schema_versions.name):
        return set()
    return {v for (v,) in conn.execute(select(schema_versions.c.version))}


def migrate_schema(engine: Engine) -> int:
    """Apply the migrations this store lacks; returns the schema version reached.

    Up to date: one read, no lock. Otherwise the check and the migrations run in one
    transaction under ``MIGRATION_LOCK``, so concurrent callers apply each migration once.
    """
    wanted = set(range(1, SCHEMA_VERSION + 1))

    def needed(conn: Connection) -> bool:
        applied = applied_versions(conn)
        if applied and max(applied) > SCHEMA_VERSION:
            raise StoreUnavailable(f"store schema version {max(applied)} is newer than this "
                                   f"Ferry's {SCHEMA_VERSION}; upgrade Ferry")
        return not wanted <= applied

    def migrate(conn: Connection) -> None:
        schema_versions.create(conn, checkfirst=True)
        applied = applied_versions(conn)
        done = []
        for number, migration in enumerate(_MIGRATIONS, start=1):
            if number not in applied:
                migration(conn)
                conn.execute(schema_versions.insert(), {"version": number,
                                                        "applied": time.time()})
                done.append(number)
        log.info("evaluation store schema: applied migration(s) %s, now version %d",
                 ", ".join(map(str, done)), SCHEMA_VERSION)

    migrate_once(engine, MIGRATION_LOCK, needed, migrate)
    return SCHEMA_VERSION


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())
