"""The OpenAPI 3.1 document served at ``/openapi.json``, built from the router: every route
added with ``Router.add``, with the ``RouteDoc`` it was added with (summary, parameters,
request and response bodies and headers). Mounted apps (``Router.mount``) are not listed.

Promises: the document's (method, path) pairs are exactly the router's routes; a route added
without a doc is still listed, with its summary saying so; every operation answers its 200
body and, as ``default``, the error body.
"""

from __future__ import annotations

import re
from typing import Any

import ferry
from ferry.protocols import schemas
from ferry.protocols.router import JSON, Param, RouteDoc, Router

_PATH_PARAM = re.compile(r"\{(\w+)\}")
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "version": {"type": "integer", "minimum": 0,
                "description": "a version folder's number"},
    "model": {"type": "string", "description": "the model's folder name"},
}


def _content(schema: Any, types: tuple[str, ...]) -> dict[str, Any]:
    """JSON media types carry ``schema``; any other is a string of that media type."""
    return {t: {"schema": dict(schema) if t == JSON or t.endswith("+json")
                else {"type": "string", "contentMediaType": t}} for t in types}


def _param(p: Param, where: str) -> dict[str, Any]:
    return {"name": p.name, "in": where, "required": p.required,
            "description": p.description, "schema": dict(p.schema)}


def _operation(method: str, path: str, doc: RouteDoc | None) -> dict[str, Any]:
    if doc is None:
        doc = RouteDoc(f"{method} {path} (undocumented)", {})
    params = [{"name": name, "in": "path", "required": True,
               "schema": _PATH_SCHEMAS.get(name, {"type": "string"})}
              for name in _PATH_PARAM.findall(path)]
    params += [_param(p, "query") for p in doc.query]
    params += [_param(p, "header") for p in doc.headers]
    ok: dict[str, Any] = {"description": "OK", "content": _content(doc.response,
                                                                   doc.response_types)}
    if doc.response_headers:
        ok["headers"] = {p.name: {"description": p.description, "schema": dict(p.schema)}
                         for p in doc.response_headers}
    responses: dict[str, Any] = {"200": ok}
    for status, description in doc.also.items():
        responses[str(status)] = {"description": description,
                                  "content": _content(doc.response, (JSON,))}
    responses["default"] = {"description": "an error (statuses in docs/errors.md)",
                            "content": {JSON: {"schema": schemas.ERROR}}}
    op: dict[str, Any] = {"summary": doc.summary,
                          "operationId": _operation_id(method, path), "responses": responses}
    if doc.description:
        op["description"] = doc.description
    if doc.tag:
        op["tags"] = [doc.tag]
    if params:
        op["parameters"] = params
    if doc.request is not None:
        op["requestBody"] = {"required": doc.request_required,
                             "content": _content(doc.request, doc.request_types)}
    return op


def _operation_id(method: str, path: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", path.replace("{", "by_").replace("}", ""))
    return "_".join([method.lower(), *words])


def openapi_document(router: Router) -> dict[str, Any]:
    """The document for the routes registered on ``router`` so far."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, doc in router.routes():
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, doc)
    return {"openapi": "3.1.0",
            "info": {"title": "Ferry", "version": ferry.__version__,
                     "description": "KServe V2 / Open Inference Protocol, TF Serving REST, "
                                    "and Ferry's evaluation store and monitoring API"},
            "paths": paths}
