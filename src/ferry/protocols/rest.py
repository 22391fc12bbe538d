"""REST routes: KServe V2 (with Triton's binary extension and repository index), TF
Serving's predict API, ``/metrics`` and ``/openapi.json``. Handlers only translate between
HTTP and the dataplane; errors are translated once, in ``http.error_response``."""

from __future__ import annotations

import time
import zlib

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from ferry.errors import (MalformedRequest, ModelNotReady, PayloadTooLarge, RepositoryError,
                          VersionNotFound)
from ferry.monitoring.metrics import Metrics
from ferry.protocols import tfserving_json, v2_json
from ferry.protocols.dataplane import DataPlane
from ferry.protocols.identity import (REQUEST_ID_HEADER, TRACEPARENT_HEADER,
                                      X_REQUEST_ID_HEADER, log_traceparent, request_id)
from ferry.protocols import schemas as S
from ferry.protocols.router import (JSON, Param, Request, Response, RouteDoc, Router,
                                    json_object, json_response)
from ferry.protocols.openapi import openapi_document
from ferry.protocols.shared_memory_routes import add_routes as add_shared_memory_routes
from ferry.types import ModelRef

_BINARY = "application/octet-stream"
_ID_HEADERS = (
    Param(REQUEST_ID_HEADER, "names the request (to send feedback later); 1 to 128 printable "
                             "ASCII characters"),
    Param(X_REQUEST_ID_HEADER, f"taken as the request id when {REQUEST_ID_HEADER} is absent"),
    Param(TRACEPARENT_HEADER, "W3C Trace Context; logged with the request id (ferry.trace)"))
_ID_RESPONSE_HEADERS = (
    Param(REQUEST_ID_HEADER, "the request id: the client's, or one the server made"),
    Param(X_REQUEST_ID_HEADER, "the request's x-request-id, echoed when sent"))
MODEL_VERSION_HEADER = "ferry-model-version"
"""Response header of every inference: the version that answered (docs/rollouts.md)."""
_INFER_RESPONSE_HEADERS = (*_ID_RESPONSE_HEADERS, Param(
    MODEL_VERSION_HEADER, "the model version that answered (chosen by the endpoint's policy "
                          "when the path names none)"))
_HEADER_LENGTH = Param(v2_json.HEADER_LENGTH, "bytes of JSON before the binary tensors",
                       {"type": "integer", "minimum": 0})
_CONTENT_ENCODING = Param("content-encoding", "gzip or deflate for a compressed body",
                          {"type": "string", "enum": ["gzip", "deflate", "identity"]})
_AUTHORIZATION = Param("authorization", "Bearer <admin token> when the server has one")


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


