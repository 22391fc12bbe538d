"""Run records and schedules, in a SQL database through SQLAlchemy (tables ``batch_*``).

The store URL comes from ``--store``, else ``FERRY_BATCH_STORE``, else ``FERRY_STORE`` (the
evaluation store's variable: the rule ``ferry serve`` follows to find the schedules it runs),
else ``sqlite:///ferry.db``; a relative SQLite path is made absolute against the working
folder. Every write is its own short transaction, so a batch run, ``ferry batch runs`` and a
scheduler can share the database.

Tables:
- ``batch_runs``: one row per run (the job as JSON, status, counts, times, error);
- ``batch_chunks``: the chunks a run has made durable, with their counts (progress; a resume
  rebuilds it from the output's staging, which keeps the same counts);
- ``batch_schedules``: cron schedules and the last fire time each one claimed (the claim is
  a compare-and-set on that row, so two schedulers, or one restarted, never fire it twice).

The tables are created when missing, in one transaction under a database lock
(``create_tables``), so processes opening one fresh store at once create them once.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ferry._extras import require_url
from ferry.settings import absolute_sqlite_url

DEFAULT_STORE = "sqlite:///ferry.db"

metadata = sa.MetaData()

runs = sa.Table(
    "batch_runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer),
    sa.Column("input", sa.Text, nullable=False),
    sa.Column("output", sa.Text, nullable=False),
    sa.Column("job", sa.Text, nullable=False),
    sa.Column("schedule", sa.String(200), index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("rows_in", sa.BigInteger, nullable=False, default=0),
    sa.Column("rows_out", sa.BigInteger, nullable=False, default=0),
    sa.Column("rows_rejected", sa.BigInteger, nullable=False, default=0),
    sa.Column("chunks_done", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Column("error", sa.Text),
    sa.Column("pid", sa.Integer),
)

chunks = sa.Table(
    "batch_chunks", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("chunk", sa.Integer, primary_key=True),
    sa.Column("rows_in", sa.BigInteger, nullable=False),
    sa.Column("rows_out", sa.BigInteger, nullable=False),
    sa.Column("rows_rejected", sa.BigInteger, nullable=False),
)

schedules = sa.Table(
    "batch_schedules", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("cron", sa.String(200), nullable=False),
    sa.Column("argv", sa.Text, nullable=False),
    sa.Column("grace_s", sa.Float, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_fire", sa.DateTime(timezone=True)),
    sa.Column("last_run_id", sa.String(64)),
)

STATUSES = ("running", "succeeded", "failed", "interrupted")


class BatchSettings(BaseSettings):
    """Where batch run records and schedules live."""

    model_config = SettingsConfigDict(env_prefix="FERRY_BATCH_", extra="ignore")

    store: str = Field(default=DEFAULT_STORE,
                       validation_alias=AliasChoices("FERRY_BATCH_STORE", "FERRY_STORE"))
    """SQLAlchemy URL of the run-record store: env ``FERRY_BATCH_STORE``, else
    ``FERRY_STORE`` (as ``ferry serve`` does; its ``none`` means the default here)."""

    @field_validator("store")
    @classmethod
    def _resolve(cls, url: str) -> str:
        return absolute_sqlite_url(DEFAULT_STORE if url.lower() == "none" else url)


@dataclass
class RunRecord:
    run_id: str
    model: str
    version: int | None
    input: str
    output: str
    job: dict[str, Any]
    schedule: str | None
    status: str
    rows_in: int
    rows_out: int
    rows_rejected: int
    chunks_done: int
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    error: str | None
    pid: int | None

    @property
    def seconds(self) -> float:
        end = self.ended_at or self.updated_at
        return (_aware(end) - _aware(self.started_at)).total_seconds()


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


def new_run_id() -> str:
    return now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


class RunStore:
    """Run records, chunk progress and schedules. Safe to use from one thread at a time;
    open one per process."""

    def __init__(self, url: str | None = None) -> None:
        from ferry.evalstore.schema import normalize_url

        self.url = absolute_sqlite_url(url) if url else BatchSettings().store
        require_url(self.url, "the run-record store")
        kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
        self.engine = sa.create_engine(normalize_url(self.url), **kwargs)
        create_tables(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- runs -----------------------------------------------------------------------------
    def create_run(self, run_id: str, model: str, version: int | None, input: str,
                   output: str, job: dict[str, Any], schedule: str | None) -> None:
        t = now()
        with self.engine.begin() as c:
            c.execute(runs.insert().values(
                run_id=run_id, model=model, version=version, input=input, output=output,
                job=json.dumps(job), schedule=schedule, status="running", rows_in=0,
                rows_out=0, rows_rejected=0, chunks_done=0, started_at=t, updated_at=t,
                pid=os.getpid()))

    def restart_run(self, run_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).values(
                status="running", ended_at=None, error=None, updated_at=now(),
                pid=os.getpid()))

    def set_version(self, run_id: str, version: int) -> None:
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).values(version=version))

    def chunks_done(self, run_id: str, done: list[tuple[int, int, int, int]]) -> None:
        """Record durable chunks: ``(chunk, rows_in, rows_out, rows_rejected)`` each."""
        if not done:
            return
        with self.engine.begin() as c:
            c.execute(chunks.delete().where(chunks.c.run_id == run_id,
                                            chunks.c.chunk.in_([d[0] for d in done])))
            c.execute(chunks.insert(), [dict(run_id=run_id, chunk=d[0], rows_in=d[1],
                                             rows_out=d[2], rows_rejected=d[3]) for d in done])
            self._total(c, run_id)

    def _total(self, c: sa.Connection, run_id: str) -> None:
        totals = c.execute(sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(chunks.c.rows_in), 0),
            sa.func.coalesce(sa.func.sum(chunks.c.rows_out), 0),
            sa.func.coalesce(sa.func.sum(chunks.c.rows_rejected), 0)).where(
            chunks.c.run_id == run_id)).one()
        c.execute(runs.update().where(runs.c.run_id == run_id).values(
            chunks_done=totals[0], rows_in=totals[1], rows_out=totals[2],
            rows_rejected=totals[3], updated_at=now()))

    def resume_chunks(self, run_id: str,
                      durable: dict[int, tuple[int, int, int] | None]) -> list[int]:
        """Make a resumed run's progress what its output's staging holds, the truth about
        the output: ``durable`` maps each chunk the staging holds to its ``(rows_in,
        rows_out, rows_rejected)``. Chunks the staging does not hold are forgotten; chunks
        it holds are recorded with its counts, including any a crash kept from being
        recorded. A chunk without counts (staged by an older Ferry) keeps the row recorded
        for it, if any. Returns the chunks that stay uncounted: durable, so not scored
        again, but in none of the run's counts."""
        unknown = [k for k, v in durable.items() if v is None]
        with self.engine.begin() as c:
            recorded = {r[0] for r in c.execute(sa.select(chunks.c.chunk).where(
                chunks.c.run_id == run_id))}
            c.execute(chunks.delete().where(
                chunks.c.run_id == run_id,
                chunks.c.chunk.not_in(unknown) if unknown else sa.true()))
            known = [dict(run_id=run_id, chunk=k, rows_in=v[0], rows_out=v[1],
                          rows_rejected=v[2]) for k, v in durable.items() if v is not None]
            if known:
                c.execute(chunks.insert(), known)
            self._total(c, run_id)
        return sorted(k for k in unknown if k not in recorded)

    def done_chunks(self, run_id: str) -> set[int]:
        with self.engine.connect() as c:
            return {r[0] for r in c.execute(sa.select(chunks.c.chunk).where(
                chunks.c.run_id == run_id))}

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(status)
        t = now()
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).values(
                status=status, error=error, ended_at=t, updated_at=t))

    def get_run(self, run_id: str) -> RunRecord | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(runs).where(runs.c.run_id == run_id)).first()
        return _record(row) if row else None

    def list_runs(self, limit: int = 20, model: str | None = None,
                  schedule: str | None = None) -> list[RunRecord]:
        query = sa.select(runs).order_by(runs.c.started_at.desc()).limit(limit)
        if model:
            query = query.where(runs.c.model == model)
        if schedule:
            query = query.where(runs.c.schedule == schedule)
        with self.engine.connect() as c:
            return [_record(r) for r in c.execute(query)]

    def last_success(self, schedule: str) -> RunRecord | None:
        query = (sa.select(runs).where(runs.c.schedule == schedule,
                                       runs.c.status == "succeeded")
                 .order_by(runs.c.started_at.desc()).limit(1))
        with self.engine.connect() as c:
            row = c.execute(query).first()
        return _record(row) if row else None

    # -- schedules ------------------------------------------------------------------------
    def add_schedule(self, name: str, cron: str, argv: list[str], grace_s: float) -> None:
        with self.engine.begin() as c:
            if c.execute(sa.select(schedules.c.name).where(schedules.c.name == name)).first():
                raise KeyError(name)
            c.execute(schedules.insert().values(name=name, cron=cron, argv=json.dumps(argv),
                                                grace_s=grace_s, created_at=now()))

    def remove_schedule(self, name: str) -> bool:
        with self.engine.begin() as c:
            return c.execute(schedules.delete().where(schedules.c.name == name)).rowcount > 0

    def list_schedules(self) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(schedules).order_by(schedules.c.name)).mappings().all()
        out = []
        for r in rows:
            d = dict(r)
            d["argv"] = json.loads(d["argv"])
            for k in ("created_at", "last_fire"):
                if d[k] is not None:
                    d[k] = _aware(d[k])
            out.append(d)
        return out

    def claim_fire(self, name: str, fire: datetime, run_id: str) -> bool:
        """Claim the fire at ``fire`` for ``run_id``: True for exactly one caller."""
        with self.engine.begin() as c:
            result = c.execute(schedules.update().where(
                schedules.c.name == name,
                sa.or_(schedules.c.last_fire.is_(None), schedules.c.last_fire < fire),
            ).values(last_fire=fire, last_run_id=run_id))
            return result.rowcount == 1


TABLES_LOCK = "ferry.batch.schema"
"""The name of the lock held while the ``batch_*`` tables are created (``ferry._dblock``)."""


def create_tables(engine: sa.Engine) -> bool:
    """Create the ``batch_*`` tables this store lacks, under ``TABLES_LOCK``, so processes
    opening one store at once (servers running schedules, ``ferry batch``) never race to
    create the same table. Returns whether this call created any."""
    from ferry._dblock import migrate_once

    def missing(conn: sa.Connection) -> bool:
        have = set(sa.inspect(conn).get_table_names())
        return any(t.name not in have for t in metadata.sorted_tables)

    return migrate_once(engine, TABLES_LOCK, missing, metadata.create_all)


def _record(row: Any) -> RunRecord:
    d = dict(row._mapping)
    d["job"] = json.loads(d["job"])
    for k in ("started_at", "updated_at", "ended_at"):
        if d[k] is not None:
            d[k] = _aware(d[k])
    return RunRecord(**d)
