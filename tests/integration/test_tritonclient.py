"""NVIDIA's tritonclient, unchanged, against Ferry: binary tensors are its default."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException


@pytest.fixture()
def client(server):
    c = triton.InferenceServerClient(server.hostport)
    yield c
    c.close()


def test_health_metadata_and_index(client):
    assert client.is_server_live()
    assert client.is_model_ready("tabular")
    assert client.get_server_metadata()["name"] == "ferry"
    meta = client.get_model_metadata("tabular")
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 32]}
    names = {m["name"] for m in client.get_model_repository_index()}
    assert {"tabular", "iris", "broken"} <= names


@pytest.mark.parametrize("binary", [True, False])
def test_infer_binary_and_json(client, test_repo, binary):
    import onnxruntime as ort

    x = np.random.default_rng(1).normal(size=(5, 32)).astype(np.float32)
    inp = triton.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [triton.InferRequestedOutput("label", binary_data=binary),
            triton.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer("tabular", [inp], outputs=outs, request_id="t-1")
    session = ort.InferenceSession(str(test_repo / "tabular" / "1" / "model.onnx"))
    label, proba = session.run(None, {"input": x})
    np.testing.assert_array_equal(result.as_numpy("label"), label)
    np.testing.assert_allclose(result.as_numpy("probabilities"), proba, rtol=1e-6)
    assert result.get_response()["id"] == "t-1"


def test_default_binary_outputs_and_version(client):
    x = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    inp = triton.InferInput("float_input", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("iris", [inp], model_version="1")
    assert result.get_response()["model_version"] == "1"
    assert result.as_numpy("label").tolist() == [0]
    assert result.as_numpy("probabilities").shape == (1, 3)


def test_bytes_binary_tensors(client):
    words = np.array([b"ab", b"ferry", b""], dtype=object)
    inp = triton.InferInput("text", [3], "BYTES")
    inp.set_data_from_numpy(words)
    result = client.infer("strings", [inp])
    assert result.as_numpy("length").tolist() == [2, 5, 0]
    assert result.as_numpy("upper").tolist() == [b"AB", b"FERRY", b""]


def test_compressed_request(client):
    x = np.zeros((2, 10), dtype=np.float32)
    inp = triton.InferInput("input", [2, 10], "FP32")
    inp.set_data_from_numpy(x)
    for algorithm in ("gzip", "deflate"):
        result = client.infer("diabetes", [inp], request_compression_algorithm=algorithm)
        assert result.as_numpy("variable").shape == (2, 1)


def test_errors_surface_as_exceptions_with_messages(client):
    inp = triton.InferInput("wrong", [1, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="unknown input 'wrong'"):
        client.infer("iris", [inp])
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [inp])
    assert info.value.message().startswith("Request for unknown model: 'nope' is not found")
