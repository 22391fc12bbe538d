"""VersionHarness: one version's runtime(s), scheduler, state and load record.

Promises: ``load`` runs the runtime's slow work on a worker thread and builds the instance
pool and batcher on the event loop; a failure leaves the harness ``UNAVAILABLE`` with the
reason, never half-live. ``unload`` stops taking requests, lets started batches finish,
then releases the runtime.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from ferry.errors import ModelLoadError, UntrustedArtifact
from ferry.lifecycle.states import VersionState, check_transition
from ferry.manifest import ModelManifest
from ferry.monitoring.metrics import VersionMetrics
from ferry.repository.layout import sha256_of
from ferry.runtimes.base import Runtime
from ferry.runtimes.registry import guess_runtime, runtime_class
from ferry.scheduler.batcher import DynamicBatcher
from ferry.scheduler.instances import InstancePool
from ferry.types import Signature

log = logging.getLogger("ferry.lifecycle")

DEFAULT_MAX_BATCH_SIZE = 64


class VersionHarness:
    """Holds one model version through its life."""

    def __init__(self, model: str, version: int, path: Path, manifest: ModelManifest,
                 metrics: VersionMetrics, trust_pickles: bool) -> None:
        self.model = model
        self.version = version
        self.path = path
        self.manifest = manifest
        self.metrics = metrics
        self.trust_pickles = trust_pickles
        self.state = VersionState.UNAVAILABLE
        self.reason = ""
        self.runtime_name = manifest.runtime or ""
        self.sha256 = ""
        self.load_seconds = 0.0
        self.signature = Signature((), ())
        self.max_batch_size = 0
        self.batcher: DynamicBatcher | None = None
        self._runtimes: list[Runtime] = []
        self._pool: InstancePool | None = None

    @property
    def ready(self) -> bool:
        return self.state is VersionState.READY

    def _set(self, state: VersionState, reason: str = "") -> None:
        check_transition(self.state, state)
        self.state, self.reason = state, reason
        self.metrics.ready.set(1 if state is VersionState.READY else 0)

    async def load(self) -> None:
        """Load the runtime(s) and start the scheduler. On failure the harness is left
        UNAVAILABLE with the reason, and ``ModelLoadError`` is raised."""
        self._set(VersionState.LOADING)
        started = time.monotonic()
        try:
            runtimes = await asyncio.get_running_loop().run_in_executor(None, self._load_sync)
        except Exception as exc:
            reason = exc.message if isinstance(exc, ModelLoadError) else (
                f"{type(exc).__name__}: {exc}")
            log.error("model %s version %d failed to load: %s", self.model, self.version, reason)
            self._set(VersionState.UNAVAILABLE, reason)
            raise ModelLoadError(reason) from None
        self._runtimes = runtimes
        self.signature = runtimes[0].signature()
        self.max_batch_size = self._max_batch_size(self.signature)
        self._pool = InstancePool(runtimes if len(runtimes) == self.manifest.instances
                                  else runtimes * self.manifest.instances,
                                  f"{self.model}-{self.version}")
        self.batcher = DynamicBatcher(self._pool, self.max_batch_size,
                                      self.manifest.dynamic_batching, self.metrics.batch_done)
        batcher = self.batcher
        self.metrics.track_queue(lambda: batcher.queued_rows)
        self.load_seconds = time.monotonic() - started
        self.metrics.loaded(self.load_seconds)
        self._set(VersionState.READY)
        log.info("model %s version %d ready (%s, %.0f ms, max_batch_size %d, %d instance(s))",
                 self.model, self.version, self.runtime_name, 1000 * self.load_seconds,
                 self.max_batch_size, self.manifest.instances)

    def _load_sync(self) -> list[Runtime]:
        self.runtime_name = self.manifest.runtime or guess_runtime(self.path)
        cls = runtime_class(self.runtime_name)
        if cls.executes_code_on_load and not self.trust_pickles:
            raise UntrustedArtifact(
                f"{self.path}: runtime {self.runtime_name!r} loads pickles, which run code "
                f"from the file; serve with --trust-pickles (FERRY_TRUST_PICKLES=1) only if "
                f"you trust this repository")
        self.sha256 = sha256_of(self.path)
        copies = 1 if cls.thread_safe else self.manifest.instances
        runtimes = []
        for _ in range(copies):
            runtime = cls(self.manifest)
            runtime.load(self.path)
            runtimes.append(runtime)
        return runtimes

    def _max_batch_size(self, signature: Signature) -> int:
        if self.manifest.max_batch_size is not None:
            return self.manifest.max_batch_size
        tensors = signature.inputs + signature.outputs
        batchable = bool(tensors) and all(t.shape and t.shape[0] == -1 for t in tensors)
        return DEFAULT_MAX_BATCH_SIZE if batchable else 0

    async def unload(self) -> None:
        """Stop serving, fail what is still queued, release the runtime."""
        if self.state is not VersionState.READY:
            return
        self._set(VersionState.UNLOADING)
        if self.batcher is not None:
            self.batcher.close()
        pool, runtimes = self._pool, self._runtimes
        self._pool, self._runtimes, self.batcher = None, [], None

        def release() -> None:
            if pool is not None:
                pool.close()
            for runtime in runtimes:
                runtime.unload()

        await asyncio.get_running_loop().run_in_executor(None, release)
        self._set(VersionState.UNAVAILABLE, "unloaded")
