"""A lean HTTP/1.1 server: asyncio protocol + httptools parser, over ``router.Router``.

Why not a framework: the peers measured in ``shared/bench`` lose most of their time in the
request path (ASGI scopes, middleware stacks, per-request objects), not in the model. This
server parses straight into ``Request`` (bytes body, lower-cased headers), calls one
``async`` handler and writes one buffer. It speaks HTTP/1.1 keep-alive, pipelining (answers
in order), chunked request bodies and ``Expect: 100-continue``; it answers a body over
``max_body_bytes`` with 413 from its ``Content-Length`` before reading it, and any parser
error with 400.

Promises: one handler runs at a time per connection (pipelined requests wait their turn);
a handler's ``FerryError`` becomes its status with ``{"error": message}``; any other
exception becomes a 500 and is logged; a closed connection cancels its running handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from http import HTTPStatus
from urllib.parse import unquote

import httptools
import orjson

from ferry.errors import FerryError
from ferry.protocols.router import Request, Response, Router, error_response, json_response

log = logging.getLogger("ferry.http")


_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


_JSON_200 = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "


def _encode(response: Response, keep_alive: bool) -> bytes:
    if response.status == 200 and response.content_type == "application/json":
        head = [_JSON_200, str(len(response.body)).encode(), b"\r\n"]
    else:
        head = [_STATUS_LINES.get(response.status,
                                  b"HTTP/1.1 %d Unknown\r\n" % response.status),
                b"content-type: ", response.content_type.encode(), b"\r\ncontent-length: ",
                str(len(response.body)).encode(), b"\r\n"]
    if response.headers:
        for name, value in response.headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not keep_alive:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    head.append(response.body)
    return b"".join(head)


class HttpServerState:
    """What every connection of one server shares: router, limits, open connections."""

    def __init__(self, router: Router, max_body_bytes: int, idle_timeout: float = 75.0) -> None:
        self.router = router
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = idle_timeout
        """Connections with nothing running and no bytes received for this long are closed
        (kept-alive clients that went quiet, and slow-loris senders)."""
        self.connections: set[HttpConnection] = set()
        self.draining = False
        self.sweeper: asyncio.Task[None] | None = None

    async def sweep(self) -> None:
        """Close idle connections, checking a few times per timeout (no timer per request)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.05, min(5.0, self.idle_timeout / 4)))
            cutoff = loop.time() - self.idle_timeout
            for conn in list(self.connections):
                if conn.last_active < cutoff:
                    conn.close_if_idle()


class HttpConnection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, state: HttpServerState) -> None:
        self._state = state
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._backlog: deque[tuple[Request, bool]] = deque()
        self._task: asyncio.Task[Response] | None = None
        self._keep_alive = True
        self._closing = False
        self._client: str | None = None
        self.last_active = self._loop.time()

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._client = peer[0] if isinstance(peer, tuple) else None
        self._state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state.connections.discard(self)
        self._transport = None
        self._backlog.clear()
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self.last_active = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self._closing:
                self._reject(400, f"malformed HTTP request: {exc}")

    # -- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._state.max_body_bytes:
            self._reject(413, f"body of {length} bytes is over the limit of "
                              f"{self._state.max_body_bytes} (max_body_bytes)")
            raise _Stop
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size > self._state.max_body_bytes:
            self._reject(413, f"body is over the limit of {self._state.max_body_bytes} bytes "
                              f"(max_body_bytes)")
            raise _Stop
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        url = self._url.decode("latin-1")
        path, _, query = url.partition("?")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(self._parser.get_method().decode(), unquote(path), query,
                          self._headers, body, client=self._client)
        keep_alive = self._parser.should_keep_alive() and not self._state.draining
        if self._task is None:
            self._start(request, keep_alive)
        else:
            self._backlog.append((request, keep_alive))
            if len(self._backlog) > 32 and self._transport is not None:
                self._transport.pause_reading()

    # -- dispatch ------------------------------------------------------------------------
    def _start(self, request: Request, keep_alive: bool) -> None:
        self._keep_alive = keep_alive
        self._task = self._loop.create_task(_handle(self._state.router, request))
        self._task.add_done_callback(self._finish)

    def _finish(self, task: asyncio.Task[Response]) -> None:
        self._task = None
        self.last_active = self._loop.time()
        transport = self._transport
        if transport is None or task.cancelled():
            return
        transport.write(_encode(task.result(), self._keep_alive))
        if not self._keep_alive:
            self._closing = True
            transport.close()
            return
        if self._backlog:
            request, keep_alive = self._backlog.popleft()
            if len(self._backlog) <= 32:
                transport.resume_reading()
            self._start(request, keep_alive)

    def _reject(self, status: int, message: str) -> None:
        """Answer a request we will not read to the end, then close."""
        self._closing = True
        if self._transport is not None:
            body = orjson.dumps({"error": message})
            self._transport.write(_encode(Response(body, status), keep_alive=False))
            self._transport.close()

    def close_if_idle(self) -> bool:
        """Close unless a request is being handled; True once the connection is closed."""
        if self._task is None and self._transport is not None:
            self._transport.close()
            return True
        return self._transport is None


class _Stop(Exception):
    """Raised inside a parser callback to stop reading a rejected request."""


async def _handle(router: Router, request: Request) -> Response:
    try:
        handler, request.params = router.match(request.method, request.path)
        return await handler(request)
    except FerryError as exc:
        return error_response(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)


async def serve_http(router: Router, host: str, port: int, max_body_bytes: int,
                     idle_timeout: float = 75.0) -> tuple[asyncio.Server, HttpServerState]:
    """Start listening; returns the server and the shared state (for draining)."""
    state = HttpServerState(router, max_body_bytes, idle_timeout)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpConnection(state), host, port, backlog=2048,
                                      reuse_address=True)
    state.sweeper = loop.create_task(state.sweep())
    return server, state


async def drain(server: asyncio.Server, state: HttpServerState, timeout: float = 30.0) -> None:
    """Stop accepting, let in-flight requests finish, close every connection."""
    state.draining = True
    if state.sweeper is not None:
        state.sweeper.cancel()
    server.close()
    deadline = asyncio.get_running_loop().time() + timeout
    while state.connections and asyncio.get_running_loop().time() < deadline:
        for conn in list(state.connections):
            if conn.close_if_idle():
                state.connections.discard(conn)
        if state.connections:
            await asyncio.sleep(0.02)
    await server.wait_closed()
