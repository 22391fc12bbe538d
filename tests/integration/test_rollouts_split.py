"""Endpoints against a running server: every response names the version that served it
(V2 body and ``ferry-model-version`` header, TF Serving header, gRPC field); a 90/10 split
passes a chi-square test over 10,000 requests; sticky keys keep their version; a request
that names a version bypasses the policy (docs/rollouts.md)."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.conftest import ServerProcess

ROW = [5.1, 3.5, 1.4, 0.2]
BODY = {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}
_BODY = orjson.dumps(BODY)


@pytest.fixture(scope="module")
def two_versions(example_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris with versions 1 and 2 both live (its version policy is latest: 2)."""
    root = tmp_path_factory.mktemp("rollouts")
    shutil.copytree(example_repo / "iris", root / "iris")
    return root


@pytest.fixture(scope="module")
def srv(two_versions: Path) -> Iterator[ServerProcess]:
    # seeded draws: the chi-square test below judges the same 10,000 draws every run, so it
    # cannot fail by chance (1 run in 100 at p > 0.01) while it still fails on wrong weights
    proc = ServerProcess(two_versions, env={"FERRY_ROUTING_SEED": "7"})
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def reset(srv: ServerProcess) -> Iterator[None]:
    yield
    srv.client.put("/ferry/v1/endpoints/iris", json={"kind": "pin", "version": None})


def put(srv: ServerProcess, policy: dict) -> dict:
    r = srv.client.put("/ferry/v1/endpoints/iris", json=policy)
    assert r.status_code == 200, r.text
    return r.json()


async def _connection(host: str, port: int, requests: list[bytes]) -> list[str]:
    """Pipeline ``requests`` on one keep-alive connection (written in chunks while the
    answers are read); the ``ferry-model-version`` of each answer, in order."""
    reader, writer = await asyncio.open_connection(host, port)
    versions: list[str] = []

    async def write() -> None:
        for i in range(0, len(requests), 64):
            writer.write(b"".join(requests[i:i + 64]))
            await writer.drain()

    sending = asyncio.create_task(write())
    for _ in requests:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 200"), head
        fields = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        body = await reader.readexactly(int(fields["content-length"]))
        assert orjson.loads(body)["model_version"] == fields["ferry-model-version"]
        versions.append(fields["ferry-model-version"])
    await sending
    writer.close()
    return versions


def _request(headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"POST /v2/models/iris/infer HTTP/1.1\r\nhost: t\r\ncontent-type: "
            f"application/json\r\ncontent-length: {len(_BODY)}\r\n{extra}\r\n"
            ).encode() + _BODY


def send(srv: ServerProcess, n: int, headers: list[dict[str, str]] | None = None,
         connections: int = 16) -> list[str]:
    """``n`` V2 requests (``headers[i]`` on the i-th), pipelined over ``connections``
    connections; the version that answered each, in order. Fast enough for 10,000
    requests in a few seconds where an httpx client alone takes most of a minute."""
    host, port = srv.hostport.rsplit(":", 1)
    wire = [_request(headers[i] if headers else None) for i in range(n)]
    lanes = [list(range(c, n, connections)) for c in range(connections)]

    async def run() -> list[list[str]]:
        return await asyncio.gather(*(_connection(host, int(port), [wire[i] for i in lane])
                                      for lane in lanes))

    versions = [""] * n
    for lane, got in zip(lanes, asyncio.run(run()), strict=True):
        for i, v in zip(lane, got, strict=True):
            versions[i] = v
    return versions


def test_default_policy_is_the_latest_version_and_every_protocol_names_it(srv):
    r = srv.client.post("/v2/models/iris/infer", json=BODY)
    assert r.headers["ferry-model-version"] == "2" and r.json()["model_version"] == "2"
    r = srv.client.post("/v1/models/iris:predict", json={"instances": [ROW]})
    assert r.status_code == 200 and r.headers["ferry-model-version"] == "2"
    status = srv.client.get("/ferry/v1/endpoints/iris").json()
    assert status["describe"] == "pin latest" and status["shares"] == {"2": 1.0}
    assert status["live_versions"] == [1, 2]


