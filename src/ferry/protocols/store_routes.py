"""REST routes of the evaluation store and monitoring, under ``/ferry/v1``, over
``evalstore.service.StoreService``:

- ``POST /ferry/v1/feedback``: ``{"request_id", "label"|"reward"}`` or
  ``{"feedback": [...]}`` → ``{"accepted", "duplicates"}``; unknown ids 404.
- ``GET /ferry/v1/models/{m}/monitor?window=1h[&version=N][&plots=1]``: the report.
- ``PUT /ferry/v1/models/{m}[/versions/{v}]/reference``: Parquet or CSV body → profile.
- ``GET /ferry/v1/store``: writer status; ``POST /ferry/v1/store/flush``: write the buffer.

The handlers only translate HTTP (path, query, headers, body) to the service's arguments.
"""

from __future__ import annotations

from collections.abc import Callable

from ferry.errors import VersionNotFound
from ferry.evalstore.service import StoreService
from ferry.evalstore.store import EvalStore
from ferry.monitoring.metrics import Metrics
from ferry.protocols import schemas as S
from ferry.protocols.router import Param, Request, Response, RouteDoc, Router, json_response

_AUTHORIZATION = Param("authorization", "Bearer <admin token> when the server has one; "
                                        "otherwise loopback callers only")


def _int_param(request: Request, name: str) -> int | None:
    raw = request.params.get(name)
    if raw is None:
        values = request.query_params().get(name)
        raw = values[0] if values else None
    if raw is None:
        return None
    if not raw.isdigit():
        raise VersionNotFound(f"{name} {raw!r} is not an integer")
    return int(raw)


def _query(request: Request, name: str, default: str) -> str:
    return (request.query_params().get(name) or [default])[0]


def add_routes(router: Router, store: EvalStore, metrics: Metrics,
               latest_version: Callable[[str], int],
               authorize: Callable[[Request], object] | None = None) -> None:
    """Register the routes; ``latest_version(model)`` resolves a reference upload without
    a version (raises ``NotFound`` for unknown models); ``authorize(request)`` guards the
    operator calls (reference upload, flush) like model control."""
    service = StoreService(store, metrics, latest_version)

    def operator(request: Request) -> None:
        if authorize is not None:
            authorize(request)

    async def post_feedback(request: Request) -> Response:
        return json_response(await service.record_feedback(request.body))

    async def monitor(request: Request) -> Response:
        plots = _query(request, "plots", "0") in ("1", "true", "yes")
        return json_response(await service.monitor(
            request.params["model"], _query(request, "window", "1h"),
            _int_param(request, "version"), plots))

    async def put_reference(request: Request) -> Response:
        operator(request)
        return json_response(await service.save_reference(
            request.params["model"], _int_param(request, "version"), request.body,
            request.headers.get("content-type", ""), _query(request, "source", "upload")))

    async def status(request: Request) -> Response:
        return json_response(service.status())

    async def flush(request: Request) -> Response:
        operator(request)
        ok = await service.flush(30.0)
        return json_response({"flushed": ok, **service.status()}, 200 if ok else 503)

    tag = "evaluation store"
    add = router.add
    add("POST", "/ferry/v1/feedback", post_feedback, RouteDoc(
        "Labels or rewards joined to predictions by request id (unknown id: 404)",
        S.FEEDBACK_RESULT, S.FEEDBACK_REQUEST, tag=tag))
    add("GET", "/ferry/v1/models/{model}/monitor", monitor, RouteDoc(
        "The monitoring report: traffic, drift, quality, performance", S.MONITOR_REPORT,
        query=(Param("window", "how far back: 30m, 1h, 7d (default 1h)"),
               Param("version", "one version only", {"type": "integer", "minimum": 0}),
               Param("plots", "1 to add histograms per feature")), tag=tag))
    reference_doc = RouteDoc(
        "Reference data (a table of training rows) profiled for drift; operator call",
        S.REFERENCE_RESULT, {}, request_types=(
            "application/vnd.apache.parquet", "text/csv", "application/octet-stream"),
        query=(Param("source", "a note kept with the profile (default upload)"),),
        headers=(_AUTHORIZATION,), tag=tag)
    add("PUT", "/ferry/v1/models/{model}/reference", put_reference, reference_doc)
    add("PUT", "/ferry/v1/models/{model}/versions/{version}/reference", put_reference,
        reference_doc)
    add("GET", "/ferry/v1/store", status, RouteDoc("The store writer's status",
                                                   S.STORE_STATUS, tag=tag))
    add("POST", "/ferry/v1/store/flush", flush, RouteDoc(
        "Write the buffered predictions now; operator call", S.FLUSH_RESULT,
        headers=(_AUTHORIZATION,), also={503: "not flushed within 30 s"}, tag=tag))
