"""REST routes: KServe V2 (with Triton's binary extension and repository index), TF
Serving's predict API, ``/metrics`` and ``/openapi.json``. Handlers only translate between
HTTP and the dataplane; errors are translated once, in ``http.error_response``."""

from __future__ import annotations

import time
import zlib

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from ferry.errors import MalformedRequest, ModelNotReady, PayloadTooLarge, VersionNotFound
from ferry.monitoring.metrics import Metrics
from ferry.protocols import tfserving_json, v2_json
from ferry.protocols.dataplane import DataPlane
from ferry.protocols.identity import (REQUEST_ID_HEADER, TRACEPARENT_HEADER,
                                      X_REQUEST_ID_HEADER, log_traceparent, request_id)
from ferry.protocols.router import Request, Response, Router, json_response
from ferry.protocols.openapi import openapi_document
from ferry.types import ModelRef

_BINARY = "application/octet-stream"


def _identify(request: Request, body_id: str | None, model: str
              ) -> tuple[str, list[tuple[str, str]]]:
    """The request's id (``identity.request_id``) and the headers that return it:
    ``ferry-request-id``, and ``x-request-id`` echoed unchanged when the client sent one."""
    headers = request.headers
    x_id = headers.get(X_REQUEST_ID_HEADER)
    rid = request_id(headers.get(REQUEST_ID_HEADER), x_id, body_id)
    traceparent = headers.get(TRACEPARENT_HEADER)
    if traceparent is not None:
        log_traceparent(traceparent, rid, model)
    if x_id is None:
        return rid, [(REQUEST_ID_HEADER, rid)]
    return rid, [(REQUEST_ID_HEADER, rid), (X_REQUEST_ID_HEADER, x_id)]


def _version(request: Request) -> int | None:
    raw = request.params.get("version")
    if raw is None:
        return None
    if not raw.isdigit():
        raise VersionNotFound(f"version {raw!r} is not an integer; versions are folder numbers")
    return int(raw)


def _body(request: Request, limit: int) -> bytes:
    """The request body, inflated when sent with ``Content-Encoding: gzip`` or ``deflate``."""
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding in ("identity", ""):
        return request.body
    if encoding not in ("gzip", "deflate"):
        raise MalformedRequest(f"Content-Encoding {encoding!r} is not supported; use gzip, "
                               f"deflate or none")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        body = inflater.decompress(request.body, limit + 1)
    except zlib.error as exc:
        raise MalformedRequest(f"body is not valid {encoding}: {exc}") from None
    if len(body) > limit:
        raise PayloadTooLarge(f"inflated body is over the limit of {limit} bytes")
    return body


