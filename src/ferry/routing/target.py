"""The one seam for everything that chooses or wraps a model version: a **target** answers
``async infer(InferRequest) -> InferResponse``.

Contract of every target: it raises only ``FerryError``; the ``InferResponse`` it returns
names the version that computed the outputs (``model_version``), whatever the target put
between the caller and that version; it runs on the event loop thread and never blocks it.

``VersionTarget`` is the leaf: what the dataplane did for one request before routing
existed (find the harness, check the inputs against its signature, queue on its batcher,
count the metrics, tell the observers: the evaluation store records each inference here,
once, for REST, TF Serving JSON and gRPC alike). Everything else wraps targets, as
Starlette middleware wraps an ASGI app and an httpx transport wraps a transport:

- **Policies** (``routing/split.py``) hold version targets and send each request to one of
  them: ``pin`` is a ``VersionTarget`` with a fixed version, ``split`` a ``SplitTarget``.
  Later slices follow the same shape: a canary is a split whose weights a controller
  replaces (an atomic swap of the endpoint's target); a shadow wraps its primary and
  schedules the same request on a bounded queue to the shadow's target, returning the
  primary's response; a bandit is a split whose plan comes from posteriors fed by
  feedback; an ensemble awaits several targets and combines their outputs, answering with
  a version label that names the members.
- **Pipelines** will be targets whose steps are targets (a step's response becomes the next
  step's request); **handlers** (pre/post-processing) wrap a target and rewrite the request
  before and the response after; a **response cache** wraps a target and answers hits
  without calling it. Each is a class with ``infer`` holding its inner target, so they
  stack in any order and the dataplane never learns about them.

The dataplane resolves a model name to its endpoint's target (``routing/endpoints.py``);
a request that names a version goes to the plain ``VersionTarget`` and bypasses the policy.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Protocol

from ferry.errors import FerryError, ModelNotReady, UnknownOutput
from ferry.lifecycle.manager import ModelManager
from ferry.routing import classification
from ferry.scheduler.tensors import check_inputs
from ferry.types import InferenceRecord, InferRequest, InferResponse, Signature

log = logging.getLogger("ferry.dataplane")

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class Target(Protocol):
    """Anything that answers an inference request (see the module docstring)."""

    async def infer(self, request: InferRequest) -> InferResponse: ...


class InferenceObserver(Protocol):
    """Told about every inference that reached a version. ``observe`` runs on the event
    loop thread inside the request path: it must be fast and must not raise (buffer the
    record and do the work elsewhere)."""

    def observe(self, record: InferenceRecord) -> None: ...


def outcome_name(exc: FerryError) -> str:
    """The metrics/store outcome of an error: its class name in snake_case."""
    return _CAMEL.sub("_", type(exc).__name__).lower()


class VersionTarget:
    """One request on one version: ``version`` when set, else the version the request
    names, else the model's latest ready version (the default ``pin latest``).

    ``observers`` is the dataplane's list, shared by reference (appending to it later is
    seen here); ``default_timeout_s`` gives requests without a deadline one.
    """

    __slots__ = ("manager", "version", "observers", "default_timeout_s")

    def __init__(self, manager: ModelManager, observers: list[InferenceObserver],
                 default_timeout_s: float | None = None, version: int | None = None) -> None:
        self.manager = manager
        self.version = version
        self.observers = observers
        self.default_timeout_s = default_timeout_s

    def ready(self, name: str) -> bool:
        """True when this target's version of ``name`` can take a request now."""
        served = self.manager.models.get(name)
        if served is None:
            return False
        if self.version is None:
            return served.latest_ready() is not None
        harness = served.versions.get(self.version)
        return harness is not None and harness.ready

    async def infer(self, request: InferRequest) -> InferResponse:
        """Check, queue and run one request on the version (see the class docstring)."""
        started = time.monotonic()
        version = self.version if self.version is not None else request.model.version
        harness = self.manager.get(request.model.name, version)
        metrics = harness.metrics
        classes: dict[str, int] = {}
        try:
            rows = check_inputs(harness.signature, request.inputs, harness.max_batch_size)
            if request.outputs:
                _check_outputs(harness.signature, [o.name for o in request.outputs])
                classes = classification.requested(request.outputs, harness.signature)
            deadline = request.deadline
            if deadline is None and self.default_timeout_s:
                deadline = started + self.default_timeout_s
            batcher = harness.batcher
            if batcher is None:  # unloaded between get() and here
                raise ModelNotReady(f"model {harness.model!r} version {harness.version} is "
                                    f"{harness.state.value}")
            outputs = await batcher.submit(request.inputs, rows, deadline)
        except FerryError as exc:
            outcome = outcome_name(exc)
            finished = time.monotonic()
            metrics.request_failed(outcome, finished - started, finished)
            if self.observers:
                self._tell(InferenceRecord(request.id, harness.model, harness.version,
                                           request.inputs, None, outcome, exc.message,
                                           finished - started, time.time(),
                                           request.parameters))
            raise
        finished = time.monotonic()
        latency = finished - started
        metrics.request_done(latency, rows, finished)
        observers = self.observers
        if observers:  # one record object, handed over by reference (no copy, no encoding)
            record = InferenceRecord(request.id, harness.model, harness.version,
                                     request.inputs, outputs, "success", None, latency,
                                     time.time() - latency, request.parameters)
            for observer in observers:
                try:
                    observer.observe(record)
                except Exception:  # an observer's bug must not fail the request
                    log.exception("inference observer %r failed", observer)
        if request.outputs:
            outputs = {o.name: outputs[o.name] for o in request.outputs}
            if classes:  # Triton's classification extension, after the observers saw scores
                outputs = classification.apply(outputs, classes, harness.max_batch_size > 0,
                                               harness.labels)
        return InferResponse(harness.model, str(harness.version), outputs, request.id,
                             request.parameters)

    def _tell(self, record: InferenceRecord) -> None:
        for observer in self.observers:
            try:
                observer.observe(record)
            except Exception:  # an observer's bug must not fail the request
                log.exception("inference observer %r failed", observer)


def _check_outputs(signature: Signature, wanted: list[str]) -> None:
    names = [o.name for o in signature.outputs]
    for name in wanted:
        if name not in names:
            raise UnknownOutput(f"unknown output {name!r}; the model's outputs are {names}")


__all__ = ["InferenceObserver", "Target", "VersionTarget", "outcome_name"]
