"""ModelManager: loads what the repository says should be live and hands out versions.

Today it loads once at start (the repository is read, each model's version policy picks
its versions, each is loaded); watching the repository and loading/unloading while
serving build on the same harnesses.

Promises: ``get`` never blocks and raises ``ModelNotFound``, ``VersionNotFound`` or
``ModelNotReady``; a version that failed to load is reported, never served, and never stops
the rest of the repository from serving.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ferry.errors import ModelLoadError, ModelNotFound, ModelNotReady, VersionNotFound
from ferry.lifecycle.harness import VersionHarness
from ferry.monitoring.metrics import Metrics
from ferry.repository.layout import ModelEntry, scan_repository
from ferry.repository.version_policy import aspired_versions

log = logging.getLogger("ferry.lifecycle")


@dataclass
class ServedModel:
    """A model folder and the harnesses of its aspired versions."""

    entry: ModelEntry
    versions: dict[int, VersionHarness] = field(default_factory=dict)

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

    def __init__(self, root: Path, metrics: Metrics, trust_pickles: bool = False) -> None:
        self.root = root
        self.metrics = metrics
        self.trust_pickles = trust_pickles
        self.models: dict[str, ServedModel] = {}
        self.started = False

    async def load_all(self) -> None:
        """Read the repository and load every aspired version, one at a time."""
        for name, entry in scan_repository(self.root).items():
            served = self.models[name] = ServedModel(entry)
            if entry.skipped:
                log.warning("model %s: ignoring folder(s) %s (version folders are integers)",
                            name, entry.skipped)
            if entry.manifest is None:
                log.error("model %s cannot be served: %s", name, entry.error)
                self.metrics.load_failures.labels(name).inc()
                continue
            for number in aspired_versions(entry.versions, entry.manifest.version_policy):
                harness = VersionHarness(name, number, entry.versions[number], entry.manifest,
                                         self.metrics.version(name, number), self.trust_pickles)
                served.versions[number] = harness
                try:
                    await harness.load()
                except ModelLoadError:
                    self.metrics.load_failures.labels(name).inc()
        self.started = True

    def model(self, name: str) -> ServedModel:
        served = self.models.get(name)
        if served is None:
            raise ModelNotFound(f"unknown model {name!r}; served models: "
                                f"{sorted(self.models) or 'none'}")
        return served

    def get(self, name: str, version: int | None = None) -> VersionHarness:
        """The version to run: a specific one, or the newest ready one."""
        served = self.model(name)
        if version is None:
            harness = served.latest_ready()
            if harness is None:
                reasons = "; ".join(f"v{h.version}: {h.reason}" for h in served.versions.values())
                raise ModelNotReady(f"model {name!r} has no ready version"
                                    + (f" ({reasons})" if reasons else "")
                                    + (f" ({served.entry.error})" if served.entry.error else ""))
            return harness
        harness = served.versions.get(version)
        if harness is None:
            raise VersionNotFound(f"model {name!r} has no served version {version}; served "
                                  f"versions: {sorted(served.versions)}")
        if not harness.ready:
            raise ModelNotReady(f"model {name!r} version {version} is {harness.state.value}"
                                + (f": {harness.reason}" if harness.reason else ""))
        return harness

    def ready(self) -> bool:
        """True once loading has finished and every aspired version is live."""
        return self.started and all(h.ready for m in self.models.values()
                                    for h in m.versions.values())

    async def close(self) -> None:
        for served in self.models.values():
            for harness in served.versions.values():
                await harness.unload()
