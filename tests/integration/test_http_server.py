"""The HTTP server against slow and hostile clients, over raw sockets: slow-loris, timeouts
that trickling cannot reset, the header limit, the connection cap, write flow control,
pipelining order with early rejects, 100-continue, HEAD, Allow, Date, repeated headers,
Upgrade, paths decoded once, 500 bodies, and the force-close at the drain deadline.

Most cases run against real ``ferry serve`` processes; the two that need a route that
misbehaves (a handler raising a plain exception, one echoing its headers) run the same
server in-process with ``serve_http``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import select
import shutil
import signal
import socket
import textwrap
import threading
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import orjson
import pytest

from tests.conftest import ServerProcess

IRIS = b"/v2/models/iris/infer"
IRIS_BODY = orjson.dumps({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype":
                                      "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})


# -- raw HTTP/1.1 on a socket ----------------------------------------------------------------
def post(path: bytes, body: bytes, *extra: bytes) -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n%s" % (path, len(body),
                                                 b"".join(h + b"\r\n" for h in extra), body))


def get(path: bytes, method: bytes = b"GET", *extra: bytes) -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (method, path,
                                                    b"".join(h + b"\r\n" for h in extra))


class Reader:
    """Reads whole responses off a socket (status, lower-cased headers, body)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed; unread {self.buf[:200]!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only or status == 100 else int(headers.get("content-length", 0))
        while len(self.buf) < length:
            if not self._fill():
                raise EOFError("connection closed inside a body")
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed(self) -> bool:
        """True when the server closed the connection (after any unread bytes)."""
        try:
            return not self.buf and not self._fill()
        except ConnectionResetError:
            return True


def connect(server: ServerProcess, timeout: float = 10) -> socket.socket:
    host, port = server.hostport.split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def metric(server: ServerProcess, name: str, labels: str = "") -> float:
    text = server.client.get("/metrics").text
    found = re.search(rf"^{name}(?:{{{labels}}})? (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


# -- servers -----------------------------------------------------------------------------
_SLOW_MODEL = '''
import time
from pathlib import Path

class Slow:
    """y = x, after sleeping x[0, 0] seconds; records when it starts and when it unloads."""
    def load(self, version_dir):
        self.folder = Path(version_dir).parent
    def predict(self, inputs):
        (self.folder / "started_at").write_text(repr(time.time()))
        time.sleep(float(inputs["x"][0, 0]))
        return {"y": inputs["x"]}
    def unload(self):
        (self.folder / "unloaded_at").write_text(repr(time.time()))
'''


@pytest.fixture(scope="module")
def http_repo(example_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("http-repo")
    shutil.copytree(example_repo / "iris", root / "iris")
    (root / "slow" / "1").mkdir(parents=True)
    (root / "slow" / "1" / "model.py").write_text(textwrap.dedent(_SLOW_MODEL))
    (root / "slow" / "model.yaml").write_text(textwrap.dedent("""\
        runtime: python
        max_batch_size: 0
        execution: thread  # sleeps off the event loop
        inputs: [{name: x, datatype: FP32, shape: [1, 1]}]
        outputs: [{name: y, datatype: FP32, shape: [1, 1]}]
    """))
    return root


def slow_body(seconds: float) -> bytes:
    return orjson.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                                     "data": [seconds]}]})


@pytest.fixture(scope="module")
def tight(http_repo: Path):
    """A server with short timeouts, for the slow-client cases."""
    proc = ServerProcess(http_repo, "--store", "none", "--header-timeout-s", "2",
                         "--body-timeout-s", "2", "--send-timeout-s", "3", "--keep-alive-s", "5")
    yield proc
    proc.stop()