def build_router(dataplane: DataPlane, metrics: Metrics, max_body_bytes: int) -> Router:
    """Every REST route of the server."""
    router = Router()

    async def server_metadata(request: Request) -> Response:
        return json_response(dataplane.server_metadata())

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        ok = dataplane.ready()
        return json_response({"ready": ok}, 200 if ok else 503)

    async def model_metadata(request: Request) -> Response:
        return json_response(dataplane.model_metadata(request.params["model"], _version(request)))

    async def model_ready(request: Request) -> Response:
        name = request.params["model"]
        ok = dataplane.model_ready(name, _version(request))
        return json_response({"name": name, "ready": ok}, 200 if ok else 503)

    async def infer(request: Request) -> Response:
        model = ModelRef(request.params["model"], _version(request))
        decoded = v2_json.decode_infer(_body(request, max_body_bytes), model,
                                       request.headers.get(v2_json.HEADER_LENGTH))
        decoded.id, id_headers = _identify(request, decoded.id, model.name)
        timeout_us = (decoded.parameters or {}).get("timeout")
        if isinstance(timeout_us, int) and timeout_us > 0:
            decoded.deadline = time.monotonic() + timeout_us / 1e6
        response = await dataplane.infer(decoded)
        body, header_length = v2_json.encode_infer(response, decoded)
        if header_length is None:
            return Response(body, headers=id_headers)
        return Response(body, 200, _BINARY, [(v2_json.HEADER_LENGTH, header_length),
                                             *id_headers])

    async def repository_index(request: Request) -> Response:
        ready_only = False
        if request.body.strip():
            try:
                doc = orjson.loads(request.body)
            except orjson.JSONDecodeError as exc:
                raise MalformedRequest(f"body is not valid JSON: {exc}") from None
            if not isinstance(doc, dict):
                raise MalformedRequest("body must be a JSON object like {\"ready\": true}")
            ready_only = bool(doc.get("ready", False))
        return json_response(dataplane.repository_index(ready_only))

    async def model_load(request: Request) -> Response:
        dataplane.authorize_control(request.headers.get("authorization"), request.client)
        await dataplane.load_model(request.params["model"])
        return json_response({})

    async def model_unload(request: Request) -> Response:
        dataplane.authorize_control(request.headers.get("authorization"), request.client)
        await dataplane.unload_model(request.params["model"])
        return json_response({})

    async def tf_predict(request: Request) -> Response:
        model = ModelRef(request.params["model"], _version(request))
        signature = dataplane.signature(model.name, model.version)
        decoded, row_format = tfserving_json.decode_predict(
            _body(request, max_body_bytes), model, signature)
        decoded.id, id_headers = _identify(request, None, model.name)
        response = await dataplane.infer(decoded)
        return Response(tfserving_json.encode_predict(response, row_format), headers=id_headers)

    async def tf_status(request: Request) -> Response:
        name, version = request.params["model"], _version(request)
        meta = dataplane.model_metadata(name, version)
        states = {"READY": "AVAILABLE", "LOADING": "LOADING", "UNLOADING": "UNLOADING"}
        return json_response({"model_version_status": [
            {"version": v["version"], "state": states.get(v["state"], "END"),
             "status": {"error_code": "OK" if v["state"] == "READY" else "UNAVAILABLE",
                        "error_message": v["reason"]}}
            for v in meta["ferry"]["versions"]]})

    async def tf_metadata(request: Request) -> Response:
        name, version = request.params["model"], _version(request)
        meta = dataplane.model_metadata(name, version)
        if not meta["inputs"]:
            raise ModelNotReady(f"model {name!r} has no loaded version")
        return json_response({"model_spec": {"name": name, "version": meta["versions"][0]},
                              "metadata": {"signature_def": {"signature_def": {
                                  "serving_default": {"inputs": meta["inputs"],
                                                      "outputs": meta["outputs"]}}}}})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    openapi = orjson.dumps(openapi_document())

    async def openapi_json(request: Request) -> Response:
        return Response(openapi)

    add = router.add
    add("GET", "/v2", server_metadata)
    add("GET", "/v2/health/live", live)
    add("GET", "/v2/health/ready", ready)
    add("POST", "/v2/repository/index", repository_index)
    add("POST", "/v2/repository/models/{model}/load", model_load)
    add("POST", "/v2/repository/models/{model}/unload", model_unload)
    add("POST", "/v2/models/{model}/infer", infer)
    add("POST", "/v2/models/{model}/versions/{version}/infer", infer)
    add("GET", "/v2/models/{model}/ready", model_ready)
    add("GET", "/v2/models/{model}/versions/{version}/ready", model_ready)
    add("GET", "/v2/models/{model}", model_metadata)
    add("GET", "/v2/models/{model}/versions/{version}", model_metadata)
    add("POST", "/v1/models/{model}:predict", tf_predict)
    add("POST", "/v1/models/{model}/versions/{version}:predict", tf_predict)
    add("GET", "/v1/models/{model}/metadata", tf_metadata)
    add("GET", "/v1/models/{model}/versions/{version}/metadata", tf_metadata)
    add("GET", "/v1/models/{model}", tf_status)
    add("GET", "/v1/models/{model}/versions/{version}", tf_status)
    add("GET", "/metrics", prometheus)
    add("GET", "/openapi.json", openapi_json)
    return router
