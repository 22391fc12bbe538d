"""What the server offers on top of its evaluation store, for any transport: record feedback,
build a monitoring report, save a reference, read the writer's status, flush it.

Promises: the methods take and return plain values (bytes, strings, numbers, dicts), never a
transport's request or response; every error is a ``FerryError``; database work runs on the
default thread pool, never on the event loop. ``protocols/store_routes.py`` maps these to
HTTP; the web UI calls them directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from ferry.errors import InvalidInput
from ferry.evalstore import feedback
from ferry.evalstore.store import EvalStore
from ferry.evalstore.windows import parse_duration
from ferry.monitoring.metrics import Metrics

T = TypeVar("T")


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def reference_format(content_type: str) -> str | None:
    """``csv``, ``parquet``, or None (the reader guesses) from an upload's media type."""
    if "csv" in content_type:
        return "csv"
    return "parquet" if "parquet" in content_type else None


class StoreService:
    """The evaluation store's operations; ``latest_version(model)`` names the version a
    reference upload without one is for (``NotFound`` for unknown models)."""

    def __init__(self, store: EvalStore, metrics: Metrics,
                 latest_version: Callable[[str], int]) -> None:
        self.store = store
        self.metrics = metrics
        self.latest_version = latest_version

    async def record_feedback(self, body: bytes) -> dict[str, int]:
        """Join labels or rewards (``feedback.parse_feedback``'s JSON) to predictions:
        ``{"accepted", "duplicates"}``; ``NotFound`` names an unknown request id."""
        items = feedback.parse_feedback(body)
        engine = self.store.engine()
        counter = self.metrics.feedback
        try:
            result = await _off_loop(feedback.record, engine, self.store.writer, items)
        except Exception:
            counter.labels("unknown").inc(len(items))
            raise
        counter.labels("joined").inc(len(items))
        if result["duplicates"]:
            counter.labels("duplicate").inc(result["duplicates"])
        return result

    async def monitor(self, model: str, window: str = "1h", version: int | None = None,
                      plots: bool = False) -> dict[str, Any]:
        """The monitoring report of ``model`` over the last ``window`` (``1h``, ``30m``, ...),
        after flushing the buffer. A report over the gauges' window (``GAUGE_WINDOW``, 1h)
        of every version is also published as the drift and quality gauges, as the alert
        loop's passes are; other windows are not, so the gauges always mean one window."""
        from ferry.monitoring.alerts import GAUGE_WINDOW
        from ferry.monitoring.report import build_report, publish

        seconds = parse_duration(window)
        engine = self.store.engine()
        await _off_loop(self.store.writer.flush, 5.0)
        report = await _off_loop(build_report, engine, model, seconds, version, None, plots)
        if seconds == parse_duration(GAUGE_WINDOW) and version is None:
            publish(self.metrics, report)
        return report

    async def save_reference(self, model: str, version: int | None, body: bytes,
                             content_type: str = "", source: str = "upload") -> dict[str, Any]:
        """Profile a reference table (Parquet or CSV bytes) for a version (default: the
        latest) and store it."""
        version = version or self.latest_version(model)
        if not body:
            raise InvalidInput("the body must be the reference table (Parquet or CSV)")
        engine = self.store.engine()
        fmt = reference_format(content_type)
        return await _off_loop(lambda: self.store.save_reference(
            engine, model, version, body, source, None, fmt))

    def status(self) -> dict[str, Any]:
        """The writer's state: url, up, error, buffered, written, dropped, spill."""
        return self.store.status()

    async def flush(self, timeout_s: float = 30.0) -> bool:
        """Write the buffer now; False when it did not empty within ``timeout_s``."""
        return await _off_loop(self.store.writer.flush, timeout_s)
