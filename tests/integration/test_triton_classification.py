"""Triton's classification extension through NVIDIA's clients (``class_count``) and raw
REST JSON (``parameters: {"classification": k}``), with and without a labels file."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tg
import tritonclient.grpc.aio as tga
import tritonclient.http as th
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess

LABELS = ["setosa", "versicolor", "virginica"]
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]],
                dtype=np.float32)


@pytest.fixture(scope="module")
def repo(example_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("classes-repo")
    shutil.copytree(example_repo / "iris", root / "iris")
    shutil.copytree(example_repo / "iris", root / "named")
    with open(root / "named" / "model.yaml", "a") as fh:
        fh.write("labels: {probabilities: classes/iris.txt}\n")
    (root / "named" / "classes").mkdir()
    (root / "named" / "classes" / "iris.txt").write_text("\n".join(LABELS) + "\n")
    # labels for an output the model does not have, and a labels file that is not there
    shutil.copytree(example_repo / "iris", root / "wrongoutput")
    with open(root / "wrongoutput" / "model.yaml", "a") as fh:
        fh.write("labels: {logits: labels.txt}\n")
    (root / "wrongoutput" / "labels.txt").write_text("a\nb\nc\n")
    shutil.copytree(example_repo / "iris", root / "nofile")
    with open(root / "nofile" / "model.yaml", "a") as fh:
        fh.write("labels: {probabilities: missing.txt}\n")
    # a model without a batch dimension, with a text output
    (root / "single" / "1").mkdir(parents=True)
    (root / "single" / "1" / "model.py").write_text(textwrap.dedent('''
        import numpy as np

        class Single:
            def load(self, version_dir):
                pass
            def predict(self, inputs):
                x = inputs["x"]
                return {"scores": x * 2, "names": np.array(["a", "b", "c", "d"], dtype=object)}
    '''))
    (root / "single" / "model.yaml").write_text(textwrap.dedent('''\
        runtime: python
        max_batch_size: 0
        inputs: [{name: x, datatype: INT32, shape: [2, 2]}]
        outputs:
          - {name: scores, datatype: INT32, shape: [2, 2]}
          - {name: names, datatype: BYTES, shape: [4]}
    '''))
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(repo)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def probabilities(repo: Path) -> np.ndarray:
    session = ort.InferenceSession(str(repo / "iris" / "2" / "model.onnx"))
    return session.run(["probabilities"], {"float_input": ROWS})[0]


def expected(proba: np.ndarray, k: int, labels: list[str] | None) -> list[list[str]]:
    """Triton's rule, written out: per row, highest first, "%f:index[:label]"."""
    out = []
    for row in proba:
        order = sorted(range(len(row)), key=lambda i: (-float(row[i]), i))[:k]
        out.append([f"{float(row[i]):f}:{i}" + (f":{labels[i]}" if labels else "")
                    for i in order])
    return out


def _texts(arr: np.ndarray) -> list[list[str]]:
    return [[v.decode() if isinstance(v, bytes) else v for v in row] for row in arr.tolist()]


@pytest.mark.parametrize(("model", "labels"), [("iris", None), ("named", LABELS)])
@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_rest_json_classification(server, probabilities, model, labels, k):
    body = {"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [3, 4],
                        "data": ROWS.reshape(-1).tolist()}],
            "outputs": [{"name": "probabilities", "parameters": {"classification": k}},
                        {"name": "label"}]}
    response = server.client.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    got = outputs["probabilities"]
    width = min(k, 3)  # as Triton: a k over the class count gives every class
    assert got["datatype"] == "BYTES" and got["shape"] == [3, width]
    flat = expected(probabilities, k, labels)
    assert got["data"] == [s for row in flat for s in row]
    assert outputs["label"]["datatype"] == "INT64"  # the other output stays a tensor
    assert outputs["label"]["data"] == [int(np.argmax(r)) for r in probabilities]


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_http_class_count(server, probabilities, binary):
    client = th.InferenceServerClient(server.hostport)
    try:
        inp = th.InferInput("float_input", [3, 4], "FP32")
        inp.set_data_from_numpy(ROWS, binary_data=binary)
        out = th.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)
        result = client.infer("named", [inp], outputs=[out])
    finally:
        client.close()
    arr = result.as_numpy("probabilities")
    assert arr.shape == (3, 2)
    assert _texts(arr) == expected(probabilities, 2, LABELS)


