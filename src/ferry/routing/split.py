"""``SplitTarget``: a policy target that sends each request to one of its version targets
by weight (``policies.route`` over ``policies.plan``), sticky by a header when asked.

Per request: one draw (``random()``, or ``policies.point`` of the sticky header's value),
one bisect, and the chosen ``VersionTarget``'s ``infer``.

**A version that leaves the split** (unloaded, removed from the repository, failed): the
request that finds it gone is routed again with the same draw over the versions still live
(``policies.plan(weights, live)``: the gone version's share goes to the others in
proportion), and so are later requests that draw it, until it is live again. Keys that drew
a live version keep it: only the gone version's keys move, so sticky keys on the remaining
versions never switch. When no version of the split is live, the latest ready version
answers. Each change of the live set calls ``on_change(gone, back)`` once, which records an
event and updates the traffic-share gauge (``routing/endpoints.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from random import random

from ferry.errors import ModelNotReady, VersionNotFound
from ferry.routing.policies import Split, plan, point, route
from ferry.routing.target import VersionTarget
from ferry.types import InferRequest, InferResponse


class SplitTarget:
    """Weighted routing over version targets (see the module docstring)."""

    __slots__ = ("name", "split", "plan", "header", "children", "fallback", "missing",
                 "degraded", "on_change", "random")

    def __init__(self, name: str, split: Split, children: dict[int, VersionTarget],
                 fallback: VersionTarget,
                 on_change: Callable[[frozenset[int], frozenset[int]], None] | None = None,
                 draw: Callable[[], float] = random) -> None:
        self.name = name
        self.split = split
        self.plan = plan(split.weights)
        self.header = split.sticky_header
        self.children = children
        self.fallback = fallback
        """Answers when no version of the split is live (the latest ready version)."""
        self.missing: frozenset[int] = frozenset()
        """Versions of the split found not live; their share goes to the rest."""
        self.degraded = self.plan
        self.on_change = on_change
        self.random = draw
        """Uniform draws in [0, 1) for requests without a sticky key."""

    def draw(self, request: InferRequest) -> float:
        """The request's point in [0, 1): its sticky key's hash, else a random number."""
        header = self.header
        if header is not None and request.headers is not None:
            key = request.headers.get(header)
            if key:
                return point(key)
        return self.random()

    async def infer(self, request: InferRequest) -> InferResponse:
        draw = self.draw(request)
        version = route(self.plan, draw)
        if self.missing and version in self.missing:
            return await self._reroute(request, draw, version)
        try:
            return await self.children[version].infer(request)  # type: ignore[index]
        except (VersionNotFound, ModelNotReady):
            if self.children[version].ready(self.name):  # type: ignore[index]
                raise  # another reason (the model is loading); not a gone version
            return await self._reroute(request, draw, version)

    async def _reroute(self, request: InferRequest, draw: float, version: int | None
                       ) -> InferResponse:
        if self.children[version].ready(self.name):  # type: ignore[index]
            self._update()  # it is back
            return await self.children[version].infer(request)  # type: ignore[index]
        self._update()
        chosen = route(self.degraded, draw)
        if chosen is None:
            return await self.fallback.infer(request)
        return await self.children[chosen].infer(request)

    def _update(self) -> None:
        """Recompute the live set and the degraded plan; report a change."""
        live = [v for v, child in self.children.items() if child.ready(self.name)]
        missing = frozenset(self.children) - frozenset(live)
        if missing == self.missing:
            return
        gone, back = missing - self.missing, self.missing - missing
        self.missing = missing
        self.degraded = plan(self.split.weights, live)
        if self.on_change is not None:
            self.on_change(gone, back)
