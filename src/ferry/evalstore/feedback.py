"""Feedback: labels and rewards joined to predictions by request id.

Contract: ``parse_feedback`` accepts ``{"request_id", "label"|"reward"}`` or
``{"feedback": [...]}`` and raises ``MalformedRequest`` naming the bad field. ``record``
first waits until the writer has written every id of the call that it still holds
(buffered, packed, in flight or spilled: it flushes at once, so this takes one write, not
a flush interval; ``StoreUnavailable`` if they cannot be written, e.g. the database went
down). Then it finds each id in the database: in ``prediction_index`` (ids clients chose,
and ids that already got feedback), else, for a server-made id (``requestids``), in the
batches whose id range holds its counter, and then adds its index rows so the joins
(``windows.read_window``) see it. Unknown ids: ``RequestNotFound`` listing them, and
nothing of the call is kept. Known ids are appended to ``feedback``; the newest row per id
wins when joining, and older ones stay (``duplicates`` in the answer counts ids that
already had feedback).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from ferry.errors import MalformedRequest, RequestNotFound, StoreUnavailable
from ferry.evalstore import requestids
from ferry.evalstore.schema import feedback, prediction_batches, prediction_index
from ferry.evalstore.writer import StoreWriter

MAX_ITEMS = 10_000


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    request_id: str
    label: Any = None
    reward: float | None = None


def _item(doc: Any, where: str) -> FeedbackItem:
    if not isinstance(doc, dict):
        raise MalformedRequest(f"{where} must be an object like "
                               f'{{"request_id": "r-1", "label": 1}}')
    unknown = sorted(set(doc) - {"request_id", "label", "reward"})
    if unknown:
        raise MalformedRequest(f"{where}: unknown field(s) {unknown}; allowed: request_id, "
                               f"label, reward")
    rid = doc.get("request_id")
    if not isinstance(rid, str) or not rid or len(rid) > 128:
        raise MalformedRequest(f"{where}.request_id must be a non-empty string of at most "
                               f"128 characters")
    if "label" not in doc and "reward" not in doc:
        raise MalformedRequest(f"{where} needs 'label' or 'reward'")
    reward = doc.get("reward")
    if reward is not None and (isinstance(reward, bool) or not isinstance(reward, int | float)
                               or not math.isfinite(reward)):
        raise MalformedRequest(f"{where}.reward must be a finite number")
    return FeedbackItem(rid, doc.get("label"), None if reward is None else float(reward))


def parse_feedback(body: bytes) -> list[FeedbackItem]:
    """The items of a feedback body (single or batch form)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"body is not valid JSON: {exc}") from None
    if isinstance(doc, dict) and "feedback" in doc:
        items = doc["feedback"]
        if not isinstance(items, list) or not items or len(items) > MAX_ITEMS:
            raise MalformedRequest(f"'feedback' must be a list of 1 to {MAX_ITEMS} objects")
        return [_item(d, f"feedback[{i}]") for i, d in enumerate(items)]
    return [_item(doc, "body")]


def _find_server_made(conn: Connection, request_id: str) -> bool:
    """Find a server-made id through the batches' id ranges and add its index rows (one
    per occurrence); False when no batch holds it."""
    parsed = requestids.parse(request_id)
    if parsed is None:
        return False
    prefix, counter = parsed
    b = prediction_batches.c
    rows = []
    for batch_id, ids_json in conn.execute(
            select(b.id, b.request_ids).where(b.id_prefix == prefix, b.id_hi >= counter,
                                              b.id_lo <= counter).order_by(b.id)):
        ids = orjson.loads(ids_json)
        rows += [{"request_id": request_id, "batch_id": batch_id, "position": i}
                 for i, rid in enumerate(ids) if rid == request_id]
    if not rows:
        return False
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):  # two feedback calls may race: first one wins
        insert = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(
            prediction_index).on_conflict_do_nothing()
        conn.execute(insert, rows)
    else:
        conn.execute(prediction_index.insert(), rows)
    return True


def record(engine: Engine, writer: StoreWriter | None, items: list[FeedbackItem],
           wait_s: float = 10.0) -> dict[str, Any]:
    """Validate and store ``items``; returns ``{"accepted", "duplicates"}``."""
    ids = list(dict.fromkeys(i.request_id for i in items))
    if writer is not None:
        unwritten = writer.wait_written(ids, wait_s)
        if unwritten:
            raise StoreUnavailable(f"{len(unwritten)} of these predictions are not written "
                                   f"yet (the evaluation store is unreachable: "
                                   f"{writer.last_error or 'writing'}); retry later")
    known: set[str] = set()
    with engine.begin() as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            known.update(conn.execute(select(prediction_index.c.request_id).where(
                prediction_index.c.request_id.in_(chunk)).distinct()).scalars())
        for rid in ids:
            if rid not in known and _find_server_made(conn, rid):
                known.add(rid)
        unknown = [i for i in ids if i not in known]
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10])
            raise RequestNotFound(f"no recorded prediction for request id(s) {shown}"
                                  + (f" and {len(unknown) - 10} more" if len(unknown) > 10
                                     else "")
                                  + "; send feedback only for requests this server answered "
                                    "(and sampled)")
        seen: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            seen.update(conn.execute(select(feedback.c.request_id).where(
                feedback.c.request_id.in_(chunk)).distinct()).scalars())
        now = time.time()
        conn.execute(feedback.insert(), [
            {"request_id": i.request_id, "ts": now, "reward": i.reward,
             "label": None if i.label is None else orjson.dumps(i.label).decode()}
            for i in items])
    duplicates = len(seen) + len(items) - len(ids)
    return {"accepted": len(items), "duplicates": duplicates}
