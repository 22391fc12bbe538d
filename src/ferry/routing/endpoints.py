"""``Endpoints``: each model name is an endpoint, bound to a policy and the target that runs
it. The dataplane reads ``targets`` (model name -> policy target) on every request that
names no version; an endpoint on the default policy (``pin latest``) has no entry there, so
its requests take the plain ``VersionTarget``, exactly the path Ferry had before routing.

Promises: ``apply`` swaps an endpoint's target with one dict assignment on the event loop
thread, so a request sees the old policy or the new one, never a mix, and the change (a
rollback too) applies to the next request; requests already queued finish on the version
they were sent to. Policies here are already validated (``routing.control`` validates and
persists them; this module only applies).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

from ferry.lifecycle.manager import ModelManager
from ferry.monitoring.metrics import Metrics
from ferry.routing.policies import DEFAULT, Pin, Policy, Split, describe, shares
from ferry.routing.split import SplitTarget
from ferry.routing.target import Target, VersionTarget

log = logging.getLogger("ferry.routing")


@dataclass(slots=True)
class Endpoint:
    """An endpoint's policy as applied in this process."""

    name: str
    policy: Policy = DEFAULT
    stable: Policy = DEFAULT
    """What a rollback returns to: the last ``pin`` in force before the current policy."""
    revision: int = 0
    """Counts the endpoint's changes in the store (0: never set)."""
    notes: list[str] = field(default_factory=list)


class Endpoints:
    """Every endpoint of this server and the targets that route their requests."""

    def __init__(self, manager: ModelManager, direct: VersionTarget,
                 metrics: Metrics | None = None, seed: int | None = None) -> None:
        self.manager = manager
        self.random = Random(seed).random
        """The splits' draws (``seed``: the same sequence every run, for tests)."""
        self.direct = direct
        """The plain version target: requests naming a version, and ``pin latest``."""
        self.metrics = metrics
        self.targets: dict[str, Target] = {}
        """Model name -> policy target, for endpoints not on the default policy."""
        self.endpoints: dict[str, Endpoint] = {}
        self.on_live_change: Callable[[str, frozenset[int], frozenset[int]], None] | None = None
        """Told when versions leave or rejoin a split (``routing.control`` records it)."""
        self._gauged: dict[str, set[str]] = {}

    def get(self, name: str) -> Endpoint:
        found = self.endpoints.get(name)
        return found if found is not None else Endpoint(name)

    def live_versions(self, name: str) -> list[int]:
        served = self.manager.models.get(name)
        if served is None:
            return []
        return sorted(v for v, h in list(served.versions.items()) if h.ready)

    def latest(self, name: str) -> int | None:
        served = self.manager.models.get(name)
        harness = None if served is None else served.latest_ready()
        return None if harness is None else harness.version

    def apply(self, endpoint: Endpoint) -> None:
        """Run ``endpoint.policy`` from the next request on."""
        name, policy = endpoint.name, endpoint.policy
        target = self._build(name, policy)
        self.endpoints[name] = endpoint
        if target is None:
            self.targets.pop(name, None)
        else:
            self.targets[name] = target
        log.info("endpoint %s: %s (revision %d)", name, describe(policy), endpoint.revision)
        self.update_gauge(name)

    def _build(self, name: str, policy: Policy) -> Target | None:
        if isinstance(policy, Pin):
            if policy.version is None:
                return None  # the default: the dataplane's plain version target
            policy = Split(((policy.version, 1.0),))  # a pin is a split of one version
        assert isinstance(policy, Split)  # noqa: S101 - the Policy union has two members
        d = self.direct
        children = {v: VersionTarget(d.manager, d.observers, d.default_timeout_s, v)
                    for v in policy.versions()}
        return SplitTarget(name, policy, children, d,
                           lambda gone, back: self._live_changed(name, gone, back),
                           self.random)

    def _live_changed(self, name: str, gone: frozenset[int], back: frozenset[int]) -> None:
        log.warning("endpoint %s: version(s) %s not live, %s live again; the split routes "
                    "over the live ones", name, sorted(gone) or "none", sorted(back) or "none")
        self.update_gauge(name)
        if self.on_live_change is not None:
            self.on_live_change(name, gone, back)

    def shares(self, name: str) -> dict[int, float]:
        """Each version's share of this endpoint's traffic now."""
        return shares(self.get(name).policy, self.live_versions(name), self.latest(name))

    def update_gauge(self, name: str) -> None:
        """``ferry_endpoint_traffic_share{model, version}`` from the shares now."""
        if self.metrics is None:
            return
        gauge = self.metrics.traffic_share
        now = {str(v): round(s, 9) for v, s in self.shares(name).items()}
        for stale in self._gauged.get(name, set()) - set(now):
            gauge.remove(name, stale)
        for version, share in now.items():
            gauge.labels(name, version).set(share)
        self._gauged[name] = set(now)

    def update_gauges(self) -> None:
        """Every served model's shares (a version loaded or unloaded changes ``pin latest``)."""
        for name in set(self.manager.models) | set(self.endpoints) | set(self._gauged):
            self.update_gauge(name)
