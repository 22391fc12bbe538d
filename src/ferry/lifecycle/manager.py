"""ModelManager: makes what the repository says should be live, live, and hands out versions.

A reconcile pass scans the repository (or one model), asks ``policy.plan`` what to do per
model and applies it: loads first (a new version loads and warms up while the old one keeps
serving), then swaps, then unloads (in-flight requests on the old version finish first).
Passes for one model are serialised by a per-model lock; different models reconcile
independently. A poll loop repeats the pass every ``poll_s`` seconds and backs off while the
storage is unreachable, serving what is loaded meanwhile.

Promises: ``get`` never blocks and raises ``ModelNotFound``, ``VersionNotFound`` or
``ModelNotReady``; a version that failed to load is reported, never served, never replaces
a working one, and never stops the rest of the repository from serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ferry.errors import (ManifestError, ModelLoadError, ModelNotFound, ModelNotReady,
                          RepositoryError, VersionNotFound)
from ferry.lifecycle.harness import VersionHarness
from ferry.lifecycle.policy import Forget, Load, Unload, VersionSnapshot, plan
from ferry.lifecycle.states import VersionState
from ferry.manifest import overlay
from ferry.monitoring.metrics import Metrics
from ferry.repository.layout import ModelEntry, scan_model
from ferry.repository.storage import ArtifactStorage, open_storage
from ferry.repository.version_policy import aspired_versions

log = logging.getLogger("ferry.lifecycle")


@dataclass
class ServedModel:
    """A model folder and the harnesses of its versions."""

    entry: ModelEntry
    versions: dict[int, VersionHarness] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    """Version -> fingerprint whose load failed (retried only when the files change)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    unloaded_by_api: bool = False
    override: dict[str, Any] | None = None
    """Manifest settings from the last API load's configuration override, laid over the
    model's manifest on every pass until a load without one."""

    @property
    def name(self) -> str:
        return self.entry.name

    def latest_ready(self) -> VersionHarness | None:
        for number in sorted(self.versions, reverse=True):
            if self.versions[number].ready:
                return self.versions[number]
        return None