# -- slow clients ------------------------------------------------------------------------
def test_slow_loris_is_cut_by_the_header_timeout_while_others_are_served(tight):
    """200 connections each send one header byte per second (a new one replaces each one
    closed); a normal client keeps its latency, every trickler is closed ~2 s after its first
    byte, and the server's memory stays put."""
    def latencies(seconds: float) -> list[float]:
        out = []
        with connect(tight) as sock:
            reader = Reader(sock)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t = time.perf_counter()
                sock.sendall(post(IRIS, IRIS_BODY))
                assert reader.response()[0] == 200
                out.append(time.perf_counter() - t)
                time.sleep(0.005)
        return out

    def p99(values: list[float]) -> float:
        return sorted(values)[int(len(values) * 0.99)]

    latencies(1.0)  # warm up
    quiet = p99(latencies(2.0))
    rss_before = rss_kib(tight.proc.pid)

    wire = get(b"/v2/health/live") * 10  # far longer than anyone will send
    lifetimes: list[float] = []
    answered = 0
    stop = threading.Event()
    host, port = tight.hostport.split(":")

    def attack() -> None:
        nonlocal answered
        socks: dict[socket.socket, list[float | int]] = {}  # [first byte's time, bytes sent]

        def opened() -> None:
            s = socket.create_connection((host, int(port)), timeout=5)
            s.setblocking(False)
            socks[s] = [0.0, 0]

        for _ in range(200):
            opened()
        tick = time.monotonic()
        while not stop.is_set():
            for s, state in socks.items():  # one byte each, once a second
                try:
                    s.send(wire[state[1]:state[1] + 1])
                except (BrokenPipeError, ConnectionResetError):
                    continue
                if not state[1]:
                    state[0] = time.monotonic()
                state[1] += 1
            tick += 1.0
            while not stop.is_set() and (left := tick - time.monotonic()) > 0:
                readable, _, _ = select.select(list(socks), [], [], min(left, 0.1))
                for s in readable:  # closed by the server (or answered)
                    try:
                        answered += bool(s.recv(4096))
                    except ConnectionResetError:
                        pass
                    lifetimes.append(time.monotonic() - socks.pop(s)[0])
                    s.close()
                    opened()
        for s in socks:
            s.close()

    attacker = threading.Thread(target=attack)
    attacker.start()
    try:
        time.sleep(1.0)
        under_attack = latencies(7.0)
        open_now = metric(tight, "ferry_http_connections")
        rss_during = rss_kib(tight.proc.pid)
    finally:
        stop.set()
        attacker.join()
    quiet = max(quiet, p99(latencies(2.0)))  # the quiet figure on both sides of the attack

    assert answered == 0
    assert len(lifetimes) >= 200, "every first trickler should have been closed by now"
    # closed by the 2 s header timeout from the first byte (swept twice a second), never
    # pushed back by the bytes that followed
    assert 1.9 <= min(lifetimes) and max(lifetimes) <= 3.2, (min(lifetimes), max(lifetimes))
    assert open_now >= 150  # the attack was on while the client measured
    assert metric(tight, "ferry_http_connections_closed_total",
                  'reason="header_timeout"') >= len(lifetimes)
    attacked = p99(under_attack)
    assert attacked <= max(2 * quiet, quiet + 0.03), (attacked, quiet)
    assert rss_during - rss_before < 30_000, (rss_before, rss_during)


def test_header_timeout_holds_behind_a_running_request(tight):
    """A request trickled in behind a slow one (3 s, past the 2 s header timeout): its header
    clock runs from its first byte all the same; the slow one is still answered, then 408."""
    with connect(tight) as sock:
        reader = Reader(sock)
        sock.sendall(post(b"/v2/models/slow/infer", slow_body(3.0)) + b"G")
        start = time.monotonic()
        for byte in b"ET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
            if select.select([sock], [], [], 0.25)[0]:
                break
            sock.sendall(bytes([byte]))
        status, _, body = reader.response()
        assert status == 200 and b'"y"' in body
        status, headers, body = reader.response()
        assert status == 408 and b"header_timeout_s" in body
        assert reader.closed()
        closed_after = time.monotonic() - start
    assert 2.9 <= closed_after <= 4.5, closed_after


