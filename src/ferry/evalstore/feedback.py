"""Feedback: labels and rewards joined to predictions by request id.

Contract: ``parse_feedback`` accepts ``{"request_id", "label"|"reward"}`` or
``{"feedback": [...]}`` and raises ``MalformedRequest`` naming the bad field. ``record``
checks every id against the writer (buffered, in flight, spilled) and then the database
(``prediction_index``), in that order: the writer only forgets a record after it is
committed, so a record is never missed in between. Unknown ids: ``RequestNotFound``
listing them, and nothing of the call is kept. Known ids are appended to ``feedback``; the
newest row per id wins when joining, and older ones stay (``duplicates`` in the answer
counts ids that already had feedback).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, select

from ferry.errors import MalformedRequest, RequestNotFound
from ferry.evalstore.schema import feedback, prediction_index
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


def record(engine: Engine, writer: StoreWriter | None, items: list[FeedbackItem]
           ) -> dict[str, Any]:
    """Validate and store ``items``; returns ``{"accepted", "duplicates"}``."""
    ids = list(dict.fromkeys(i.request_id for i in items))
    known = {i for i in ids if writer is not None and writer.pending(i)}
    rest = [i for i in ids if i not in known]
    with engine.begin() as conn:
        for start in range(0, len(rest), 500):
            chunk = rest[start:start + 500]
            known.update(conn.execute(select(prediction_index.c.request_id).where(
                prediction_index.c.request_id.in_(chunk)).distinct()).scalars())
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
