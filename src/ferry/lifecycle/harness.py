"""VersionHarness: one version's runtime(s), scheduler, state and load record.

Promises: ``load`` runs the slow work (fetching from storage, checking and loading the
runtime through ``lifecycle.loader``, which ``ferry batch`` shares, warming up) on a worker
thread and builds the instance pool and batcher on the event loop; a failure leaves the
harness ``UNAVAILABLE`` with the reason, never half-live.
``unload`` is called only after the manager stopped handing the version out: it lets queued
and running batches finish (bounded by ``drain_timeout``), then releases the runtime and
returns freed memory to the operating system.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import time
from pathlib import Path

import numpy as np

from ferry.errors import FerryError, ModelLoadError
from ferry.lifecycle.loader import check_version, load_runtime
from ferry.lifecycle.states import VersionState, check_transition
from ferry.manifest import ModelManifest
from ferry.monitoring.metrics import VersionMetrics
from ferry.repository.storage import ArtifactStorage
from ferry.runtimes.base import Runtime
from ferry.runtimes.registry import runtime_class
from ferry.scheduler.batcher import DynamicBatcher
from ferry.scheduler.instances import InstancePool
from ferry.scheduler.sizes import batch_limits
from ferry.scheduler.tensors import numpy_input
from ferry.types import Signature, Tensors

log = logging.getLogger("ferry.lifecycle")


class VersionHarness:
    """Holds one model version through its life."""

    def __init__(self, model: str, version: int, path: Path, manifest: ModelManifest,
                 metrics: VersionMetrics, trust_pickles: bool, fingerprint: str = "",
                 storage: ArtifactStorage | None = None) -> None:
        self.model = model
        self.version = version
        self.path = path
        self.manifest = manifest
        self.metrics = metrics
        self.trust_pickles = trust_pickles
        self.fingerprint = fingerprint
        self.storage = storage
        self.state = VersionState.UNAVAILABLE
        self.reason = ""
        self.runtime_name = manifest.runtime or ""
        self.sha256 = ""
        self.load_seconds = 0.0
        self.warmup_seconds = 0.0
        self.signature = Signature((), ())
        self.max_batch_size = 0
        self.split_large_requests = False
        """A request of more than ``max_batch_size`` rows runs in chunks (``sizes.py``)."""
        self.labels: dict[str, list[str]] = {}
        """Output name -> class labels, from the manifest's ``labels`` files."""
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
        """Load, warm up and start the scheduler. On failure the harness is left
        UNAVAILABLE with the reason, and ``ModelLoadError`` is raised."""
        self._set(VersionState.LOADING)
        started = time.monotonic()
        try:
            runtimes = await asyncio.get_running_loop().run_in_executor(None, self._load_sync)
        except Exception as exc:
            reason = exc.message if isinstance(exc, FerryError) else (
                f"{type(exc).__name__}: {exc}")
            log.error("model %s version %d failed to load: %s", self.model, self.version, reason)
            self._set(VersionState.UNAVAILABLE, reason)
            raise ModelLoadError(reason) from None
        self._runtimes = runtimes
        self._pool = InstancePool(runtimes if len(runtimes) == self.manifest.instances
                                  else runtimes * self.manifest.instances,
                                  f"{self.model}-{self.version}", self.manifest.execution)
        fixed = all(d != -1 for spec in self.signature.inputs for d in spec.shape[1:])
        self.batcher = DynamicBatcher(self._pool, self.max_batch_size,
                                      self.manifest.dynamic_batching, self.metrics.batch_done,
                                      fixed_shapes=fixed, split=self.split_large_requests)
        batcher = self.batcher
        self.metrics.track_queue(lambda: batcher.queued_rows)
        self.load_seconds = time.monotonic() - started
        self.metrics.loaded(self.load_seconds)
        self._set(VersionState.READY)
        log.info("model %s version %d ready (%s, load %.0f ms incl. warm-up %.0f ms, "
                 "max_batch_size %d%s, %d instance(s))", self.model, self.version,
                 self.runtime_name, 1000 * self.load_seconds, 1000 * self.warmup_seconds,
                 self.max_batch_size, ", larger requests split" if self.split_large_requests
                 else "", self.manifest.instances)

    def _load_sync(self) -> list[Runtime]:
        if self.storage is not None:
            try:
                self.path = self.storage.materialize(self.model, str(self.version))
            except OSError as exc:
                raise ModelLoadError(f"{self.storage.uri}/{self.model}/{self.version}: could "
                                     f"not fetch: {exc}") from None
        checked = check_version(self.model, self.version, self.path, self.manifest,
                                self.trust_pickles)
        self.runtime_name, self.sha256 = checked.runtime, checked.sha256
        copies = 1 if runtime_class(checked.runtime).thread_safe else self.manifest.instances
        runtimes = []
        try:
            for _ in range(copies):
                runtimes.append(load_runtime(checked))
            limits = batch_limits(runtimes[0].signature(), self.manifest.max_batch_size,
                                  self.manifest.split_large_requests)
            self.signature = limits.signature
            self.max_batch_size = limits.max_batch_size
            self.split_large_requests = limits.split
            self.labels = self._read_labels()
            started = time.monotonic()
            for runtime in runtimes:
                self._warm_up(runtime)
            self.warmup_seconds = time.monotonic() - started
        except BaseException:
            for runtime in runtimes:
                runtime.unload()
            raise
        return runtimes

    def _warm_up(self, runtime: Runtime) -> None:
        for file in sorted((self.path / "warmup").glob("*.npz")):
            with np.load(file, allow_pickle=False) as data:
                inputs: Tensors = {k: data[k] for k in data.files}
            try:
                runtime.predict(inputs)
            except Exception as exc:
                raise ModelLoadError(f"{file}: warm-up request failed: {type(exc).__name__}: "
                                     f"{exc}") from None
        if not self.manifest.warmup:
            return
        inputs = {spec.name: numpy_input(spec) for spec in self.signature.inputs}
        try:
            runtime.predict(inputs)
        except Exception as exc:  # zeros may be meaningless to a model: not fatal
            log.warning("model %s version %d: generated warm-up request failed (%s: %s); "
                        "add warmup/*.npz or set warmup: false", self.model, self.version,
                        type(exc).__name__, exc)

    def _read_labels(self) -> dict[str, list[str]]:
        """One class label per line of each labels file, line i naming class i."""
        labels = {}
        outputs = [o.name for o in self.signature.outputs]
        for output, path in self.manifest.labels.items():
            if output not in outputs:
                raise ModelLoadError(f"model.yaml labels names output {output!r}, which the "
                                     f"model does not have; its outputs are {outputs}")
            if self.storage is not None:
                where = f"{self.storage.uri}/{self.model}/{path}"
                data = self.storage.read_model_file(self.model, path)
            else:
                file = self.path.parent / path
                where, data = str(file), file.read_bytes() if file.is_file() else None
            if data is None:
                raise ModelLoadError(f"{where}: no such labels file (model.yaml labels."
                                     f"{output}; paths are relative to the model folder)")
            try:
                labels[output] = data.decode().splitlines()
            except UnicodeDecodeError:
                raise ModelLoadError(f"{where}: a labels file must be UTF-8 text") from None
        return labels

    async def unload(self, drain_timeout: float = 30.0) -> None:
        """Finish what was queued, then release the runtime. Call after the manager stopped
        handing this version out."""
        if self.state is not VersionState.READY:
            return
        self._set(VersionState.UNLOADING)
        if self.batcher is not None:
            if not await self.batcher.drain(drain_timeout):
                log.warning("model %s version %d: requests still queued after %.0f s; "
                            "failing them", self.model, self.version, drain_timeout)
            self.batcher.close()
        pool, runtimes = self._pool, self._runtimes
        self._pool, self._runtimes, self.batcher = None, [], None

        def release() -> None:
            if pool is not None:
                pool.close()
            for runtime in runtimes:
                runtime.unload()
            runtimes.clear()
            release_memory()

        await asyncio.get_running_loop().run_in_executor(None, release)
        if self.storage is not None:
            self.storage.release(self.model, str(self.version), self.path)
        self._set(VersionState.UNAVAILABLE, "unloaded")
        log.info("model %s version %d unloaded", self.model, self.version)


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so
    repeated load/unload cycles do not grow resident memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