def test_tritonclient_grpc_class_count(server, probabilities):
    client = tg.InferenceServerClient(server.grpc)
    try:
        inp = tg.InferInput("float_input", [3, 4], "FP32")
        inp.set_data_from_numpy(ROWS)
        result = client.infer("iris", [inp],
                              outputs=[tg.InferRequestedOutput("probabilities", class_count=3)])
    finally:
        client.close()
    arr = result.as_numpy("probabilities")
    assert result.get_output("probabilities").datatype == "BYTES"
    assert arr.shape == (3, 3)
    assert _texts(arr) == expected(probabilities, 3, None)


def test_tritonclient_grpc_aio_class_count(server, probabilities):
    async def main() -> np.ndarray:
        client = tga.InferenceServerClient(server.grpc)
        try:
            inp = tga.InferInput("float_input", [3, 4], "FP32")
            inp.set_data_from_numpy(ROWS)
            out = tga.InferRequestedOutput("probabilities", class_count=1)
            return (await client.infer("named", [inp], outputs=[out])).as_numpy("probabilities")
        finally:
            await client.close()

    assert _texts(asyncio.run(main())) == expected(probabilities, 1, LABELS)


def test_a_model_without_batch_dimension_ranks_the_whole_tensor(server):
    body = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [3, 9, 9, 1]}],
            "outputs": [{"name": "scores", "parameters": {"classification": 3}}]}
    response = server.client.post("/v2/models/single/infer", json=body)
    assert response.status_code == 200, response.text
    (got,) = response.json()["outputs"]
    assert got["shape"] == [3] and got["data"] == ["18:1", "18:2", "6:0"]


def test_server_metadata_lists_the_extension(server):
    client = th.InferenceServerClient(server.hostport)
    try:
        assert "classification" in client.get_server_metadata()["extensions"]
    finally:
        client.close()


@pytest.mark.parametrize(("model", "output", "k", "words"), [
    ("iris", "probabilities", 0, "output 'probabilities': classification must be a positive"),
    ("iris", "probabilities", -2, "output 'probabilities': classification must be a positive"),
    ("iris", "probabilities", 1.5, "output 'probabilities': classification must be a positive"),
    ("iris", "probabilities", "2", "output 'probabilities': classification must be a positive"),
    ("iris", "probabilities", True, "output 'probabilities': classification must be a positive"),
    ("single", "names", 1, "output 'names' is BYTES; classification ranks numeric outputs"),
])
def test_bad_classification_requests_are_a_400_naming_the_output(server, model, output, k,
                                                                  words):
    if model == "iris":
        inputs = [{"name": "float_input", "datatype": "FP32", "shape": [1, 4],
                   "data": ROWS[0].tolist()}]
    else:
        inputs = [{"name": "x", "datatype": "INT32", "shape": [2, 2], "data": [1, 2, 3, 4]}]
    body = {"inputs": inputs, "outputs": [{"name": output, "parameters": {"classification": k}}]}
    response = server.client.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]


def test_bad_classification_over_grpc_is_invalid_argument(server):
    channel = grpc.insecure_channel(server.grpc)
    try:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        tensor = pb.ModelInferRequest.InferInputTensor(name="float_input", datatype="FP32",
                                                       shape=[1, 4])
        request = pb.ModelInferRequest(model_name="iris", inputs=[tensor],
                                       raw_input_contents=[ROWS[0].tobytes()])
        wanted = request.outputs.add(name="probabilities")
        wanted.parameters["classification"].int64_param = -1
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request)
    finally:
        channel.close()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output 'probabilities': classification must be a positive" in info.value.details()
    client = tg.InferenceServerClient(server.grpc)
    try:
        inp = tg.InferInput("x", [2, 2], "INT32")
        inp.set_data_from_numpy(np.ones((2, 2), dtype=np.int32))
        with pytest.raises(InferenceServerException, match="output 'names' is BYTES"):
            client.infer("single", [inp], outputs=[tg.InferRequestedOutput("names",
                                                                           class_count=2)])
    finally:
        client.close()


@pytest.mark.parametrize(("model", "words"), [
    ("wrongoutput", "labels names output 'logits', which the model does not have"),
    ("nofile", "missing.txt: no such labels file"),
])
def test_a_bad_labels_declaration_fails_the_load_and_says_why(server, model, words):
    index = {(m["name"], m["version"]): m for m in
             server.client.post("/v2/repository/index", json={}).json()}
    assert index[(model, "2")]["state"] == "UNAVAILABLE"
    assert words in index[(model, "2")]["reason"]
    assert server.client.get("/v2/models/iris/ready").status_code == 200
