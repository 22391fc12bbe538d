"""``/openapi.json`` is built from the router: a real server's registered routes are exactly
the documented ones, each with its request and response schemas, and the document is a
valid OpenAPI 3.1 document (``openapi-spec-validator``)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
from openapi_spec_validator import validate

from ferry.protocols.openapi import openapi_document
from ferry.protocols.router import Request, Response, RouteDoc, Router
from ferry.server import FerryServer
from ferry.settings import ServerSettings

BODY_ROUTES = {("post", "/v2/models/{model}/infer"), ("post", "/v1/models/{model}:predict"),
               ("post", "/ferry/v1/feedback"), ("put", "/ferry/v1/models/{model}/reference")}
"""Routes that must document a request body (among others)."""


def test_every_registered_route_is_documented_with_schemas(example_repo: Path, tmp_path):
    shutil.copytree(example_repo / "iris", tmp_path / "repo" / "iris")
    settings = ServerSettings(repository=str(tmp_path / "repo"), http_port=0, grpc_port=-1,
                              store=f"sqlite:///{tmp_path / 'ferry.db'}", schedules=False,
                              alerts_interval_s=0, log_level="warning")

    async def run() -> tuple[set[tuple[str, str]], dict]:
        server = FerryServer(settings)
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.http_port}") as c:
                r = await c.get("/openapi.json")
                assert r.status_code == 200, r.text
            assert server.router is not None
            return {(m.lower(), p) for m, p, _ in server.router.routes()}, r.json()
        finally:
            await server.stop()

    registered, doc = asyncio.run(run())
    validate(doc)  # raises on any departure from the OpenAPI 3.1 schema
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == registered
    assert len(registered) >= 27 and ("post", "/v2/repository/models/{model}/load") in documented
    assert ("get", "/ferry/v1/predictions/{table}/{key}") in documented
    for method, path in sorted(documented):
        op = doc["paths"][path][method]
        assert "undocumented" not in op["summary"], (method, path)
        ok = op["responses"]["200"]["content"]
        assert ok and all(media["schema"] for media in ok.values()), (method, path)
        assert op["responses"]["default"]["content"]["application/json"]["schema"][
            "required"] == ["error"]
        if (method, path) in BODY_ROUTES:
            assert op["requestBody"]["content"], (method, path)
    infer = doc["paths"]["/v2/models/{model}/versions/{version}/infer"]["post"]
    assert {p["name"] for p in infer["parameters"]} >= {
        "model", "version", "ferry-request-id", "x-request-id", "traceparent"}
    assert "ferry-request-id" in infer["responses"]["200"]["headers"]
    assert infer["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "inputs"]


def test_a_route_added_without_a_doc_is_still_listed():
    async def handler(request: Request) -> Response:
        return Response()

    router = Router()
    router.add("GET", "/a/{model}", handler, RouteDoc("A", {"type": "object"}))
    router.add("DELETE", "/b", handler)
    doc = openapi_document(router)
    validate(doc)
    assert doc["paths"]["/a/{model}"]["get"]["summary"] == "A"
    assert doc["paths"]["/b"]["delete"]["summary"] == "DELETE /b (undocumented)"
