"""Server-made request ids as ranges, so that they need no index row per request.

A Ferry server names a request the client did not name ``<8 hex digits>-<counter>``: a
random prefix per process and a counter (``protocols/identity.py``). The ids of one stored
batch then mostly share one prefix, and their counters lie in a narrow range. A batch
stores that range (``id_prefix``, ``id_lo``, ``id_hi``); the feedback path finds a
server-made id by looking for batches whose range holds its counter and checking their id
lists (``evalstore.feedback``). Only the other ids (those clients chose, or another
prefix) get ``prediction_index`` rows when the batch is written.

The check is by form, not by origin: a client that sends an id of this form (e.g. one a
Ferry server returned earlier) is handled the same way, and found the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_FORM = re.compile(r"([0-9a-f]{8})-([0-9]{1,18})")
_PREFIX = 9
"""Length of ``"xxxxxxxx-"``."""
_MAX = _PREFIX + 18


@dataclass(frozen=True, slots=True)
class IdRanges:
    """The server-made ids of one batch: their prefix and counter range, and the positions
    of the other ids (which need index rows)."""

    prefix: str | None
    lo: int | None
    hi: int | None
    rest: list[int]


def parse(request_id: str) -> tuple[str, int] | None:
    """``(prefix, counter)`` of a server-made id, else None."""
    m = _FORM.fullmatch(request_id)
    return None if m is None else (m.group(1), int(m.group(2)))


def ranges(ids: list[str]) -> IdRanges:
    """The ranges of ``ids`` (record order). When every id has the first id's prefix (one
    server's traffic without client ids: the usual case), this is a few C-level string
    passes and one ``np.fromstring``, ~0.1 µs per id; otherwise one regex match per id."""
    n = len(ids)
    if not n:
        return IdRanges(None, None, None, [])
    first = parse(ids[0])
    if first is not None:
        head = ids[0][:_PREFIX]
        joined = "\n".join(ids)
        if (joined.count(head) == n and ("\n" + joined).count("\n" + head) == n
                and min(map(len, ids)) > _PREFIX and max(map(len, ids)) <= _MAX):
            digits = joined.replace(head, "")
            if digits.isascii() and digits.replace("\n", "").isdigit():
                counters = np.fromstring(digits, dtype=np.int64, sep="\n")
                if len(counters) != n:  # cannot happen for validated digits; be safe
                    counters = np.array([int(i[_PREFIX:]) for i in ids], dtype=np.int64)
                return IdRanges(first[0], int(counters.min()), int(counters.max()), [])
    prefix: str | None = None
    lo = hi = 0
    rest: list[int] = []
    for i, rid in enumerate(ids):
        parsed = parse(rid)
        if parsed is not None and prefix is None:
            prefix, lo, hi = parsed[0], parsed[1], parsed[1]
        elif parsed is not None and parsed[0] == prefix:
            lo, hi = min(lo, parsed[1]), max(hi, parsed[1])
        else:
            rest.append(i)
    return IdRanges(prefix, lo if prefix else None, hi if prefix else None, rest)
