"""Bad input gets a clear 4xx naming the field, a failing model a 500 for its batch only,
and the server keeps serving. Every case against the running server."""

from __future__ import annotations

import socket
import struct

import orjson
import pytest

IRIS = "/v2/models/iris/infer"


def tensor(name="float_input", shape=(1, 4), datatype="FP32", data=(5.1, 3.5, 1.4, 0.2)):
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": list(data)}


CASES = [
    # (path, body, status, words in the message)
    (IRIS, b"{not json", 400, "not valid JSON"),
    (IRIS, b"[1, 2]", 400, "JSON object"),
    (IRIS, {"inputs": []}, 400, "'inputs' must be a non-empty list"),
    (IRIS, {"inputs": [tensor(name="petals")]}, 400, "unknown input 'petals'"),
    (IRIS, {"inputs": [tensor(), tensor(name="extra")]}, 400, "unknown input 'extra'"),
    ("/v2/models/echo/infer", {"inputs": [{"name": "x", "shape": [0, 3], "datatype": "FP32",
                                           "data": []}]}, 422, "empty batch"),
    (IRIS, {"inputs": [tensor(datatype="INT64", data=(5, 3, 1, 0))]}, 400,
     "datatype INT64 but the model expects FP32"),
    (IRIS, {"inputs": [tensor(datatype="FLOAT")]}, 400, "datatype 'FLOAT' is not one of"),
    (IRIS, {"inputs": [tensor(shape=(1, 3), data=(1, 2, 3))]}, 400,
     "shape [1, 3] does not match the model's [-1, 4]"),
    (IRIS, {"inputs": [tensor(shape=(1, 4), data=(1, 2, 3))]}, 400,
     "data has 3 values but shape [1, 4] needs 4"),
    (IRIS, {"inputs": [tensor(data=("a", "b", "c", "d"))]}, 400, "data holds strings"),
    (IRIS, {"inputs": [tensor(data=(1, None, 2, 3))]}, 400, "null"),
    (IRIS, {"inputs": [tensor(shape=(1, "4"))]}, 400, "shape must be a list of non-negative"),
    (IRIS, {"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32"}]}, 400,
     "no 'data'"),
    # more rows than max_batch_size are served (test_large_requests.py); more than the
    # version's whole queue could ever hold are not
    ("/v2/models/echo/infer", {"inputs": [{"name": "x", "shape": [65, 3], "datatype": "FP32",
                                           "data": [1.0] * 195}]}, 400,
     "65 rows is over max_queue_size 64"),
    ("/v2/models/nope/infer", {"inputs": [tensor()]}, 404,
     "Request for unknown model: 'nope' is not found; served models: ["),
    ("/v2/models/iris/versions/7/infer", {"inputs": [tensor()]}, 404,
     "Request for unknown model: 'iris' version 7 is not found; served versions: [1, 2]"),
    ("/v2/models/iris/versions/x/infer", {"inputs": [tensor()]}, 404, "not an integer"),
    ("/v2/models/broken/infer", {"inputs": [tensor()]}, 503, "onnxruntime could not load"),
    ("/v2/models/pickled/infer", {"inputs": [tensor()]}, 503, "--trust-pickles"),
    ("/v2/models/badmanifest/infer", {"inputs": [tensor()]}, 503, "max_batchsize"),
    (IRIS, {"inputs": [tensor()], "outputs": [{"name": "logits"}]}, 400,
     "unknown output 'logits'"),
    ("/v2/nowhere", {}, 404, "no route"),
    ("/v1/models/iris:predict", {"instances": [[1, 2, 3]]}, 400, "does not match"),
    ("/v1/models/iris:predict", {"rows": []}, 400, "exactly one of 'instances'"),
]


@pytest.mark.parametrize(("path", "body", "status", "words"), CASES,
                         ids=[f"{c[2]}-{c[3][:30]}" for c in CASES])
def test_bad_input_is_a_clear_4xx(server, path, body, status, words):
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = server.client.post(path, content=content)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_wrong_method_is_405(server):
    response = server.client.get(IRIS)
    assert response.status_code == 405 and "use POST" in response.json()["error"]


