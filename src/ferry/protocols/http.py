"""A lean HTTP/1.1 server: asyncio protocol + httptools parser, over ``router.Router``.

Why not a framework: the peers measured in ``shared/bench`` lose most of their time in the
request path (ASGI scopes, middleware stacks, per-request objects), not in the model. This
server parses straight into ``Request`` (bytes body, lower-cased headers, repeated headers
joined with ", "), calls one ``async`` handler and writes one buffer with ``Content-Length``
and ``Date``. It speaks HTTP/1.1 keep-alive, pipelining, chunked request bodies,
``Expect: 100-continue`` and ``HEAD`` (the ``GET`` handler runs; the body is dropped); an
``Upgrade`` request (``h2c``, websocket) is served as plain HTTP/1.1.

Promises:
- One handler runs at a time per connection, and responses leave **in request order**,
  early rejects included: a 400 (malformed), 413 (``Content-Length`` over
  ``max_body_bytes``) or 431 (request line + headers over ``max_header_bytes``) waits for
  the responses before it, then the connection is closed.
- ``100 Continue`` is sent only once the route exists and its request is the next to run; a
  missing route answers 404/405 in its place (then closes).
- Slow clients: a request's headers must arrive within ``header_timeout`` of their first
  byte and its body within ``body_timeout`` of its first byte, however they trickle (else
  the connection closes; behind pipelined requests still running, after their answers and
  a 408); an idle kept-alive connection is closed after ``keep_alive``; a client that reads
  nothing for ``send_timeout`` is closed. One sweeper task checks every connection's
  deadline a few times a second (no timer per request); ``http_timeouts.verdict`` decides.
- Memory per connection is bounded: pipelined requests are queued up to
  ``max_pipeline_bytes``, and while the client reads responses slower than they are made
  (``pause_writing``) reading stops and the next pipelined request waits.
- At most ``max_connections`` are open; one more gets 503 and is closed at once.
- A handler's ``FerryError`` becomes its status with ``{"error": message}``; any other
  exception becomes a 500 naming the method, path and an error id, which is logged with the
  traceback (the body never holds the exception's text). A closed connection cancels its
  running handler.
- ``drain`` stops accepting, lets running requests finish until its deadline, then cancels
  them and closes their connections, and returns only once they are unwound.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING

import httptools

from ferry.errors import FerryError
from ferry.monitoring.metrics import Metrics
from ferry.protocols.http_timeouts import BODY as _BODY
from ferry.protocols.http_timeouts import HEAD as _HEAD
from ferry.protocols.http_timeouts import IDLE as _IDLE
from ferry.protocols.http_timeouts import Action, verdict
from ferry.protocols.router import Request, Response, Router, error_response, json_response

if TYPE_CHECKING:
    from ferry.settings import ServerSettings

log = logging.getLogger("ferry.http")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The server's limits (``ServerSettings`` documents each; defaults are the same)."""

    max_body_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 32 * 1024
    max_pipeline_bytes: int = 1024 * 1024
    max_connections: int = 4096
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    keep_alive: float = 75.0
    send_timeout: float = 60.0

    @classmethod
    def from_settings(cls, s: ServerSettings) -> HttpLimits:
        return cls(s.max_body_bytes, s.max_header_bytes, s.max_pipeline_bytes,
                   s.max_connections, s.header_timeout_s, s.body_timeout_s, s.keep_alive_s,
                   s.send_timeout_s)


_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_JSON_200 = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_INF = float("inf")
_LINGER_S = 2.0
"""After an early reject, how long the connection keeps reading (and dropping) what the
client still sends, so that closing does not reset the connection before the client has
read the answer (nginx's lingering close)."""


def _date_line() -> bytes:
    return b"date: " + formatdate(usegmt=True).encode() + b"\r\n"


def _encode(response: Response, keep_alive: bool, date: bytes) -> bytes:
    if response.status == 200 and response.content_type == "application/json":
        head = [_JSON_200, str(len(response.body)).encode(), b"\r\n", date]
    else:
        head = [_STATUS_LINES.get(response.status,
                                  b"HTTP/1.1 %d Unknown\r\n" % response.status),
                b"content-type: ", response.content_type.encode(), b"\r\ncontent-length: ",
                str(len(response.body)).encode(), b"\r\n", date]
    if response.headers:
        for name, value in response.headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not keep_alive:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    head.append(response.body)
    return b"".join(head)


