"""Which request is this: the one rule that names an inference request, for REST V2, TF
Serving JSON and gRPC alike, and the W3C trace context that comes with it.

The rule (``request_id``): the ``ferry-request-id`` header (gRPC: metadata key), else the
``x-request-id`` header, else the V2 body's ``id``, else a server-made id. The protocols
return it (the ``ferry-request-id`` response header or gRPC initial metadata, and the V2
response ``id``) and the dataplane's observers store it (``InferenceRecord.id``), so
feedback can be joined to the prediction by it.

A server-made id is ``<8 hex digits>-<counter>``: a random prefix drawn once per process and
a counter, so it costs one ``next`` and one format. ``evalstore/requestids.py`` stores ids of
that form as counter ranges. A client's id must be 1 to 128 printable ASCII characters (it
goes back in a header or gRPC metadata, and the store keeps 128); anything else is a 400.

A ``traceparent`` (W3C Trace Context) is logged with the request id on the ``ferry.trace``
logger at DEBUG (``--log-level debug``); the protocols call ``log_traceparent`` only when the
header is present, so a request without one pays nothing for it.
"""

from __future__ import annotations

import itertools
import logging
import os
import re

from ferry.errors import MalformedRequest

REQUEST_ID_HEADER = "ferry-request-id"
"""Request header (gRPC metadata key) naming the request; the answer always carries it."""
X_REQUEST_ID_HEADER = "x-request-id"
"""The common proxy header, accepted when ``ferry-request-id`` is absent and echoed back
unchanged when sent."""
TRACEPARENT_HEADER = "traceparent"
MAX_ID_LENGTH = 128
"""The longest client id: the evaluation store's request id columns hold 128 characters."""

_PREFIX = os.urandom(4).hex()
_counter = itertools.count(1)

trace_log = logging.getLogger("ferry.trace")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def new_request_id() -> str:
    """A process-unique id: the process's random prefix and a counter."""
    return f"{_PREFIX}-{next(_counter)}"


def request_id(header_id: str | None, x_request_id: str | None, body_id: str | None) -> str:
    """The id of a request: the first of ``ferry-request-id``, ``x-request-id`` and the body
    ``id`` that is given (empty counts as absent), else a new one. ``MalformedRequest`` when
    the chosen id is longer than 128 characters or not printable ASCII."""
    rid = header_id or x_request_id or body_id
    if not rid:
        return f"{_PREFIX}-{next(_counter)}"
    if len(rid) > MAX_ID_LENGTH or not (rid.isascii() and rid.isprintable()):
        source = (REQUEST_ID_HEADER if header_id else
                  X_REQUEST_ID_HEADER if x_request_id else "the body's 'id'")
        raise MalformedRequest(f"request id in {source} must be 1 to {MAX_ID_LENGTH} printable "
                               f"ASCII characters (got {len(rid)} characters: {rid[:40]!r})")
    return rid


def valid_traceparent(value: str) -> bool:
    """True for a ``traceparent`` W3C Trace Context accepts: lower-case hex fields, version
    not ``ff``, trace id and parent id not all zeros; version ``00`` has exactly four fields,
    a later version may append more after a dash."""
    m = _TRACEPARENT.fullmatch(value)
    if m is None:
        return False
    version, trace_id, parent_id, _, rest = m.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return False
    return not (version == "00" and rest is not None)


def log_traceparent(traceparent: str, rid: str, model: str) -> None:
    """Log a request's trace context (call only when the header is present)."""
    if not trace_log.isEnabledFor(logging.DEBUG):
        return
    if valid_traceparent(traceparent):
        trace_log.debug("request %s model %s traceparent %s", rid, model, traceparent)
    else:
        trace_log.debug("request %s model %s: ignored an invalid traceparent %r", rid, model,
                        traceparent[:80])
