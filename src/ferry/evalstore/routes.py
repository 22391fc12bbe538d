"""REST routes of the evaluation store and monitoring, under ``/ferry/v1``:

- ``POST /ferry/v1/feedback``: ``{"request_id", "label"|"reward"}`` or
  ``{"feedback": [...]}`` → ``{"accepted", "duplicates"}``; unknown ids 404.
- ``GET /ferry/v1/models/{m}/monitor?window=1h[&version=N][&plots=1]``: the report.
- ``PUT /ferry/v1/models/{m}[/versions/{v}]/reference``: Parquet or CSV body → profile.
- ``GET /ferry/v1/store``: writer status; ``POST /ferry/v1/store/flush``: write the buffer.

Database work runs on the default thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from ferry.errors import InvalidInput, VersionNotFound
from ferry.evalstore import feedback
from ferry.evalstore.store import EvalStore
from ferry.evalstore.windows import parse_duration
from ferry.monitoring.metrics import Metrics
from ferry.protocols.router import Request, Response, Router, json_response

T = TypeVar("T")


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _int_param(request: Request, name: str) -> int | None:
    raw = request.params.get(name) or (request.query_params().get(name) or [None])[0]
    if raw is None:
        return None
    if not raw.isdigit():
        raise VersionNotFound(f"{name} {raw!r} is not an integer")
    return int(raw)


def add_routes(router: Router, store: EvalStore, metrics: Metrics,
               latest_version: Callable[[str], int],
               authorize: Callable[[Request], None] | None = None) -> None:
    """Register the routes; ``latest_version(model)`` resolves a reference upload without
    a version (raises ``NotFound`` for unknown models); ``authorize(request)`` guards the
    operator calls (reference upload, flush) like model control."""

    def operator(request: Request) -> None:
        if authorize is not None:
            authorize(request)

    async def post_feedback(request: Request) -> Response:
        items = feedback.parse_feedback(request.body)
        engine = store.engine()
        try:
            result = await _off_loop(feedback.record, engine, store.writer, items)
        except Exception:
            metrics.feedback.labels("unknown").inc(len(items))
            raise
        metrics.feedback.labels("joined").inc(len(items))
        if result["duplicates"]:
            metrics.feedback.labels("duplicate").inc(result["duplicates"])
        return json_response(result)

    async def monitor(request: Request) -> Response:
        from ferry.monitoring.report import build_report, publish

        query = request.query_params()
        window = parse_duration((query.get("window") or ["1h"])[0])
        plots = (query.get("plots") or ["0"])[0] in ("1", "true", "yes")
        version = _int_param(request, "version")
        engine = store.engine()
        await _off_loop(store.writer.flush, 5.0)
        report = await _off_loop(build_report, engine, request.params["model"], window,
                                 version, None, plots)
        publish(metrics, report)
        return json_response(report)

    async def put_reference(request: Request) -> Response:
        operator(request)
        model = request.params["model"]
        version = _int_param(request, "version") or latest_version(model)
        if not request.body:
            raise InvalidInput("the body must be the reference table (Parquet or CSV)")
        ctype = request.headers.get("content-type", "")
        fmt = "csv" if "csv" in ctype else ("parquet" if "parquet" in ctype else None)
        engine = store.engine()
        source = (request.query_params().get("source") or ["upload"])[0]
        result = await _off_loop(lambda: store.save_reference(
            engine, model, version, request.body, source, None, fmt))
        return json_response(result)

    async def status(request: Request) -> Response:
        return json_response(store.status())

    async def flush(request: Request) -> Response:
        operator(request)
        ok = await _off_loop(store.writer.flush, 30.0)
        return json_response({"flushed": ok, **store.status()}, 200 if ok else 503)

    router.add("POST", "/ferry/v1/feedback", post_feedback)
    router.add("GET", "/ferry/v1/models/{model}/monitor", monitor)
    router.add("PUT", "/ferry/v1/models/{model}/reference", put_reference)
    router.add("PUT", "/ferry/v1/models/{model}/versions/{version}/reference", put_reference)
    router.add("GET", "/ferry/v1/store", status)
    router.add("POST", "/ferry/v1/store/flush", flush)
