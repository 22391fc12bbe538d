"""NVIDIA's ``tritonclient.grpc``, unchanged, against Ferry's KServe V2 gRPC service."""

from __future__ import annotations

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tg
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException


@pytest.fixture()
def client(server):
    c = tg.InferenceServerClient(server.grpc)
    yield c
    c.close()


@pytest.fixture()
def stub(server):
    channel = grpc.insecure_channel(server.grpc)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert not client.is_server_ready()  # broken models keep strict readiness false
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "1")
    assert client.get_server_metadata().name == "ferry"
    meta = client.get_model_metadata("tabular")
    assert meta.inputs[0].name == "input" and list(meta.inputs[0].shape) == [-1, 32]
    assert meta.platform == "onnxruntime_onnx"


def test_infer_matches_onnxruntime(client, test_repo):
    x = np.random.default_rng(3).normal(size=(7, 32)).astype(np.float32)
    inp = tg.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("tabular", [inp], request_id="g-1")
    session = ort.InferenceSession(str(test_repo / "tabular" / "1" / "model.onnx"))
    label, proba = session.run(None, {"input": x})
    np.testing.assert_array_equal(result.as_numpy("label"), label)
    np.testing.assert_allclose(result.as_numpy("probabilities"), proba, rtol=1e-6)
    assert result.get_response().id == "g-1"


def test_version_specific_infer_and_output_selection(client):
    inp = tg.InferInput("float_input", [1, 4], "FP32")
    inp.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
    result = client.infer("iris", [inp], model_version="1",
                          outputs=[tg.InferRequestedOutput("label")])
    assert result.get_response().model_version == "1"
    assert result.as_numpy("label").tolist() == [0]
    assert result.as_numpy("probabilities") is None


def test_bytes_tensors(client):
    inp = tg.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array([b"grpc", b"x"], dtype=object))
    result = client.infer("strings", [inp])
    assert result.as_numpy("length").tolist() == [4, 1]
    assert result.as_numpy("upper").tolist() == [b"GRPC", b"X"]


def test_typed_contents_without_raw_bytes(stub):
    request = pb.ModelInferRequest(model_name="diabetes")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 10])
    tensor.contents.fp32_contents.extend([0.01] * 10)
    response = stub.ModelInfer(request)
    assert response.outputs[0].name == "variable"
    assert len(response.raw_output_contents[0]) == 4


def test_repository_index(client):
    index = client.get_model_repository_index()
    states = {(m.name, m.version): m.state for m in index.models}
    assert states[("iris", "2")] == "READY" and states[("broken", "1")] == "UNAVAILABLE"


@pytest.mark.parametrize(("call", "code", "words"), [
    (lambda s: s.ModelInfer(pb.ModelInferRequest(model_name="nope", inputs=[
        pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1])],
        raw_input_contents=[b"\0\0\0\0"])), grpc.StatusCode.NOT_FOUND,
        "Request for unknown model: 'nope' is not found"),
    (lambda s: s.ModelMetadata(pb.ModelMetadataRequest(name="iris", version="9")),
     grpc.StatusCode.NOT_FOUND, "Request for unknown model: 'iris' version 9 is not found"),
    (lambda s: s.ModelReady(pb.ModelReadyRequest(name="nope")), grpc.StatusCode.NOT_FOUND,
     "Request for unknown model: 'nope' is not found"),
    (lambda s: s.ModelInfer(pb.ModelInferRequest(model_name="broken", inputs=[
        pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1])],
        raw_input_contents=[b"\0\0\0\0"])), grpc.StatusCode.UNAVAILABLE, "no ready version"),
    (lambda s: s.CudaSharedMemoryStatus(pb.CudaSharedMemoryStatusRequest()),
     grpc.StatusCode.UNIMPLEMENTED, ""),
])
def test_errors_map_to_status_codes(stub, call, code, words):
    with pytest.raises(grpc.RpcError) as info:
        call(stub)
    assert info.value.code() == code
    assert words in (info.value.details() or "")


def test_bad_tensors_are_invalid_argument(stub):
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="float_input", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(b"\0" * 12)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "binary_data_size is 12 bytes" in info.value.details()
    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="petals", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(b"\0" * 16)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert "unknown input 'petals'" in info.value.details()


def test_client_errors_are_exceptions(client):
    inp = tg.InferInput("float_input", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="does not match"):
        client.infer("iris", [inp])
