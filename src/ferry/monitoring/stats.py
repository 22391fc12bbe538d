"""Triton's statistics extension: per-version counters and the ``model_stats`` shape.

The counters that ``/metrics`` already keeps (``VersionMetrics``: requests by outcome, the
request, queue, compute and batch-size histograms) are the source of most figures; the few
the histograms cannot give are kept here in ``VersionStats``, updated by ``VersionMetrics``
in the same calls on the event loop thread (integer and float additions, no clock reads:
times come from the callers, who already measured them).

How each Triton field maps (``docs/protocols.md``, "Statistics"):

- ``inference_count``: rows of the successful requests (Triton counts each row).
- ``execution_count``: batches that ran without the model raising
  (``ferry_batch_size_rows_count`` − ``ferry_batch_failures_total``).
- ``last_inference``: when the last request (success or failure) finished, ms since the epoch.
- ``inference_stats.success`` / ``fail``: requests by outcome, as ``ferry_requests_total``
  (success, and every other outcome), with their total duration.
- ``queue``: every request that left the queue for a batch, with its wait
  (``ferry_queue_duration_seconds``).
- ``compute_infer``: the same requests, each with its batch's compute time (stacking the
  inputs and running the model). Ferry does not time input and output conversion apart:
  ``compute_input`` and ``compute_output`` carry the same count and 0 ns.
- ``batch_stats``: per batch size (rows), the successful batches and their compute time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ferry.monitoring.metrics import VersionMetrics

_NS = 1_000_000_000


class VersionStats:
    """What one version's statistics need beyond the ``/metrics`` histograms."""

    __slots__ = ("batches", "batch_failures", "compute_requests", "compute_seconds",
                 "fail_seconds", "inferences", "last_inference")

    def __init__(self) -> None:
        self.inferences = 0
        """Rows of successful requests."""
        self.fail_seconds = 0.0
        """Total duration of failed requests."""
        self.last_inference = 0.0
        """``time.monotonic()`` when the last request finished (0: none yet)."""
        self.compute_requests = 0
        """Requests that ran in a batch (successful or not)."""
        self.compute_seconds = 0.0
        """Sum over those requests of their batch's compute time."""
        self.batch_failures = 0
        """Batches in which the model raised."""
        self.batches: dict[int, list[float]] = {}
        """Batch size (rows) -> [successful batches, their compute seconds]."""


def _duration(count: int, seconds: float) -> dict[str, int]:
    return {"count": count, "ns": int(seconds * _NS)}


def _epoch_ms(monotonic: float) -> int:
    if not monotonic:
        return 0
    return int(1000 * (time.time() - (time.monotonic() - monotonic)))


def model_statistics(model: str, version: int, metrics: VersionMetrics) -> dict[str, Any]:
    """One ``$model_stat`` object of Triton's statistics extension (JSON-ready)."""
    stats = metrics.stats
    outcomes = dict(metrics.outcomes)
    success = outcomes.pop("success", 0)
    queue = metrics.queue
    computed = _duration(stats.compute_requests, stats.compute_seconds)
    untimed = {"count": stats.compute_requests, "ns": 0}
    batches = sorted(stats.batches.items())
    return {
        "name": model,
        "version": str(version),
        "last_inference": _epoch_ms(stats.last_inference),
        "inference_count": stats.inferences,
        "execution_count": sum(int(count) for count, _ in stats.batches.values()),
        "inference_stats": {
            "success": _duration(success, metrics.request.total),
            "fail": _duration(sum(outcomes.values()), stats.fail_seconds),
            "queue": _duration(sum(queue.counts), queue.total),
            "compute_input": untimed,
            "compute_infer": computed,
            "compute_output": dict(untimed),
            "cache_hit": {"count": 0, "ns": 0},
            "cache_miss": {"count": 0, "ns": 0},
        },
        "batch_stats": [
            {"batch_size": size, "compute_input": {"count": int(count), "ns": 0},
             "compute_infer": _duration(int(count), seconds),
             "compute_output": {"count": int(count), "ns": 0}}
            for size, (count, seconds) in batches],
        "memory_usage": [],
    }