class HttpServerState:
    """What every connection of one server shares: router, limits, metrics, connections, and
    the ``Date`` header line of the current second."""

    def __init__(self, router: Router, limits: HttpLimits, metrics: Metrics) -> None:
        self.router = router
        self.limits = limits
        self.connections: set[HttpConnection] = set()
        self.draining = False
        self.sweeper: asyncio.Task[None] | None = None
        self.date = _date_line()
        self.refused = metrics.http_connections_refused
        self.closed = metrics.http_connections_closed
        self.rejects = metrics.http_rejects
        self.write_pauses = metrics.http_write_pauses
        metrics.http_connections.set_function(lambda: len(self.connections))

    async def sweep(self) -> None:
        """Refresh ``date`` and close connections past their deadline, twice a second (or
        four times per shortest timeout): no timer per request."""
        limits = self.limits
        shortest = min(limits.header_timeout, limits.body_timeout, limits.keep_alive,
                       limits.send_timeout)
        tick = max(0.05, min(0.5, shortest / 4))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            self.date = _date_line()
            now = loop.time()
            for conn in [c for c in self.connections if c.deadline <= now]:
                conn.expire(now)


class HttpConnection(asyncio.Protocol):
    """One client connection.

    ``deadline`` (event-loop time) is when the sweeper looks at the connection again: the end
    of the header, body, keep-alive, send or linger timeout that applies now. It is set on
    the transitions (message begin, headers complete, response written), never per byte, so
    a trickling client cannot push it back."""

    def __init__(self, state: HttpServerState) -> None:
        self._state = state
        self._limits = limits = state.limits
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_size = 0
        self._head_raw = -1
        self._phase = _IDLE
        self._upgrade = False
        self._upgraded: tuple[bytes, bytes, dict[str, str], str] | None = None
        self._continue_pending = False
        self._backlog: deque[tuple[Request | bytes, bool, int]] = deque()
        self._queued = 0
        self._task: asyncio.Task[Response] | None = None
        self._keep_alive = True
        self._head_only = False
        self._closing = False
        self._write_paused = False
        self._write_deadline = _INF
        self._reading_paused = False
        self._client: str | None = None
        self._now = self._loop.time()
        # a new connection is there to send a request: its first header timeout runs from
        # the accept (or its keep-alive timeout, when shorter)
        self.deadline = self._now + min(limits.header_timeout, limits.keep_alive)

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        state = self._state
        if len(state.connections) >= self._limits.max_connections:
            self._closing = True
            state.refused.inc()
            response = json_response({"error": f"the server has {len(state.connections)} "
                                               f"connections open, its limit "
                                               f"(max_connections); try again"}, 503)
            response.headers = [("retry-after", "1")]
            transport.write(_encode(response, False, state.date))  # type: ignore[attr-defined]
            transport.close()
            return
        peer = transport.get_extra_info("peername")
        self._client = peer[0] if isinstance(peer, tuple) else None
        state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state.connections.discard(self)
        self._transport = None
        self._closing = True
        self._backlog.clear()
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # after a reject: drop what the client still sends
        self._now = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._serve_upgrade_as_http(data[exc.args[0]:] if exc.args else b"")
            return
        except httptools.HttpParserError as exc:
            if not self._closing:
                self._reject(400, f"malformed HTTP request: {exc}")
            return
        if self._phase == _HEAD and not self._closing:  # this chunk ended inside a head
            if self._head_raw < 0:  # ... that began in it: its complete parts are counted
                self._head_raw = 0
            else:  # ... that began before: the whole chunk is head (an unterminated line)
                self._head_raw += len(data)
                if self._head_raw > self._limits.max_header_bytes:
                    self._reject_header_too_large()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._write_deadline = self._loop.time() + self._limits.send_timeout
        if self._write_deadline < self.deadline:
            self.deadline = self._write_deadline
        self._state.write_pauses.inc()
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._write_deadline = _INF
        self._update_reading()
        self._advance()

    # -- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._head_size = 0
        self._head_raw = -1
        self._continue_pending = False
        self._phase = _HEAD
        self.deadline = self._now + self._limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value)
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self._headers.get(key)
        self._headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self.deadline = self._now + self._limits.body_timeout
        limits = self._limits
        if self._head_size > limits.max_header_bytes:
            self._reject_header_too_large()
            raise _Stop
        headers = self._headers
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            self._reject(413, f"body of {length} bytes is over the limit of "
                              f"{limits.max_body_bytes} (max_body_bytes)")
            raise _Stop
        if "upgrade" in headers and self._parser.should_upgrade():
            self._upgrade = True
            return  # read again without its upgrade (_serve_upgrade_as_http)
        if "expect" in headers and headers["expect"].lower() == "100-continue":
            self._expect_continue()

    def on_body(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size > self._limits.max_body_bytes:
            self._reject(413, f"body is over the limit of {self._limits.max_body_bytes} bytes "
                              f"(max_body_bytes)")
            raise _Stop
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        if self._upgrade:  # served once the parser has given back the bytes after the head
            self._upgrade = False
            self._upgraded = (self._parser.get_method(), self._url, self._headers,
                              self._parser.get_http_version())
            return
        url = self._url.decode("latin-1")
        path, _, query = url.partition("?")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(self._parser.get_method().decode(), path, query, self._headers,
                          body, client=self._client)
        keep_alive = self._parser.should_keep_alive() and not self._state.draining
        if self._task is None and not self._write_paused:
            self.deadline = _INF
            self._start(request, keep_alive)
        else:  # behind the running one: queue it (bounded in bytes)
            size = len(body) + self._head_size
            self._backlog.append((request, keep_alive, size))
            self._queued += size
            self.deadline = self._write_deadline
            if self._queued > self._limits.max_pipeline_bytes:
                self._update_reading()

    # -- dispatch ------------------------------------------------------------------------
    def _start(self, request: Request, keep_alive: bool) -> None:
        self._keep_alive = keep_alive
        self._head_only = request.method == "HEAD"
        self._task = self._loop.create_task(_handle(self._state.router, request))
        self._task.add_done_callback(self._finish)

    def _finish(self, task: asyncio.Task[Response]) -> None:
        self._task = None
        transport = self._transport
        if transport is None or task.cancelled():
            return
        response = task.result()
        data = _encode(response, self._keep_alive, self._state.date)
        if self._head_only:
            data = data[:len(data) - len(response.body)]
        transport.write(data)
        if not self._keep_alive:
            self._closing = True
            transport.close()
            return
        if self._backlog or self._write_paused or self._continue_pending:
            self._advance()
        elif self._phase == _IDLE:
            self.deadline = self._loop.time() + self._limits.keep_alive

    def _advance(self) -> None:
        """The previous response is written: start the next request, or send the awaited
        ``100 Continue``, or start the keep-alive timeout; not while the client's reading
        lags (``resume_writing`` calls this again)."""
        transport = self._transport
        if self._write_paused or self._task is not None or transport is None:
            return
        if self._backlog:
            item, keep_alive, size = self._backlog.popleft()
            if isinstance(item, bytes):  # an early reject, in its turn
                self._write_reject(item)
                return
            self._queued -= size
            if self._reading_paused:
                self._update_reading()
            self._start(item, keep_alive)
        elif self._continue_pending:
            self._continue_pending = False
            if self._phase == _BODY:  # still waiting for the body (else it came anyway)
                transport.write(_CONTINUE)
                self.deadline = self._loop.time() + self._limits.body_timeout
        elif self._phase == _IDLE and not self._closing:
            self.deadline = self._loop.time() + self._limits.keep_alive

    def _update_reading(self) -> None:
        """Pause reading while the client reads too slowly or too much is queued."""
        want = not self._closing and (
            self._write_paused or self._queued > self._limits.max_pipeline_bytes)
        transport = self._transport
        if want == self._reading_paused or transport is None:
            return
        self._reading_paused = want
        if want:
            transport.pause_reading()
            return
        transport.resume_reading()
        if self._closing:
            return
        # the phase's timeout starts again: the client could not send while we did not read
        now = self._loop.time()
        if self._phase == _HEAD:
            self.deadline = now + self._limits.header_timeout
        elif self._phase == _BODY:
            self.deadline = now + self._limits.body_timeout

    def _expect_continue(self) -> None:
        """``Expect: 100-continue``: say go only for a route that exists, in turn."""
        path = self._url.decode("latin-1").partition("?")[0]
        try:
            self._state.router.match(self._parser.get_method().decode(), path)
        except FerryError as exc:
            self._reject_response(error_response(exc))
            raise _Stop from None
        if self._task is None and not self._write_paused and self._transport is not None:
            self._transport.write(_CONTINUE)
        else:  # sent by _advance once the requests before it are answered
            self._continue_pending = True
            self.deadline = self._write_deadline

    def _serve_upgrade_as_http(self, rest: bytes) -> None:
        """The parser stops at a request asking for another protocol (``Upgrade: h2c``,
        websocket). Ferry speaks HTTP/1.1 only, which RFC 9110 allows: hand the same request
        without its upgrade to a fresh parser, with the bytes that followed it."""
        upgraded, self._upgraded = self._upgraded, None
        if upgraded is None:  # CONNECT: answered (404/405) already; nothing more to read
            self._reject(400, "CONNECT is not supported")
            return
        method, url, headers, version = upgraded
        lines = [method, b" ", url, b" HTTP/", version.encode(), b"\r\n"]
        for name, value in headers.items():
            if name == "upgrade":
                continue
            if name == "connection":
                value = ", ".join(t for t in value.split(",")
                                  if t.strip().lower() not in ("upgrade", "http2-settings"))
                if not value:
                    continue
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"\r\n")
        self._parser = httptools.HttpRequestParser(self)
        self.data_received(b"".join(lines) + rest)

    def _reject_header_too_large(self) -> None:
        self._reject(431, f"request line and headers are over the limit of "
                          f"{self._limits.max_header_bytes} bytes (max_header_bytes)")

    def _reject(self, status: int, message: str) -> None:
        self._reject_response(json_response({"error": message}, status))

    def _reject_response(self, response: Response) -> None:
        """Answer a request we will not read to the end, in its turn, then close."""
        self._closing = True
        self._state.rejects.labels(str(response.status)).inc()
        data = _encode(response, False, self._state.date)
        if self._task is None and not self._write_paused:
            self._write_reject(data)
        else:  # after the responses to the requests before it
            self._backlog.append((data, False, 0))
            self.deadline = self._write_deadline
            self._update_reading()  # keep reading (and dropping) what comes

    def _write_reject(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        transport.write(data)
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()  # the client reads the answer, closes; we drop its bytes
        else:
            transport.close()
        self.deadline = self._loop.time() + _LINGER_S

    # -- deadlines and shutdown ----------------------------------------------------------
    def expire(self, now: float) -> None:
        """Called by the sweeper once ``deadline`` has passed: close, counting why, unless
        the connection is waiting on the server (then look again later)."""
        transport = self._transport
        if transport is None:
            return
        action, reason = verdict(self._phase, self._task is not None or bool(self._backlog),
                                 self._closing, self._reading_paused, self._write_paused,
                                 now >= self._write_deadline, self._continue_pending)
        if action is Action.WAIT_WRITE:
            self.deadline = self._write_deadline
            return
        if action is Action.PARK:
            self.deadline = _INF
            return
        if reason is not None:
            self._state.closed.labels(reason).inc()
        if action is Action.REJECT_408 and reason is not None:
            self._reject(408, f"the request's {reason.replace('_timeout', '')} took longer "
                              f"than {reason}_s")
        else:
            self._shut(transport)

    def _shut(self, transport: asyncio.Transport) -> None:
        self._closing = True
        self.deadline = _INF
        if transport.get_write_buffer_size():
            transport.abort()  # the client is not reading: do not wait for it
        else:
            transport.close()

    def close_if_idle(self) -> bool:
        """Close unless a request is running or waiting; True once the connection is
        closed."""
        transport = self._transport
        if transport is None:
            return True
        if self._task is None and not self._backlog and not self._write_paused:
            self._closing = True
            transport.close()  # after what is still buffered (the last response)
            return True
        return False

    def force_close(self) -> asyncio.Task[Response] | None:
        """Cancel the running request and drop the connection; the task, to await."""
        task = self._task
        if task is not None:
            task.cancel()
        self._closing = True
        self._backlog.clear()
        if self._transport is not None:
            self._transport.abort()
        return task


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
    except Exception:
        error_id = os.urandom(6).hex()
        log.exception("internal error %s on %s %s", error_id, request.method, request.path)
        return json_response({"error": f"internal error on {request.method} {request.path}; "
                                       f"the server log has the details under error id "
                                       f"{error_id}", "error_id": error_id}, 500)


async def serve_http(router: Router, host: str, port: int, limits: HttpLimits | None = None,
                     metrics: Metrics | None = None) -> tuple[asyncio.Server, HttpServerState]:
    """Start listening; returns the server and the shared state (for draining)."""
    state = HttpServerState(router, limits or HttpLimits(), metrics or Metrics())
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpConnection(state), host, port, backlog=2048,
                                      reuse_address=True)
    state.sweeper = loop.create_task(state.sweep())
    return server, state


async def drain(server: asyncio.Server, state: HttpServerState, timeout: float = 30.0) -> None:
    """Stop accepting and let in-flight requests finish for up to ``timeout`` seconds; then
    cancel the ones still running, close their connections and wait until the cancelled
    handlers have unwound, so that nothing runs on the models once this returns."""
    state.draining = True
    server.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while state.connections:
        for conn in list(state.connections):
            if conn.close_if_idle():
                state.connections.discard(conn)
        if not state.connections or loop.time() >= deadline:
            break
        await asyncio.sleep(0.02)
    if state.connections:
        busy = list(state.connections)
        tasks = [t for t in (conn.force_close() for conn in busy) if t is not None]
        state.connections.clear()
        state.closed.labels("drain").inc(len(busy))
        log.warning("shutdown: %d request(s) still running after %g s; cancelled, and %d "
                    "connection(s) closed", len(tasks), timeout, len(busy))
        if tasks:
            await asyncio.wait(tasks, timeout=5)
    if state.sweeper is not None:
        state.sweeper.cancel()
    await server.wait_closed()
