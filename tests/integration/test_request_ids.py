"""One request-id rule on every protocol, against the real server: a gRPC inference gets its
id in initial metadata and is joined to feedback by it; ``x-request-id`` and the V2 body
``id`` are taken on REST, TF Serving and gRPC; server-made ids are unique across protocols;
a bad id is a 400 / INVALID_ARGUMENT; a ``traceparent`` is logged with the request id."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from ferry.evalstore import requestids
from ferry.evalstore.schema import open_engine
from ferry.evalstore.windows import read_window
from ferry.protocols.identity import valid_traceparent
from tests.conftest import ServerProcess

SETOSA = [5.1, 3.5, 1.4, 0.2]
V2_BODY = {"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32",
                       "data": SETOSA}]}
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture()
def stub(server):
    channel = grpc.insecure_channel(server.grpc)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def grpc_infer(stub, body_id: str = "", metadata: tuple[tuple[str, str], ...] = ()
               ) -> tuple[pb.ModelInferResponse, dict[str, str]]:
    request = pb.ModelInferRequest(model_name="iris", id=body_id)
    tensor = request.inputs.add(name="float_input", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(SETOSA)
    response, call = stub.ModelInfer.with_call(request, metadata=metadata, timeout=30)
    return response, dict(call.initial_metadata())


def test_grpc_inference_joins_its_feedback_by_the_id_in_metadata(server, stub):
    response, meta = grpc_infer(stub)
    rid = meta["ferry-request-id"]
    assert requestids.parse(rid) is not None  # server-made, stored as a counter range
    assert response.id == rid  # V2: the response names the request
    r = server.client.post("/ferry/v1/feedback", json={"request_id": rid, "label": 0})
    assert r.status_code == 200 and r.json() == {"accepted": 1, "duplicates": 0}, r.text
    assert server.client.post("/ferry/v1/store/flush").status_code == 200
    engine = open_engine(f"sqlite:///{server.workdir / 'ferry.db'}")
    try:
        data = read_window(engine, "iris", 0, None)
    finally:
        engine.dispose()
    labels = dict(zip(data.request_ids.tolist(), data.labels.tolist(), strict=True))
    assert labels[rid] == 0  # the stored prediction carries the feedback's label


def test_grpc_takes_the_metadata_id_then_x_request_id_then_the_body_id(server, stub):
    response, meta = grpc_infer(stub, "body-1", (("ferry-request-id", "g-meta-1"),
                                                 ("x-request-id", "x-1")))
    assert (meta["ferry-request-id"], response.id, meta["x-request-id"]) == (
        "g-meta-1", "g-meta-1", "x-1")
    response, meta = grpc_infer(stub, "body-2", (("x-request-id", "x-2"),))
    assert (meta["ferry-request-id"], response.id) == ("x-2", "x-2")
    response, meta = grpc_infer(stub, "body-3")
    assert (meta["ferry-request-id"], response.id) == ("body-3", "body-3")
    assert "x-request-id" not in meta
    for bad in ("x" * 129, "tab\there"):
        with pytest.raises(grpc.RpcError) as info:
            grpc_infer(stub, bad)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "printable ASCII" in info.value.details()


def test_rest_and_tfserving_take_x_request_id_and_echo_it(server):
    r = server.client.post("/v2/models/iris/infer", json=V2_BODY,
                           headers={"x-request-id": "x-rest-1"})
    assert r.status_code == 200, r.text
    assert (r.headers["ferry-request-id"], r.headers["x-request-id"], r.json()["id"]) == (
        "x-rest-1", "x-rest-1", "x-rest-1")
    r = server.client.post("/v1/models/iris:predict", json={"instances": [SETOSA]},
                           headers={"x-request-id": "x-tf-1"})
    assert r.status_code == 200, r.text
    assert (r.headers["ferry-request-id"], r.headers["x-request-id"]) == ("x-tf-1", "x-tf-1")
    r = server.client.post("/v2/models/iris/infer", json=V2_BODY,  # ferry-request-id first
                           headers={"x-request-id": "x-2", "ferry-request-id": "f-2"})
    assert (r.headers["ferry-request-id"], r.headers["x-request-id"]) == ("f-2", "x-2")
    r = server.client.post("/v2/models/iris/infer", json={**V2_BODY, "id": "body-9"})
    assert (r.headers["ferry-request-id"], r.json()["id"]) == ("body-9", "body-9")
    assert "x-request-id" not in r.headers


def test_bad_ids_are_refused_naming_where_they_came_from(server):
    r = server.client.post("/v2/models/iris/infer", json={**V2_BODY, "id": "a\r\nx-evil: 1"})
    assert r.status_code == 400 and "the body's 'id'" in r.json()["error"]
    assert "x-evil" not in r.headers
    r = server.client.post("/v2/models/iris/infer", json={**V2_BODY, "id": "é"})
    assert r.status_code == 400 and "printable ASCII" in r.json()["error"]
    r = server.client.post("/v1/models/iris:predict", json={"instances": [SETOSA]},
                           headers={"x-request-id": "y" * 129})
    assert r.status_code == 400 and "x-request-id" in r.json()["error"]


def test_server_made_ids_are_unique_across_protocols(server, stub):
    made = [server.client.post("/v2/models/iris/infer", json=V2_BODY).headers[
        "ferry-request-id"] for _ in range(20)]
    made += [server.client.post("/v1/models/iris:predict", json={"instances": [SETOSA]})
             .headers["ferry-request-id"] for _ in range(20)]
    made += [grpc_infer(stub)[1]["ferry-request-id"] for _ in range(20)]
    assert len(set(made)) == 60
    parsed = [requestids.parse(i) for i in made]
    assert all(p is not None for p in parsed) and len({p[0] for p in parsed}) == 1


@pytest.mark.parametrize(("value", "valid"), [
    (TRACE, True),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", True),
    (TRACE + "-extra", False),  # version 00 has exactly four fields
    ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
    (TRACE.upper(), False),
    ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", False),
    ("", False), ("garbage", False),
])
def test_traceparent_format(value, valid):
    assert valid_traceparent(value) is valid


def test_traceparent_is_logged_with_the_request_at_debug(example_repo: Path, tmp_path):
    shutil.copytree(example_repo / "iris", tmp_path / "iris")
    server = ServerProcess(tmp_path, "--log-level", "debug")
    try:
        r = server.client.post("/v2/models/iris/infer", json=V2_BODY,
                               headers={"ferry-request-id": "t-1", "traceparent": TRACE})
        assert r.status_code == 200, r.text
        r = server.client.post("/v2/models/iris/infer", json=V2_BODY,
                               headers={"ferry-request-id": "t-2", "traceparent": "nope"})
        assert r.status_code == 200, r.text  # a bad traceparent is ignored, never refused
        channel = grpc.insecure_channel(server.grpc)
        try:
            grpc_infer(pb_grpc.GRPCInferenceServiceStub(channel),
                       metadata=(("ferry-request-id", "t-3"), ("traceparent", TRACE)))
        finally:
            channel.close()
    finally:
        assert server.stop() == 0
    log = "".join(server.log)
    assert f"ferry.trace: request t-1 model iris traceparent {TRACE}" in log
    assert "request t-2 model iris: ignored an invalid traceparent 'nope'" in log
    assert f"ferry.trace: request t-3 model iris traceparent {TRACE}" in log
