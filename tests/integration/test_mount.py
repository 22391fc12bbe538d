"""``Router.mount``: one handler takes every method on a prefix and every path under it, on
the server's own port (the seam the web UI's app plugs into), while routes keep winning."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from ferry.protocols.http import drain, serve_http
from ferry.protocols.router import Request, Response, Router, json_response


async def app(request: Request) -> Response:
    """A trivial mounted app: says what it was asked."""
    return json_response({"app": True, "method": request.method, "path": request.path,
                          "query": request.query, "body": request.body.decode(),
                          "params": request.params})


async def route(request: Request) -> Response:
    return json_response({"route": True, "params": request.params})


def test_a_mounted_handler_gets_every_method_and_sub_path():
    router = Router()
    router.add("GET", "/ui/api/exact", route)
    router.mount("/ui", app)
    router.add("GET", "/ui/items/{item}", route)  # added after the mount: still wins
    router.add("GET", "/v2/health/live", route)

    async def run() -> list[httpx.Response]:
        server, state = await serve_http(router, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                return [await c.get("/ui"), await c.get("/ui/"),
                        await c.get("/ui/static/app.js?v=2"),
                        await c.post("/ui/form", content=b"a=1"),
                        await c.put("/ui/x/y/z"), await c.delete("/ui/x"),
                        await c.patch("/ui/x"), await c.options("/ui"),
                        await c.get("/ui/api/exact"), await c.get("/ui/items/7"),
                        await c.get("/uix"), await c.get("/v2/health/live")]
        finally:
            await drain(server, state)

    answers = asyncio.run(run())
    assert all(a.status_code == 200 for a in answers[:10]), [a.text for a in answers]
    got = [orjson.loads(a.content) for a in answers]
    assert [g.get("method") for g in got[:8]] == ["GET", "GET", "GET", "POST", "PUT",
                                                   "DELETE", "PATCH", "OPTIONS"]
    assert [g["path"] for g in got[:3]] == ["/ui", "/ui/", "/ui/static/app.js"]
    assert got[2]["query"] == "v=2" and got[3]["body"] == "a=1" and got[4]["params"] == {}
    assert got[8] == {"route": True, "params": {}}
    assert got[9] == {"route": True, "params": {"item": "7"}}
    assert answers[10].status_code == 404  # a prefix is a path segment, not a string prefix
    assert got[11]["route"] is True


def test_mount_prefixes_are_checked():
    router = Router()
    for bad in ("ui", "/ui/", "/ui/{x}"):
        with pytest.raises(ValueError, match="mount prefix"):
            router.mount(bad, app)
    router.mount("/ui", app)
    with pytest.raises(ValueError, match="already mounted"):
        router.mount("/ui", app)
    assert router.mounts == {"/ui": app} and router.routes() == []
