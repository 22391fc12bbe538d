"""``EndpointControl``: the protocol-neutral service behind ``/ferry/v1/endpoints`` and
``ferry rollout``: read endpoints, set a policy, roll back, list events; keep the policies
in the evaluation store and follow changes made by other servers sharing it.

Promises:
- A policy is validated against the versions live in this process (``policies.validate``)
  before anything is written; a rejected one changes nothing.
- A change is written to the store (policy row and event, one transaction) *before* it is
  applied; when the store cannot be reached the call fails with ``StoreUnavailable`` and
  nothing changes. Without a store (``--store none``) policies live in memory only.
- Control calls are serialised in a process (one lock): the last one wins, each is an event.
- **Rollback** returns to the endpoint's stable policy: the last ``pin`` in force before the
  current policy, with ``pin latest`` resolved to the version it served at that moment (so
  rolling back from a split of 2 and 3 pins 2, not the newest). If that version is not live
  any more, rollback pins the latest ready version and says so in the event's notes.
- **Several servers on one store**: each polls ``EndpointStore.last_change`` (one indexed
  ``max(id)``) every ``poll_s`` seconds on a worker thread and reloads the policies when it
  moved, so a change made through one server applies on the others within about
  ``poll_s`` plus a query.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from ferry.errors import InvalidPolicy, StoreUnavailable
from ferry.evalstore.endpoints import EndpointStore, Event, StoredPolicy
from ferry.routing.endpoints import Endpoint, Endpoints
from ferry.routing.policies import (DEFAULT, Pin, Policy, describe, from_json, policy_of,
                                    validate)

log = logging.getLogger("ferry.routing")


class EndpointControl:
    """Control of every endpoint of one server (see the module docstring)."""

    def __init__(self, endpoints: Endpoints, store: EndpointStore | None = None,
                 poll_s: float = 1.0) -> None:
        self.endpoints = endpoints
        self.store = store
        self.poll_s = poll_s
        self._lock = asyncio.Lock()
        self._memory_events: dict[str, collections.deque[dict[str, Any]]] = {}
        self._next_memory_id = 1
        self._seen = -1
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        endpoints.on_live_change = self._live_changed

    # -- start, stop, follow the store ------------------------------------------------------
    async def start(self) -> None:
        """Apply the stored policies, then follow the store's changes."""
        if self.store is not None:
            try:
                await self._sync()
            except Exception as exc:  # a store down at start: defaults, retried by polls
                log.warning("endpoint policies not loaded (%s: %s); serving the default "
                            "policy until the store answers", type(exc).__name__, exc)
        self.endpoints.update_gauges()
        if self.poll_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            self.endpoints.update_gauges()  # versions come and go under ``pin latest``
            if self.store is None:
                continue
            try:
                await self._sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("endpoint poll failed: %s", exc)

    async def _sync(self) -> None:
        """Reload the stored policies when the store's change counter moved."""
        store = self.store
        assert store is not None  # noqa: S101 - only called with a store
        loop = asyncio.get_running_loop()
        last = await loop.run_in_executor(None, store.last_change)
        if last == self._seen:
            return
        stored = await loop.run_in_executor(None, store.load_all)
        async with self._lock:
            self._apply_stored(stored)
            self._seen = last

    def _apply_stored(self, stored: dict[str, StoredPolicy]) -> None:
        for name, row in stored.items():
            if self.endpoints.get(name).revision == row.revision:
                continue
            try:
                endpoint = Endpoint(name, policy_of(row.policy), policy_of(row.stable),
                                    row.revision)
            except InvalidPolicy as exc:  # a newer Ferry's policy kind: keep serving
                log.error("endpoint %s: stored policy not understood (%s)", name, exc.message)
                continue
            self.endpoints.apply(endpoint)
        for name, endpoint in list(self.endpoints.endpoints.items()):
            if name not in stored and endpoint.revision:  # reset to the default elsewhere
                self.endpoints.apply(Endpoint(name, DEFAULT, DEFAULT, 0))

    # -- reads -------------------------------------------------------------------------------
    def status(self, name: str) -> dict[str, Any]:
        """An endpoint's policy, stable policy, live versions and traffic shares now."""
        self.endpoints.manager.model(name)  # ModelNotFound for unknown names
        endpoint = self.endpoints.get(name)
        return {"model": name, "policy": endpoint.policy.to_json(),
                "describe": describe(endpoint.policy), "stable": endpoint.stable.to_json(),
                "revision": endpoint.revision,
                "live_versions": self.endpoints.live_versions(name),
                "latest": self.endpoints.latest(name),
                "shares": {str(v): round(s, 6)
                           for v, s in self.endpoints.shares(name).items()},
                "notes": list(endpoint.notes)}

    def all(self) -> list[dict[str, Any]]:
        """Every served model's endpoint status."""
        names = sorted(set(self.endpoints.manager.models))
        return [self.status(n) for n in names]

    async def events(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        self.endpoints.manager.model(name)
        if self.store is None:
            return list(self._memory_events.get(name, ()))[:limit]
        store = self.store
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, store.events, name, limit)
        except Exception as exc:
            raise StoreUnavailable(f"endpoint events cannot be read: {exc}") from None

    # -- changes -----------------------------------------------------------------------------
    async def set(self, name: str, doc: Any, actor: str, client: str | None,
                  reason: str | None = None) -> dict[str, Any]:
        """Validate, persist and apply a policy given as JSON; the status and ``notes``."""
        self.endpoints.manager.model(name)
        policy, notes = validate(from_json(doc), self.endpoints.live_versions(name))
        async with self._lock:
            current = self.endpoints.get(name)
            stable = self._resolved(name, current.policy) if current.policy.stable() \
                else current.stable
            await self._commit(Endpoint(name, policy, stable, current.revision, notes),
                               Event(name, "set", policy.to_json(), current.policy.to_json(),
                                     reason, actor, client, tuple(notes)))
        return {**self.status(name), "notes": notes}

    async def rollback(self, name: str, actor: str, client: str | None,
                       reason: str | None = None) -> dict[str, Any]:
        """Back to the stable policy, from the next request on."""
        self.endpoints.manager.model(name)
        async with self._lock:
            current = self.endpoints.get(name)
            target: Policy = current.stable
            notes: list[str] = []
            live = self.endpoints.live_versions(name)
            if isinstance(target, Pin) and target.version is not None \
                    and target.version not in live:
                notes.append(f"stable version {target.version} is not live (live: {live}); "
                             f"pinned the latest ready version instead")
                target = Pin(None)
            if current.policy == target:
                notes.append("already on the stable policy")
            await self._commit(Endpoint(name, target, target, current.revision, notes),
                               Event(name, "rollback", target.to_json(),
                                     current.policy.to_json(), reason, actor, client,
                                     tuple(notes)))
        return {**self.status(name), "notes": notes}

    def _resolved(self, name: str, policy: Policy) -> Policy:
        """``pin latest`` as the concrete version it serves now (rollback's target)."""
        if isinstance(policy, Pin) and policy.version is None:
            latest = self.endpoints.latest(name)
            return Pin(latest) if latest is not None else policy
        return policy

    async def _commit(self, endpoint: Endpoint, event: Event) -> None:
        if self.store is not None:
            store = self.store
            try:
                revision, _ = await asyncio.get_running_loop().run_in_executor(
                    None, store.save, endpoint.name, endpoint.policy.to_json(),
                    endpoint.stable.to_json(), event)
            except Exception as exc:
                raise StoreUnavailable(f"the policy was not changed: the evaluation store "
                                       f"cannot be written ({type(exc).__name__}: {exc})"
                                       ) from None
            endpoint.revision = revision
        else:
            endpoint.revision += 1
            self._remember(event)
        self.endpoints.apply(endpoint)

    def _remember(self, event: Event) -> None:
        events = self._memory_events.setdefault(event.model, collections.deque(maxlen=1000))
        row = event.row()
        events.appendleft({"id": self._next_memory_id, **row,
                           "policy": event.policy, "previous": event.previous,
                           "notes": list(event.notes)})
        self._next_memory_id += 1

    def _live_changed(self, name: str, gone: frozenset[int], back: frozenset[int]) -> None:
        """From the request path: record that versions left or rejoined a split."""
        policy = self.endpoints.get(name).policy.to_json()
        events = []
        if gone:
            events.append(Event(name, "version_gone", policy, None,
                                f"version(s) {sorted(gone)} not live: their share goes to "
                                f"the live versions of the split", "ferry", None))
        if back:
            events.append(Event(name, "version_back", policy, None,
                                f"version(s) {sorted(back)} live again: the split's weights "
                                f"apply again", "ferry", None))
        for event in events:
            if self.store is None:
                self._remember(event)
                continue
            future = asyncio.get_running_loop().run_in_executor(None, self._record, event)
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)

    def _record(self, event: Event) -> None:
        assert self.store is not None  # noqa: S101
        try:
            self.store.record(event)
        except Exception as exc:
            log.error("endpoint %s: event %s not recorded (%s)", event.model, event.action, exc)
