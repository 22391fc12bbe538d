"""The OpenAPI 3.1 document served at ``/openapi.json``: every REST route and its bodies."""

from __future__ import annotations

from typing import Any

import ferry

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64",
                                                "INT8", "INT16", "INT32", "INT64", "FP16",
                                                "FP32", "FP64", "BYTES"]},
        "parameters": {"type": "object"},
        "data": {"description": "row-major values, nested or flat"},
    },
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}}}},
    },
}
_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}
_JSON = "application/json"


def _op(summary: str, body: dict[str, Any] | None = None, params: tuple[str, ...] = ()
        ) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {_JSON: {"schema": {"type": "object"}}}},
            "400": {"description": "invalid input", "content": {_JSON: {"schema": _ERROR}}},
            "404": {"description": "unknown model or version",
                    "content": {_JSON: {"schema": _ERROR}}},
        },
    }
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True,
                             "schema": {"type": "string" if p == "model" else "integer"}}
                            for p in params]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {_JSON: {"schema": body}}}
    return op


def openapi_document() -> dict[str, Any]:
    m, mv = ("model",), ("model", "version")
    tf_body = {"type": "object", "properties": {"instances": {"type": "array"},
                                                "inputs": {}, "signature_name": {"type": "string"}}}
    paths = {
        "/v2": {"get": _op("Server metadata")},
        "/v2/health/live": {"get": _op("Liveness")},
        "/v2/health/ready": {"get": _op("Readiness: 200 when every aspired version is live")},
        "/v2/repository/index": {"post": _op("Repository index (Triton extension)",
                                             {"type": "object",
                                              "properties": {"ready": {"type": "boolean"}}})},
        "/v2/models/{model}": {"get": _op("Model metadata", params=m)},
        "/v2/models/{model}/versions/{version}": {"get": _op("Version metadata", params=mv)},
        "/v2/models/{model}/ready": {"get": _op("Model readiness", params=m)},
        "/v2/models/{model}/versions/{version}/ready": {"get": _op("Version readiness",
                                                                   params=mv)},
        "/v2/models/{model}/infer": {"post": _op("Inference (KServe V2)", _INFER_REQUEST, m)},
        "/v2/models/{model}/versions/{version}/infer": {
            "post": _op("Inference on a version", _INFER_REQUEST, mv)},
        "/v1/models/{model}:predict": {"post": _op("TF Serving predict", tf_body, m)},
        "/v1/models/{model}/versions/{version}:predict": {
            "post": _op("TF Serving predict on a version", tf_body, mv)},
        "/v1/models/{model}": {"get": _op("TF Serving model status", params=m)},
        "/v1/models/{model}/metadata": {"get": _op("TF Serving model metadata", params=m)},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "text exposition format"}}}},
    }
    return {"openapi": "3.1.0",
            "info": {"title": "Ferry", "version": ferry.__version__,
                     "description": "KServe V2 / Open Inference Protocol and TF Serving REST"},
            "paths": paths}
