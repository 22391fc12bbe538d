"""What the HTTP server does with a connection whose deadline has passed (pure).

The sweeper in ``http.py`` calls ``verdict`` with the connection's state. A connection the
*client* keeps waiting (headers, body, keep-alive idle, a send buffer it does not read) is
closed, and the reason counted; a connection waiting on the *server* (its handler runs,
reading is paused by the server, the client waits for our ``100 Continue``, a reject waits
for its turn) is parked until the server moves on, which re-arms its deadline.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

IDLE, HEAD, BODY = 0, 1, 2
"""Where the parser is in the current request."""


class Action(Enum):
    WAIT_WRITE = "wait_write"
    """The send buffer is full but its timeout has not run out: look again at it."""
    PARK = "park"
    """The server is the one waited on: no deadline until it moves on."""
    CLOSE = "close"
    """Close now (after what is already written)."""
    REJECT_408 = "reject_408"
    """Answer the requests before it, then 408 and close."""


class Verdict(NamedTuple):
    action: Action
    reason: str | None = None
    """Counted in ``ferry_http_connections_closed_total{reason}``; None is not counted."""


def verdict(phase: int, busy: bool, closing: bool, reading_paused: bool, write_paused: bool,
            write_late: bool, continue_pending: bool) -> Verdict:
    """``busy``: a handler runs or requests wait in the pipeline queue; ``closing``: a reject
    was sent or is queued; ``write_late``: the send timeout has run out."""
    if write_paused:
        return Verdict(Action.CLOSE, "send_timeout") if write_late else Verdict(Action.WAIT_WRITE)
    if closing:  # a reject waits for the answers before it, else its linger is over
        return Verdict(Action.PARK) if busy else Verdict(Action.CLOSE)
    if reading_paused or (phase == BODY and continue_pending):
        return Verdict(Action.PARK)
    if phase != IDLE:  # late even while an earlier request runs
        reason = "header_timeout" if phase == HEAD else "body_timeout"
        return Verdict(Action.REJECT_408 if busy else Action.CLOSE, reason)
    return Verdict(Action.PARK) if busy else Verdict(Action.CLOSE, "idle_timeout")