def test_body_timeout_runs_from_the_first_body_byte(tight):
    with connect(tight) as sock:
        sock.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 100\r\n\r\n")
        start = time.monotonic()
        reader = Reader(sock)
        closed_after = None
        for _ in range(20):  # one byte every 0.25 s would take 25 s
            try:
                sock.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - start
                break
            ready, _, _ = select.select([sock], [], [], 0.25)
            if ready and reader.closed():
                closed_after = time.monotonic() - start
                break
    assert closed_after is not None and 1.8 <= closed_after <= 3.5, closed_after
    assert metric(tight, "ferry_http_connections_closed_total", 'reason="body_timeout"') >= 1


def test_a_client_that_reads_nothing_holds_no_pile_of_responses(tight):
    """Pipelined requests for ~10 KB answers, none read: the server stops writing and reading
    at its send buffer (write flow control) instead of holding every answer, then closes
    the connection at the send timeout."""
    size = len(tight.client.get("/openapi.json").content)
    count = 100_000_000 // size  # ~100 MB of answers if they were all made
    rss_before = rss_kib(tight.proc.pid)
    pauses_before = metric(tight, "ferry_http_write_pauses_total")
    sock = connect(tight)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)

    def send() -> None:
        try:
            sock.sendall(get(b"/openapi.json") * count)
        except OSError:
            pass  # closed by the server at its send timeout

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(1.5)
    rss_during = rss_kib(tight.proc.pid)
    assert metric(tight, "ferry_http_write_pauses_total") > pauses_before
    assert rss_during - rss_before < 30_000, (rss_before, rss_during)
    closed = 0.0
    deadline = time.monotonic() + 10  # the 3 s send timeout, counted from the first pause
    while not closed and time.monotonic() < deadline:
        time.sleep(0.2)
        closed = metric(tight, "ferry_http_connections_closed_total", 'reason="send_timeout"')
    sender.join(timeout=10)
    sock.close()
    assert closed >= 1
    assert tight.client.get("/v2/health/live").status_code == 200


# -- pipelining, early rejects, 100-continue -----------------------------------------------
@pytest.mark.parametrize(("bad", "status"), [
    pytest.param(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 900000000"
                 b"\r\n\r\n{", 413, id="413-by-content-length"),
    pytest.param(b"NOT HTTP AT ALL\r\n\r\n", 400, id="400-malformed"),
    pytest.param(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000
                 + b"\r\n\r\n", 431, id="431-header-too-large"),
])
def test_pipelined_burst_answers_in_order_then_closes(tight, bad, status):
    # the first request runs 0.3 s: the reject is parsed while it runs, and must wait for it
    burst = (post(b"/v2/models/slow/infer", slow_body(0.3)) + post(IRIS, IRIS_BODY)
             + bad + get(b"/v2/health/live") + b"MALFORMED\r\n\r\n")
    with connect(tight) as sock:
        sock.sendall(burst)
        reader = Reader(sock)
        first, second, third = (reader.response() for _ in range(3))
        assert reader.closed()
    assert (first[0], second[0], third[0]) == (200, 200, status)
    assert b'"y"' in first[2] and b"probabilities" in second[2]
    assert third[1]["connection"] == "close"


def test_100_continue_waits_for_its_turn(tight):
    with connect(tight) as sock:
        sock.sendall(post(b"/v2/models/slow/infer", slow_body(0.5))
                     + b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue"
                     b"\r\nContent-Length: %d\r\n\r\n" % len(IRIS_BODY))
        reader = Reader(sock)
        assert reader.response()[0] == 200  # the slow one first, no 100 ahead of it
        assert reader.response()[0] == 100
        sock.sendall(IRIS_BODY)
        status, _, answer = reader.response()
        assert status == 200 and b"probabilities" in answer


def test_100_continue_is_refused_for_a_missing_route(tight):
    with connect(tight) as sock:
        sock.sendall(b"POST /v2/nowhere HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: 10\r\n\r\n")
        reader = Reader(sock)
        status, _, body = reader.response()
        assert status == 404 and b"no route" in body
        assert reader.closed()