class ModelManager:
    """Owns every model's harnesses."""

    def __init__(self, repository: Path | str | ArtifactStorage, metrics: Metrics,
                 trust_pickles: bool = False) -> None:
        self.storage = (repository if isinstance(repository, ArtifactStorage)
                        else open_storage(repository))
        self.root = repository
        self.metrics = metrics
        self.trust_pickles = trust_pickles
        self.models: dict[str, ServedModel] = {}
        self.started = False
        self.storage_error: str | None = None
        self.known_models: list[str] = []
        """Model folders seen by the last scan (served or not)."""
        self._retiring: set[asyncio.Task[None]] = set()

    # -- reconciling ---------------------------------------------------------------------
    async def load_all(self, only: list[str] | None = None) -> None:
        """First pass: every model (or only the named ones, for explicit model control)."""
        await self.reconcile(only)
        self.started = True

    async def reconcile(self, only: list[str] | None = None) -> None:
        """Scan the repository and apply the policy to every model (or ``only`` these).
        Raises ``OSError`` when the storage cannot be listed."""
        loop = asyncio.get_running_loop()
        names = await loop.run_in_executor(None, self.storage.list_models)
        self.storage_error = None
        self.known_models = list(names)
        targets = set(names) if only is None else set(only)
        if only is None:
            targets |= set(self.models)
        await asyncio.gather(*(self.reconcile_model(n, n in names) for n in sorted(targets)))

    async def reconcile_model(self, name: str, exists: bool = True,
                              api_load: bool = False, override: dict[str, Any] | None = None
                              ) -> ServedModel | None:
        """One pass for one model; returns its entry (None when it is gone). An API load
        (``api_load``) sets the model's configuration ``override`` (None clears it)."""
        served = self.models.get(name)
        if served is None:
            if not exists:
                return None
            served = self.models[name] = ServedModel(ModelEntry(name, Path(name), None))
        async with served.lock:
            if api_load:
                served.unloaded_by_api = False
                served.failed.clear()
                served.override = override
            entry = None
            if exists:
                loop = asyncio.get_running_loop()
                entry = await loop.run_in_executor(None, scan_model, self.storage, name)
                if served.override is not None:
                    _apply_override(entry, served.override)
                served.entry = entry
                if entry.skipped:
                    log.warning("model %s: ignoring folder(s) %s (versions are integers)",
                                name, entry.skipped)
                if entry.manifest is None:
                    log.error("model %s cannot be served: %s", name, entry.error)
            removed = entry is None or served.unloaded_by_api
            aspired: dict[int, str] = {}
            if entry is not None and entry.manifest is not None:
                for v in aspired_versions(entry.versions, entry.manifest.version_policy):
                    aspired[v] = entry.fingerprints[v]
            present = set(entry.versions) if entry is not None else set()
            snapshot = [VersionSnapshot(h.version, h.state, h.fingerprint)
                        for h in served.versions.values()]
            for action in plan(aspired, snapshot, present, removed, served.failed):
                if isinstance(action, Load) and entry is not None:
                    await self._load(served, entry, action)
                elif isinstance(action, Unload):
                    await self._retire(served, action.version)
                elif isinstance(action, Forget):
                    served.versions.pop(action.version, None)
            if entry is None and not served.versions:
                self.models.pop(name, None)
                return None
            return served

    async def _load(self, served: ServedModel, entry: ModelEntry, action: Load) -> None:
        assert entry.manifest is not None  # noqa: S101 - aspired implies a manifest
        version = action.version
        harness = VersionHarness(entry.name, version, entry.versions[version], entry.manifest,
                                 self.metrics.version(entry.name, version), self.trust_pickles,
                                 action.fingerprint, entry.storage)
        old = served.versions.get(version)
        if old is None or not old.ready:
            served.versions[version] = harness  # visible as LOADING in the index
        try:
            await harness.load()
        except ModelLoadError:
            self.metrics.load_failures.labels(entry.name).inc()
            served.failed[version] = action.fingerprint
            if old is not None and old.ready:
                old.reason = f"a replacement failed to load: {harness.reason}"
            return
        served.failed.pop(version, None)
        served.versions[version] = harness
        if old is not None and old is not harness and old.ready:
            self._retire_later(old)

    async def _retire(self, served: ServedModel, version: int) -> None:
        harness = served.versions.pop(version, None)
        if harness is not None:
            self._retire_later(harness)

    def _retire_later(self, harness: VersionHarness) -> None:
        """Unload in the background: the version is no longer handed out, and its queue
        drains while new requests go to the version that replaced it."""
        task = asyncio.get_running_loop().create_task(harness.unload())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def poll(self, interval: float, max_backoff: float = 60.0) -> None:
        """Reconcile every ``interval`` seconds until cancelled; back off on storage errors."""
        delay = interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self.reconcile()
                delay = interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # storage clients raise their own types, not just OSError
                self.storage_error = f"{type(exc).__name__}: {exc}"
                self.metrics.repository_errors.inc()
                delay = min(max(delay * 2, interval), max_backoff)
                log.warning("repository %s unreachable (%s); serving what is loaded, next try "
                            "in %.0f s", self.storage.uri, self.storage_error, delay)

    # -- the repository API ----------------------------------------------------------------
    async def load_model(self, name: str, override: dict[str, Any] | None = None
                         ) -> ServedModel:
        """Load (or reload) one model from the repository; ``RepositoryError`` if it has no
        live version afterwards, ``ModelNotFound`` if its folder does not exist.

        ``override``: manifest settings (a configuration override) for this load and the
        passes after it, until a load without one. An override that does not validate, or
        with which a version fails to load, is a ``RepositoryError`` ("failed to load") and
        the model keeps serving as before."""
        loop = asyncio.get_running_loop()
        try:
            names = await loop.run_in_executor(None, self.storage.list_models)
        except Exception as exc:
            raise RepositoryError(f"repository {self.storage.uri} unreachable: {exc}") from None
        if name not in names:
            raise ModelNotFound(f"failed to load '{name}': no model folder {name!r} in "
                                f"{self.storage.uri}; models: {names}")
        if override is not None:
            return await self._load_with_override(name, override)
        served = await self.reconcile_model(name, True, api_load=True)
        return self._loaded(name, served)

    async def _load_with_override(self, name: str, override: dict[str, Any]) -> ServedModel:
        loop = asyncio.get_running_loop()
        entry = await loop.run_in_executor(None, scan_model, self.storage, name)
        if entry.manifest is not None:
            try:
                overlay(entry.manifest, override, "configuration override")
            except ManifestError as exc:
                raise RepositoryError(f"failed to load {name!r}: {exc.message}") from None
        before = self.models.get(name)
        previous = (before.override, before.unloaded_by_api) if before else (None, True)
        served = await self.reconcile_model(name, True, api_load=True, override=override)
        failed = [] if served is None else _not_loaded(served)
        if served is not None and failed:
            served.override, served.unloaded_by_api = previous
            await self.reconcile_model(name, True)  # back to what served before
            raise RepositoryError(f"failed to load {name!r}: " + "; ".join(failed))
        if served is not None:  # a second pass retires versions the override no longer aspires
            served = await self.reconcile_model(name, True)
        return self._loaded(name, served)

    @staticmethod
    def _loaded(name: str, served: ServedModel | None) -> ServedModel:
        if served is None or served.latest_ready() is None:
            reasons = [] if served is None else [
                f"v{h.version}: {h.reason}" for h in served.versions.values() if h.reason]
            if served is not None and served.entry.error:
                reasons.append(served.entry.error)
            raise RepositoryError(f"failed to load '{name}': " + ("; ".join(reasons)
                                                                   or "no version folders"))
        return served

    async def unload_model(self, name: str) -> None:
        """Unload every version; the poller leaves the model alone until it is loaded again."""
        served = self.model(name)
        served.unloaded_by_api = True
        await self.reconcile_model(name, exists=True)
        if self._retiring:
            await asyncio.gather(*list(self._retiring))

    # -- lookups -------------------------------------------------------------------------
    def model(self, name: str) -> ServedModel:
        served = self.models.get(name)
        if served is None:
            # worded as Triton words it: its clients and tests match the start
            raise ModelNotFound(f"Request for unknown model: '{name}' is not found; served "
                                f"models: {sorted(self.models) or 'none'}")
        return served

    def get(self, name: str, version: int | None = None) -> VersionHarness:
        """The version to run: a specific one, or the newest ready one."""
        served = self.model(name)
        if version is None:
            harness = served.latest_ready()
            if harness is None:
                reasons = "; ".join(f"v{h.version}: {h.reason}" for h in served.versions.values()
                                    if h.reason)
                raise ModelNotReady(f"model {name!r} has no ready version"
                                    + (f" ({reasons})" if reasons else "")
                                    + (f" ({served.entry.error})" if served.entry.error else "")
                                    + (" (unloaded)" if served.unloaded_by_api else ""))
            return harness
        harness = served.versions.get(version)
        if harness is None:
            raise VersionNotFound(f"Request for unknown model: '{name}' version {version} is "
                                  f"not found; served versions: {sorted(served.versions)}")
        if not harness.ready:
            raise ModelNotReady(f"model {name!r} version {version} is {harness.state.value}"
                                + (f": {harness.reason}" if harness.reason else ""))
        return harness

    def ready(self) -> bool:
        """True once the first pass finished and every aspired version is live."""
        return self.started and all(
            h.state is VersionState.READY or m.unloaded_by_api
            for m in self.models.values() for h in m.versions.values()) and all(
            m.entry.error is None for m in self.models.values())

    async def close(self) -> None:
        if self._retiring:
            await asyncio.gather(*list(self._retiring))
        for served in self.models.values():
            for harness in list(served.versions.values()):
                await harness.unload()