def test_a_pin_moves_every_protocol_and_a_named_version_bypasses_it(srv):
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2 as tpb, service_pb2_grpc as tpb_grpc

    put(srv, {"kind": "pin", "version": 1})
    assert Counter(send(srv, 50)) == {"1": 50}
    r = srv.client.post("/v1/models/iris:predict", json={"instances": [ROW]})
    assert r.headers["ferry-model-version"] == "1"
    r = srv.client.post("/v2/models/iris/versions/2/infer", json=BODY)
    assert r.headers["ferry-model-version"] == "2" and r.json()["model_version"] == "2"
    r = srv.client.post("/v1/models/iris/versions/2:predict", json={"instances": [ROW]})
    assert r.headers["ferry-model-version"] == "2"
    with grpc.insecure_channel(srv.grpc) as channel:
        stub = tpb_grpc.GRPCInferenceServiceStub(channel)
        tensor = tpb.ModelInferRequest().InferInputTensor(
            name="float_input", datatype="FP32", shape=[1, 4])
        raw = np.asarray([ROW], dtype=np.float32).tobytes()
        unnamed = stub.ModelInfer(tpb.ModelInferRequest(
            model_name="iris", inputs=[tensor], raw_input_contents=[raw]))
        named = stub.ModelInfer(tpb.ModelInferRequest(
            model_name="iris", model_version="2", inputs=[tensor], raw_input_contents=[raw]))
    assert unnamed.model_version == "1" and named.model_version == "2"


def test_a_90_10_split_over_10000_requests_passes_a_chi_square_test(srv):
    from scipy.stats import chisquare

    status = put(srv, {"kind": "split", "weights": {"1": 90, "2": 10}})
    assert status["notes"] == ["weights normalised from a sum of 100 to 1"]
    assert status["shares"] == {"1": 0.9, "2": 0.1}
    n = 10_000
    counts = Counter(send(srv, n))
    assert set(counts) == {"1", "2"}, counts
    test = chisquare([counts["1"], counts["2"]], [0.9 * n, 0.1 * n])
    assert test.pvalue > 0.01, (counts, test)
    text = srv.client.get("/metrics").text
    assert 'ferry_endpoint_traffic_share{model="iris",version="1"} 0.9' in text
    assert 'ferry_endpoint_traffic_share{model="iris",version="2"} 0.1' in text


def test_sticky_keys_never_switch_version_while_the_weights_stay(srv):
    put(srv, {"kind": "split", "weights": {"1": 50, "2": 50}, "sticky_header": "x-user-id"})
    keys = [f"user-{i}" for i in range(300)]
    headers = [{"x-user-id": k} for k in keys] * 4  # each key four times, interleaved
    versions = send(srv, len(headers), headers)
    seen: dict[str, set[str]] = {}
    for h, v in zip(headers, versions, strict=True):
        seen.setdefault(h["x-user-id"], set()).add(v)
    assert all(len(vs) == 1 for vs in seen.values()), \
        {k: vs for k, vs in seen.items() if len(vs) > 1}
    by_version = Counter(next(iter(vs)) for vs in seen.values())
    assert set(by_version) == {"1", "2"} and min(by_version.values()) > 90, by_version
    # the same policy set again (weights unchanged): every key keeps its version
    put(srv, {"kind": "split", "weights": {"1": 1, "2": 1}, "sticky_header": "x-user-id"})
    again = send(srv, len(keys), headers[:len(keys)])
    assert all(v in seen[h["x-user-id"]] for h, v in zip(headers, again, strict=False))
    # gRPC reads the same key from its metadata
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2 as tpb, service_pb2_grpc as tpb_grpc

    with grpc.insecure_channel(srv.grpc) as channel:
        stub = tpb_grpc.GRPCInferenceServiceStub(channel)
        tensor = tpb.ModelInferRequest().InferInputTensor(
            name="float_input", datatype="FP32", shape=[1, 4])
        raw = np.asarray([ROW], dtype=np.float32).tobytes()
        for key in keys[:20]:
            answer = stub.ModelInfer(tpb.ModelInferRequest(
                model_name="iris", inputs=[tensor], raw_input_contents=[raw]),
                metadata=[("x-user-id", key)])
            assert {answer.model_version} == seen[key]