def _load_config(body: bytes, model: str) -> str | None:
    """The ``parameters.config`` of a load request (Triton's model repository extension):
    a configuration override as a JSON string, or None."""
    if not body.strip():
        return None
    shape = MalformedRequest('body must be a JSON object like {"parameters": {"config": '
                             '"<model configuration JSON>"}}')
    parameters = json_object(body, shape).get("parameters", {})
    if not isinstance(parameters, dict):
        raise shape
    for key in parameters:
        if key != "config":
            raise RepositoryError(f"failed to load {model!r}: load parameter {key!r} is not "
                                  f"supported; Ferry takes 'config' (a configuration "
                                  f"override)")
    config = parameters.get("config")
    if config is not None and not isinstance(config, str):
        raise RepositoryError(f"failed to load {model!r}: parameters.config must be a string "
                              f"holding the model configuration as JSON, got "
                              f"{type(config).__name__}")
    return config


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

    shm = dataplane.shared_memory

    async def infer(request: Request) -> Response:
        model = ModelRef(request.params["model"], _version(request))
        decoded = v2_json.decode_infer(_body(request, max_body_bytes), model,
                                       request.headers.get(v2_json.HEADER_LENGTH), shm)
        decoded.id, id_headers = _identify(request, decoded.id, model.name)
        decoded.headers = request.headers
        timeout_us = (decoded.parameters or {}).get("timeout")
        if isinstance(timeout_us, int) and timeout_us > 0:
            decoded.deadline = time.monotonic() + timeout_us / 1e6
        leases = shm.lease_outputs(decoded.outputs) if decoded.outputs else None
        if leases is None:
            response = await dataplane.infer(decoded)
        else:  # outputs go into shared memory regions, held until written
            try:
                response = await dataplane.infer(decoded)
                shm.write_outputs(leases, response.outputs)
            finally:
                shm.release(leases)
        id_headers.append((MODEL_VERSION_HEADER, response.model_version))
        body, header_length = v2_json.encode_infer(response, decoded)
        if header_length is None:
            return Response(body, headers=id_headers)
        return Response(body, 200, _BINARY, [(v2_json.HEADER_LENGTH, header_length),
                                             *id_headers])

    async def repository_index(request: Request) -> Response:
        ready_only = False
        if request.body.strip():
            doc = json_object(request.body, MalformedRequest(
                "body must be a JSON object like {\"ready\": true}"))
            ready_only = bool(doc.get("ready", False))
        return json_response(dataplane.repository_index(ready_only))

    async def model_load(request: Request) -> Response:
        dataplane.authorize_control(request.headers.get("authorization"), request.client)
        name = request.params["model"]
        await dataplane.load_model(name, _load_config(request.body, name))
        return json_response({})

    async def statistics(request: Request) -> Response:
        return json_response({"model_stats": dataplane.statistics(
            request.params.get("model"), _version(request))})

    async def model_config(request: Request) -> Response:
        return json_response(dataplane.model_config(request.params["model"], _version(request)))

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
        decoded.headers = request.headers
        response = await dataplane.infer(decoded)
        id_headers.append((MODEL_VERSION_HEADER, response.model_version))
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

    openapi: list[bytes] = []

    async def openapi_json(request: Request) -> Response:
        if not openapi:  # built on first use, once every module has added its routes
            openapi.append(orjson.dumps(openapi_document(router)))
        return Response(openapi[0])

    v2, tf, srv = "KServe V2", "TF Serving", "server"
    add = router.add
    add("GET", "/v2", server_metadata, RouteDoc("Server metadata", S.SERVER_METADATA, tag=v2))
    add("GET", "/v2/health/live", live, RouteDoc("Liveness", S.LIVE, tag=v2))
    add("GET", "/v2/health/ready", ready, RouteDoc(
        "Readiness: 200 when every aspired version is live", S.READY,
        also={503: "not ready"}, tag=v2))
    add("POST", "/v2/repository/index", repository_index, RouteDoc(
        "Repository index (Triton extension): every model and version with its state",
        S.REPOSITORY_INDEX, S.REPOSITORY_INDEX_REQUEST, request_required=False, tag=v2))
    add("POST", "/v2/repository/models/{model}/load", model_load, RouteDoc(
        "Load a model, optionally with a configuration override (Triton extension; loopback "
        "or admin token)", S.EMPTY, S.LOAD_REQUEST, request_required=False,
        headers=(_AUTHORIZATION,), tag=v2))
    add("POST", "/v2/repository/models/{model}/unload", model_unload, RouteDoc(
        "Unload a model (Triton extension; loopback or admin token)", S.EMPTY,
        headers=(_AUTHORIZATION,), tag=v2))
    infer_doc = RouteDoc(
        "Inference: JSON tensors, or Triton binary tensors after a JSON header",
        S.INFER_RESPONSE, S.INFER_REQUEST, (JSON, _BINARY), (JSON, _BINARY),
        headers=(*_ID_HEADERS, _HEADER_LENGTH, _CONTENT_ENCODING),
        response_headers=(*_INFER_RESPONSE_HEADERS, _HEADER_LENGTH), tag=v2)
    add("POST", "/v2/models/{model}/infer", infer, infer_doc)
    add("POST", "/v2/models/{model}/versions/{version}/infer", infer, infer_doc)
    ready_doc = RouteDoc("Model or version readiness", S.MODEL_READY,
                         also={503: "not ready"}, tag=v2)
    add("GET", "/v2/models/{model}/ready", model_ready, ready_doc)
    add("GET", "/v2/models/{model}/versions/{version}/ready", model_ready, ready_doc)
    meta_doc = RouteDoc("Model or version metadata, with Ferry's per-version states",
                        S.MODEL_METADATA, tag=v2)
    add("GET", "/v2/models/{model}", model_metadata, meta_doc)
    add("GET", "/v2/models/{model}/versions/{version}", model_metadata, meta_doc)
    stats_doc = RouteDoc("Statistics (Triton extension): every model, one model or one version",
                         S.MODEL_STATS, tag=v2)
    add("GET", "/v2/models/stats", statistics, stats_doc)
    add("GET", "/v2/models/{model}/stats", statistics, stats_doc)
    add("GET", "/v2/models/{model}/versions/{version}/stats", statistics, stats_doc)
    config_doc = RouteDoc("Model configuration (Triton extension): what the version runs with",
                          S.MODEL_CONFIG, tag=v2)
    add("GET", "/v2/models/{model}/config", model_config, config_doc)
    add("GET", "/v2/models/{model}/versions/{version}/config", model_config, config_doc)
    predict_doc = RouteDoc("TF Serving predict: row (instances) or columnar (inputs) format",
                           S.TF_PREDICT_RESPONSE, S.TF_PREDICT_REQUEST,
                           headers=(*_ID_HEADERS, _CONTENT_ENCODING),
                           response_headers=_INFER_RESPONSE_HEADERS, tag=tf)
    add("POST", "/v1/models/{model}:predict", tf_predict, predict_doc)
    add("POST", "/v1/models/{model}/versions/{version}:predict", tf_predict, predict_doc)
    tf_meta_doc = RouteDoc("TF Serving model metadata (signature)", S.TF_METADATA, tag=tf)
    add("GET", "/v1/models/{model}/metadata", tf_metadata, tf_meta_doc)
    add("GET", "/v1/models/{model}/versions/{version}/metadata", tf_metadata, tf_meta_doc)
    tf_status_doc = RouteDoc("TF Serving model status", S.TF_STATUS, tag=tf)
    add("GET", "/v1/models/{model}", tf_status, tf_status_doc)
    add("GET", "/v1/models/{model}/versions/{version}", tf_status, tf_status_doc)
    add("GET", "/metrics", prometheus, RouteDoc(
        "Prometheus metrics (docs/metrics.md)", S.TEXT, response_types=("text/plain",),
        tag=srv))
    add("GET", "/openapi.json", openapi_json, RouteDoc("This OpenAPI 3.1 document", S.OPENAPI,
                                                       tag=srv))
    add_shared_memory_routes(router, shm)
    return router