def _apply_override(entry: ModelEntry, settings: dict[str, Any]) -> None:
    """Lay a configuration override over the entry's manifest; its digest joins each
    version's fingerprint, so a new override reloads the versions (load before unload)."""
    if entry.manifest is None:
        return
    try:
        entry.manifest = overlay(entry.manifest, settings, "configuration override")
    except ManifestError as exc:  # model.yaml changed under the override
        entry.manifest, entry.error = None, exc.message
        return
    digest = hashlib.sha1(orjson.dumps(settings, option=orjson.OPT_SORT_KEYS),
                          usedforsecurity=False).hexdigest()[:8]
    entry.fingerprints = {v: f"{fp}-o{digest}" for v, fp in entry.fingerprints.items()}


def _not_loaded(served: ServedModel) -> list[str]:
    """Why the aspired versions of the model's entry are not all live with its files and
    settings (empty when they are)."""
    entry = served.entry
    if entry.manifest is None:
        return [entry.error or "no manifest"]
    problems = []
    for version in aspired_versions(entry.versions, entry.manifest.version_policy):
        harness = served.versions.get(version)
        if harness is None or not harness.ready or (
                harness.fingerprint != entry.fingerprints[version]):
            reason = harness.reason if harness is not None else "not loaded"
            problems.append(f"v{version}: {reason}")
    return problems or ([] if served.latest_ready() else ["no version folders"])