# -- limits ------------------------------------------------------------------------------
def test_header_limit_is_431_counting_url_and_headers(server):
    with connect(server) as sock:  # 20 KiB of headers: under the 32 KiB default
        sock.sendall(get(b"/v2/health/live", b"GET", b"X-A: " + b"a" * 10_000,
                         b"X-B: " + b"b" * 10_000))
        assert Reader(sock).response()[0] == 200
    with connect(server) as sock:  # the URL counts
        sock.sendall(get(b"/v2/health/live?" + b"q" * 20_000, b"GET",
                         b"X-A: " + b"a" * 15_000))
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert status == 431 and b"max_header_bytes" in body and "date" in headers
        assert reader.closed()
    with connect(server) as sock:  # one endless line, sent in pieces: cut, not buffered
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Endless: ")
        reader = Reader(sock)
        for _ in range(30):
            try:
                sock.sendall(b"z" * 4096)
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([sock], [], [], 0.05)[0]:
                break
        assert reader.response()[0] == 431
    assert server.alive()


def test_connection_cap(http_repo):
    capped = ServerProcess(http_repo, "--store", "none", "--max-connections", "5")
    try:
        held = [connect(capped) for _ in range(5)]
        for sock in held:  # each accepted and served
            sock.sendall(get(b"/v2/health/live"))
            assert Reader(sock).response()[0] == 200
        with connect(capped) as extra:
            reader = Reader(extra)
            status, headers, body = reader.response()
            assert status == 503 and b"max_connections" in body
            assert headers["retry-after"] == "1"
            assert reader.closed()
        for sock in held:
            sock.close()
        time.sleep(0.2)
        assert capped.client.get("/v2/health/live").status_code == 200
        assert metric(capped, "ferry_http_connections_refused_total") == 1
    finally:
        capped.stop()


# -- protocol details ----------------------------------------------------------------------
def test_head_is_get_without_the_body(server):
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(get(b"/v2/models/iris"))
        status, headers, body = reader.response()
        assert status == 200
        sock.sendall(get(b"/v2/models/iris", b"HEAD") + get(b"/v2/health/live"))
        status, head_headers, _ = reader.response(head_only=True)
        assert status == 200 and head_headers["content-length"] == str(len(body))
        # the next answer follows at once: no body bytes were sent for the HEAD
        assert reader.response()[2] == b'{"live":true}'


def test_405_carries_allow(server):
    response = server.client.get("/v2/models/iris/infer")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    response = server.client.delete("/v2/health/live")
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"
    assert "use GET or HEAD" in response.json()["error"]


def test_every_response_has_a_date(server):
    for response in (server.client.get("/v2/health/live"),
                     server.client.get("/v2/nowhere"),
                     server.client.post("/v2/models/iris/infer", content=b"{")):
        sent = parsedate_to_datetime(response.headers["date"]).timestamp()
        assert abs(sent - time.time()) < 5, response.headers["date"]