def test_nan_is_422_where_the_model_forbids_it(server):
    header = orjson.dumps({"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32",
                                       "parameters": {"binary_data_size": 40}}]})
    raw = struct.pack("<10f", *([0.0] * 9 + [float("nan")]))
    response = server.client.post("/v2/models/nonan/infer", content=header + raw,
                                  headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 422 and "holds NaN" in response.json()["error"]
    # the same NaN is fine for a model that allows it
    ok = server.client.post("/v2/models/diabetes/infer", content=header + raw,
                            headers={"Inference-Header-Content-Length": str(len(header))})
    assert ok.status_code == 200


@pytest.mark.parametrize(("size", "header_length", "extra", "words"), [
    (999, None, b"", "runs past the end"),
    (16, "9999", b"", "Inference-Header-Content-Length is 9999"),
    (16, "abc", b"", "must be an integer"),
    (8, None, b"", "binary_data_size is 8 bytes but shape [1, 4] of FP32 needs 16"),
    (16, None, b"left over", "binary section has 25 bytes"),
])
def test_lying_binary_headers(server, size, header_length, extra, words):
    header = orjson.dumps({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32",
                                       "parameters": {"binary_data_size": size}}]})
    body = header + struct.pack("<4f", 5.1, 3.5, 1.4, 0.2)[: min(size, 16)] + extra
    response = server.client.post(IRIS, content=body, headers={
        "Inference-Header-Content-Length": header_length or str(len(header))})
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]


def test_model_exception_is_500_for_that_request_only(server):
    bad = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [-1, 1]}]}
    good = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 1]}]}
    response = server.client.post("/v2/models/raiser/infer", json=bad)
    assert response.status_code == 500
    assert "negative values are not allowed" in response.json()["error"]
    assert server.client.post("/v2/models/raiser/infer", json=good).json()["outputs"][0][
        "data"] == [2.0, 2.0]
    assert server.alive()


def test_body_over_the_limit_is_413_without_being_read(server):
    host, port = server.hostport.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 900000000\r\nContent-Type: application/json\r\n\r\n{")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"over the limit" in reply
    assert server.alive()


def test_chunked_body_over_the_limit_is_413(test_repo):
    from tests.conftest import ServerProcess

    small = ServerProcess(test_repo, "--max-body-bytes", "1000")
    try:
        host, port = small.hostport.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n" + b"800\r\n" + b"x" * 2048
                         + b"\r\n")
            reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 413")
        ok = small.client.post(IRIS, json={"inputs": [tensor()]})
        assert ok.status_code == 200
    finally:
        small.stop()


def test_malformed_http_is_400_and_server_lives(server):
    host, port = server.hostport.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400")
    assert server.alive()


def test_pipelined_requests_are_answered_in_order(server):
    host, port = server.hostport.split(":")
    bodies = [orjson.dumps({"id": f"p{i}", "inputs": [tensor()]}) for i in range(5)]
    wire = b"".join(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                    b"\r\n%s" % (len(b), b) for b in bodies)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(wire)
        data = b""
        while data.count(b'"id":"p') < 5:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    order = [data.index(b'"id":"p%d"' % i) for i in range(5)]
    assert order == sorted(order)


def test_expect_100_continue(server):
    host, port = server.hostport.split(":")
    body = orjson.dumps({"inputs": [tensor()]})
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_queue_full_is_503_with_retry_after(server):
    import concurrent.futures as cf

    import httpx

    rows = [[1.0, 2.0, 3.0]] * 32
    body = {"inputs": [{"name": "x", "shape": [32, 3], "datatype": "FP32", "data": rows}]}

    def call(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            return c.post("/v2/models/echo/infer", json=body)

    with cf.ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(call, range(48)))
    busy = [r for r in responses if r.status_code == 503]
    assert busy, "echo's max_queue_size of 64 rows should overflow with 24 x 32 rows"
    assert busy[0].headers["retry-after"] == "1"
    assert "queue full" in busy[0].json()["error"]
    assert all(r.status_code in (200, 503) for r in responses)


def test_model_deadline_from_request_parameters(server):
    # a timeout of 1 microsecond expires before the request reaches the model
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
            "parameters": {"timeout": 1}}
    response = server.client.post("/v2/models/echo/infer", json=body)
    assert response.status_code == 504
    assert "deadline passed" in response.json()["error"]


def test_idle_connections_are_closed(test_repo):
    from tests.conftest import ServerProcess

    quick = ServerProcess(test_repo, "--keep-alive-s", "0.5", "--header-timeout-s", "1")
    try:
        host, port = quick.hostport.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as idle, \
                socket.create_connection((host, int(port)), timeout=10) as slow:
            # never ends: closed by the header timeout
            slow.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n")
            assert idle.recv(1024) == b""  # closed by the server, not by the 10 s timeout
            assert slow.recv(1024) == b""
        assert quick.client.post(IRIS, json={"inputs": [tensor()]}).status_code == 200
    finally:
        quick.stop()
