"""Routing policies as data, and every routing decision as a pure function of a snapshot.

A policy is what an operator sets on an endpoint (``ferry rollout fraud split 2=90 3=10``);
the deciders below turn a policy and a snapshot of the live versions into a decision, with
no clock, no randomness and no I/O, so their tests enumerate snapshots (as
``lifecycle/policy.py``'s do). The targets in ``routing/split.py`` apply the decisions.

- ``Pin(version)``: every request goes to ``version``; ``Pin(None)`` follows the latest
  ready version (the default of every endpoint, today's behaviour).
- ``Split(weights, sticky_header)``: each request goes to a version with probability
  proportional to its weight; with ``sticky_header`` the draw is the hash of that header's
  value (``point``), so a key keeps its version while the weights stay the same.

Deciders:

- ``validate(policy, live)``: the policy an endpoint will run (weights normalised to sum 1)
  and notes saying what was changed, or ``InvalidPolicy`` (unknown version: the message
  lists the live ones; negative, non-finite or all-zero weights).
- ``plan(split, live)``: the cumulative shares over the versions that are live; a version
  that is not live gives its share to the others in proportion; ``()`` when none is live.
- ``route(plan, draw)``: the version whose share interval holds ``draw`` in ``[0, 1)``.
- ``point(key)``: a sticky key's draw: blake2b of the UTF-8 key, 64 bits, over 2**64
  (stable across processes and restarts, unlike Python's salted ``hash``).

Later slices add their policies here in the same shape (``Canary(baseline, candidate,
steps, guards)``: a split whose weights a controller moves; ``Shadow(primary, shadows)``:
a pin plus mirrored versions; ``Bandit(arms, algo)``: a split whose weights come from the
posteriors; ``Ensemble(members, combine)``), each with its decider next to ``route``.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ferry.errors import InvalidPolicy

_SCALE = float(2 ** 64)


@dataclass(frozen=True, slots=True)
class Pin:
    """Every request to one version; ``None``: the latest ready version."""

    version: int | None = None

    kind = "pin"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "pin", "version": self.version}

    def stable(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Split:
    """Weighted traffic over versions, sorted by version; optionally sticky by a header."""

    weights: tuple[tuple[int, float], ...]
    sticky_header: str | None = None

    kind = "split"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "split", "weights": {str(v): w for v, w in self.weights},
                "sticky_header": self.sticky_header}

    def stable(self) -> bool:
        return False

    def versions(self) -> tuple[int, ...]:
        return tuple(v for v, _ in self.weights)


Policy = Pin | Split

DEFAULT = Pin(None)
"""An endpoint nobody configured: follow the latest ready version."""


def from_json(doc: Any) -> Policy:
    """A policy from its JSON form (the REST body and the store's column); ``InvalidPolicy``
    naming the field when it is not one."""
    if not isinstance(doc, dict):
        raise InvalidPolicy('policy must be a JSON object like {"kind": "pin", "version": 2} '
                            'or {"kind": "split", "weights": {"2": 90, "3": 10}}')
    kind = doc.get("kind")
    if kind == "pin":
        _only(doc, {"kind", "version"})
        version = doc.get("version")
        if version in (None, "latest"):
            return Pin(None)
        return Pin(_version(version, "version"))
    if kind == "split":
        _only(doc, {"kind", "weights", "sticky_header"})
        weights = doc.get("weights")
        if not isinstance(weights, dict) or not weights:
            raise InvalidPolicy('split needs "weights": an object of version -> weight, '
                                'like {"2": 90, "3": 10}')
        pairs = []
        for key, value in weights.items():
            number = _version(key, f"weights key {key!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidPolicy(f"weights[{key!r}] must be a number (got {value!r})")
            pairs.append((number, float(value)))
        header = doc.get("sticky_header")
        if header is not None and (not isinstance(header, str) or not header.strip()):
            raise InvalidPolicy("sticky_header must be a header name like 'x-user-id'")
        return Split(tuple(sorted(pairs)), header.strip().lower() if header else None)
    raise InvalidPolicy(f"policy kind {kind!r} is not known; kinds: pin, split "
                        f"(canary, shadow, bandit and ensemble are not built yet)")


def _only(doc: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(doc) - allowed)
    if extra:
        raise InvalidPolicy(f"unknown field(s) {extra} in a {doc['kind']} policy; fields: "
                            f"{sorted(allowed)}")


def _version(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise InvalidPolicy(f"{field} must be a version number (got {value!r})")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise InvalidPolicy(f"{field} must be a version number (got {value!r})")


def validate(policy: Policy, live: Iterable[int]) -> tuple[Policy, list[str]]:
    """The policy to run, weights normalised, and notes on what was changed; raises
    ``InvalidPolicy`` for a version that is not live (listing the live ones) and for
    weights that are negative, not finite, or all zero."""
    live_set = sorted(set(live))
    named = (() if policy.version is None else (policy.version,)) if isinstance(policy, Pin) \
        else policy.versions()
    missing = [v for v in named if v not in live_set]
    if missing:
        raise InvalidPolicy(f"version(s) {missing} are not loaded; live versions: "
                            f"{live_set or 'none'}")
    if isinstance(policy, Pin):
        return policy, []
    bad = [(v, w) for v, w in policy.weights if not math.isfinite(w) or w < 0]
    if bad:
        raise InvalidPolicy(f"weights must be finite and not negative; got "
                            f"{', '.join(f'{v}={w:g}' for v, w in bad)}")
    total = sum(w for _, w in policy.weights)
    if total <= 0:
        raise InvalidPolicy("weights are all zero; give at least one version a positive "
                            "weight")
    notes = []
    if abs(total - 1.0) > 1e-9:
        notes.append(f"weights normalised from a sum of {total:g} to 1")
    normal = tuple((v, w / total) for v, w in policy.weights)
    return Split(normal, policy.sticky_header), notes


Plan = tuple[tuple[float, ...], tuple[int, ...]]
"""Cumulative upper bounds of each version's share interval, and the versions."""


def plan(weights: Iterable[tuple[int, float]], live: Iterable[int] | None = None) -> Plan:
    """Cumulative shares over the live versions (all of them when ``live`` is None); the
    shares of versions that are not live go to the rest in proportion. Versions with weight
    zero get no interval. ``((), ())`` when nothing is left to route to."""
    allowed = None if live is None else set(live)
    kept = [(v, w) for v, w in weights if w > 0 and (allowed is None or v in allowed)]
    total = sum(w for _, w in kept)
    if total <= 0:
        return (), ()
    bounds, running = [], 0.0
    for _, w in kept:
        running += w / total
        bounds.append(running)
    bounds[-1] = 1.0  # no gap at the top from rounding
    return tuple(bounds), tuple(v for v, _ in kept)


def route(plan_: Plan, draw: float) -> int | None:
    """The version whose interval ``[previous bound, bound)`` holds ``draw`` (0 <= draw < 1);
    None for an empty plan."""
    bounds, versions = plan_
    if not versions:
        return None
    return versions[min(bisect.bisect_right(bounds, draw), len(versions) - 1)]


def point(key: str) -> float:
    """A sticky key's draw in [0, 1): 64 bits of blake2b over the UTF-8 key."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def shares(policy: Policy, live: Iterable[int], latest: int | None) -> dict[int, float]:
    """Each version's share of the traffic the policy sends now (for the status and the
    ``ferry_endpoint_traffic_share`` gauge), given the live versions and the latest."""
    live_list = list(live)
    if isinstance(policy, Pin):
        target = policy.version if policy.version in live_list else latest
        return {} if target is None else {target: 1.0}
    bounds, versions = plan(policy.weights, live_list)
    if not versions:
        return {} if latest is None else {latest: 1.0}
    out, low = {}, 0.0
    for bound, v in zip(bounds, versions, strict=True):
        out[v] = bound - low
        low = bound
    return out


def describe(policy: Policy) -> str:
    """One line for logs, events and the CLI: ``pin latest``, ``split 2=90% 3=10%``."""
    if isinstance(policy, Pin):
        return f"pin {'latest' if policy.version is None else policy.version}"
    parts = " ".join(f"{v}={w * 100:.4g}%" for v, w in policy.weights)
    return f"split {parts}" + (f" sticky by {policy.sticky_header}"
                               if policy.sticky_header else "")


def policy_of(doc: Mapping[str, Any] | None) -> Policy:
    """``from_json`` for a stored column (None: the default)."""
    return DEFAULT if doc is None else from_json(dict(doc))
