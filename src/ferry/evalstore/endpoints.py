"""Endpoint policies and their events in the evaluation store (tables ``endpoint_policies``
and ``endpoint_events``, schema v4). Blocking calls: the caller runs them off the event
loop. Policies are kept as JSON documents (``routing.policies``' ``to_json``); this module
does not interpret them.

Promises: ``save`` writes the policy row and its event in one transaction, so a policy is
never changed without its event; ``last_change`` is one indexed ``max(id)``, cheap enough
to poll every second from each server sharing the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, delete, func, select

from ferry.evalstore.schema import endpoint_events, endpoint_policies


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    model: str
    policy: dict[str, Any]
    stable: dict[str, Any]
    revision: int
    updated: float


@dataclass(frozen=True, slots=True)
class Event:
    """One change of an endpoint: what, why, by whom, from where."""

    model: str
    action: str
    policy: dict[str, Any] | None
    previous: dict[str, Any] | None
    reason: str | None
    actor: str
    client: str | None = None
    notes: tuple[str, ...] = ()

    def row(self) -> dict[str, Any]:
        return {"model": self.model, "ts": time.time(), "action": self.action,
                "policy": _dump(self.policy), "previous": _dump(self.previous),
                "reason": self.reason, "actor": self.actor[:128], "client": self.client,
                "notes": _dump(list(self.notes)) if self.notes else None}


def _dump(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _load(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


class EndpointStore:
    """Reads and writes endpoint policies and events on one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def load_all(self) -> dict[str, StoredPolicy]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(endpoint_policies)).all()
        return {r.model: StoredPolicy(r.model, orjson.loads(r.policy), orjson.loads(r.stable),
                                      r.revision, r.updated) for r in rows}

    def save(self, model: str, policy: dict[str, Any] | None, stable: dict[str, Any] | None,
             event: Event) -> tuple[int, int]:
        """Write (or with ``policy`` None, delete) the model's row and its event; returns
        the new revision and the event id."""
        t = endpoint_policies
        with self.engine.begin() as conn:
            current = conn.execute(select(t.c.revision).where(t.c.model == model)).scalar()
            revision = (current or 0) + 1
            conn.execute(delete(t).where(t.c.model == model))
            if policy is not None:
                conn.execute(t.insert(), {"model": model, "policy": _dump(policy),
                                          "stable": _dump(stable or policy),
                                          "revision": revision, "updated": time.time()})
            key = conn.execute(endpoint_events.insert().values(**event.row())
                               ).inserted_primary_key
        return revision, int(key[0]) if key else 0

    def record(self, event: Event) -> int:
        """An event that changes no policy (a version gone from a split)."""
        with self.engine.begin() as conn:
            key = conn.execute(endpoint_events.insert().values(**event.row())
                               ).inserted_primary_key
        return int(key[0]) if key else 0

    def events(self, model: str, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` events of a model, newest first."""
        e = endpoint_events
        with self.engine.connect() as conn:
            rows = conn.execute(select(e).where(e.c.model == model).order_by(e.c.id.desc())
                                .limit(limit)).all()
        return [{"id": r.id, "ts": r.ts, "action": r.action, "policy": _load(r.policy),
                 "previous": _load(r.previous), "reason": r.reason, "actor": r.actor,
                 "client": r.client, "notes": _load(r.notes) or []} for r in rows]

    def last_change(self) -> int:
        """The id of the newest event (0 when none): changes when any server changes a
        policy."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(endpoint_events.c.id))).scalar() or 0)