def test_upgrade_is_ignored_and_served_as_http11(server):
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(get(b"/v2/health/live", b"GET", b"Connection: Upgrade, HTTP2-Settings",
                         b"Upgrade: h2c", b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"))
        assert reader.response()[:1] == (200,)
        # with a body: read as the request's body, not as the new protocol's first bytes
        sock.sendall(post(IRIS, IRIS_BODY, b"Connection: Upgrade", b"Upgrade: websocket")
                     + get(b"/v2/health/live"))
        status, _, body = reader.response()
        assert status == 200 and b"probabilities" in body
        assert reader.response()[2] == b'{"live":true}'


def test_paths_are_decoded_once(server):
    def error(path: str) -> str:
        return server.client.post(path, content=IRIS_BODY).json()["error"]

    assert "unknown model: 'a/b' is not found" in error("/v2/models/a%2Fb/infer")
    assert "unknown model: 'iris%41' is not found" in error("/v2/models/iris%2541/infer")
    assert server.client.post("/v2/models/ir%69s/infer", content=IRIS_BODY).status_code == 200


# -- shutdown ------------------------------------------------------------------------------
def test_drain_deadline_closes_running_requests_before_models_unload(http_repo):
    folder = http_repo / "slow"
    for name in ("started_at", "unloaded_at"):
        (folder / name).unlink(missing_ok=True)
    proc = ServerProcess(http_repo, "--store", "none", "--drain-timeout-s", "0.5",
                         "--log-level", "info")
    try:
        sock = connect(proc, timeout=30)
        sock.sendall(post(b"/v2/models/slow/infer", slow_body(4)))
        deadline = time.monotonic() + 10
        while not (folder / "started_at").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        signalled = time.time()
        proc.proc.send_signal(signal.SIGTERM)
        reader = Reader(sock)
        assert reader.closed()  # no answer: the request was cancelled
        closed_at = time.time()
        sock.close()
        assert proc.proc.wait(30) == 0
    finally:
        proc.stop()
    unloaded_at = float((folder / "unloaded_at").read_text())
    assert closed_at - signalled < 2.5, closed_at - signalled
    assert closed_at < unloaded_at
    assert "1 request(s) still running" in "".join(proc.log)


# -- in-process: routes that misbehave -------------------------------------------------------
def _run_in_process(scenario, caplog=None):
    from ferry.monitoring.metrics import Metrics
    from ferry.protocols.http import HttpLimits, drain, serve_http
    from ferry.protocols.router import Request, Response, Router

    async def boom(request: Request) -> Response:
        raise RuntimeError("secret internals: password=hunter2")

    async def headers(request: Request) -> Response:
        return Response(orjson.dumps(request.headers))

    async def main():
        router = Router()
        router.add("GET", "/boom", boom)
        router.add("GET", "/headers", headers)
        server, state = await serve_http(router, "127.0.0.1", 0, HttpLimits(), Metrics())
        port = server.sockets[0].getsockname()[1]
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                return await scenario(reader, writer)
            finally:
                writer.close()
        finally:
            await drain(server, state, 1)

    return asyncio.run(main())


async def _exchange(reader, writer, wire: bytes) -> tuple[int, bytes]:
    writer.write(wire)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head).group(1))
    return int(head.split()[1]), await reader.readexactly(length)


def test_500_names_what_failed_not_the_exception(caplog):
    caplog.set_level(logging.ERROR, "ferry.http")

    async def scenario(reader, writer):
        return await _exchange(reader, writer, get(b"/boom"))

    status, body = _run_in_process(scenario)
    error = orjson.loads(body)
    assert status == 500
    assert "GET /boom" in error["error"] and error["error_id"] in error["error"]
    assert "secret" not in body.decode() and "RuntimeError" not in body.decode()
    logged = [r for r in caplog.records if error["error_id"] in r.getMessage()]
    assert logged and "secret internals" in logged[0].exc_text


def test_repeated_request_headers_are_kept():
    async def scenario(reader, writer):
        return await _exchange(reader, writer, get(b"/headers", b"GET", b"Accept: text/a",
                                                   b"X-Tag: one", b"accept: text/b"))

    status, body = _run_in_process(scenario)
    assert status == 200
    assert orjson.loads(body)["accept"] == "text/a, text/b"


def test_every_http_limit_is_a_setting_and_a_serve_flag():
    from ferry.cli.serve import serve
    from ferry.protocols.http import HttpLimits
    from ferry.settings import ServerSettings

    assert HttpLimits.from_settings(ServerSettings()) == HttpLimits()  # one set of defaults
    flags = {p.name for p in serve.params}
    for name in ("keep_alive_s", "max_body_bytes", "header_timeout_s", "body_timeout_s",
                 "send_timeout_s", "max_header_bytes", "max_connections",
                 "max_pipeline_bytes", "drain_timeout_s"):
        assert name in ServerSettings.model_fields and name in flags, name
