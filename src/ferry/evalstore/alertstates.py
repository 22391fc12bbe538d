"""Alert state in the store: the rows ``monitoring.firing.decide`` reads and the claims that
apply its decisions, so replicas on one store notify each alert change once.

``claim`` is a compare-and-set on the row's ``seq`` (an insert for an alert without a row):
exactly one of the replicas that read the same row wins, as ``RunStore.claim_fire`` does
for batch schedules. The winner holds the row's lease until ``delivered`` or ``failed``
ends it; each is again conditioned on the ``seq`` it won, so a late sender never
overwrites a newer claim. Each call is its own short transaction; safe from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from ferry.evalstore.schema import alert_states
from ferry.monitoring.firing import Stored


@dataclass(frozen=True)
class AlertRow:
    stored: Stored
    seq: int
    event: dict[str, Any]
    """The notification of the current status (sent, or to send again)."""


def load(engine: Engine, model: str, alert: str) -> AlertRow | None:
    c = alert_states.c
    with engine.connect() as conn:
        row = conn.execute(select(alert_states).where(c.model == model, c.alert == alert)
                           ).mappings().first()
    if row is None:
        return None
    return AlertRow(Stored(row["status"] == "firing", bool(row["notified"]),
                           float(row["lease_until"]), float(row["judged"])),
                    int(row["seq"]), orjson.loads(row["event"]))


def claim(engine: Engine, model: str, alert: str, seen: AlertRow | None, *, firing: bool,
          judged: float, value: float | None, event: dict[str, Any], notified: bool,
          now: float, lease_s: float, owner: str) -> int | None:
    """Move the alert to ``firing`` with ``event`` as its notification, if the row is still
    what ``seen`` says. Returns the new ``seq`` when this call won, else None.

    ``notified``: nothing to send (no webhook), so no lease is taken."""
    values = {"status": "firing" if firing else "resolved", "judged": judged, "value": value,
              "event": orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
              "notified": notified,
              "notified_at": now if notified else None,
              "lease_until": 0.0 if notified else now + lease_s, "lease_owner": owner}
    c = alert_states.c
    try:
        with engine.begin() as conn:
            if seen is None:
                conn.execute(alert_states.insert(), {"model": model, "alert": alert,
                                                     "since": now, "seq": 1, **values})
                return 1
            if seen.stored.firing != firing:
                values["since"] = now
            done = conn.execute(update(alert_states).where(
                c.model == model, c.alert == alert, c.seq == seen.seq).values(
                seq=seen.seq + 1, **values))
            return seen.seq + 1 if done.rowcount == 1 else None
    except IntegrityError:  # another replica inserted the row first
        return None


def delivered(engine: Engine, model: str, alert: str, seq: int, now: float) -> None:
    """The notification claimed as ``seq`` went out: end the lease."""
    _end_lease(engine, model, alert, seq, notified=True, notified_at=now)


def failed(engine: Engine, model: str, alert: str, seq: int) -> None:
    """The notification claimed as ``seq`` did not go out: end the lease so the next pass
    (of any replica) sends it again."""
    _end_lease(engine, model, alert, seq)


def _end_lease(engine: Engine, model: str, alert: str, seq: int, **values: Any) -> None:
    c = alert_states.c
    with engine.begin() as conn:
        conn.execute(update(alert_states).where(
            c.model == model, c.alert == alert, c.seq == seq).values(lease_until=0.0,
                                                                       **values))
