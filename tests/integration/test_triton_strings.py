"""BYTES tensors into and out of ONNX string tensors, through NVIDIA's clients and raw
messages: REST JSON, REST binary, gRPC raw contents and gRPC ``bytes_contents``.

The repository is built here: a graph that casts decimal strings to integers and back, an
identity graph on strings, a scikit-learn pipeline with a ``OneHotEncoder`` on string
columns exported with skl2onnx, and a python model that echoes its bytes.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as tg
import tritonclient.grpc.aio as tga
import tritonclient.http as th
from onnx import TensorProto, helper
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess

# valid UTF-8 of every kind: empty, NUL inside, accents, CJK, an emoji, a long one
WORDS = ["", "a\x00b", "caf\u00e9", "\u65e5\u672c\u8a9e", "\U0001f6a2 ferry", "x" * 1000]
NUMBERS = ["12", "-7", "0", "9007199254740993", "-9223372036854775808"]


def _opset() -> int:
    """The newest opset both the installed onnx and onnxruntime handle."""
    x = helper.make_tensor_value_info("x", TensorProto.STRING, [None])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, [None])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    for opset in range(onnx.defs.onnx_opset_version(), 12, -1):
        model = helper.make_model_gen_version(graph, opset_imports=[
            helper.make_opsetid("", opset)])
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:
            continue
        return opset
    raise RuntimeError("onnxruntime loads no opset of the installed onnx")


def _save(graph: onnx.GraphProto, folder: Path, opset: int) -> None:
    folder.mkdir(parents=True)
    model = helper.make_model_gen_version(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))


def _onehot_pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    colours = ["red", "blue", "green", "caf\u00e9 au lait"]
    sizes = ["small", "large"]
    rng = np.random.default_rng(0)
    x = np.array([[colours[i % 4], sizes[(i // 4) % 2]] for i in range(80)], dtype=object)
    y = np.array([(i % 4) + 4 * ((i // 4) % 2) for i in range(80)]) % 3
    rng.shuffle(x)
    return make_pipeline(OneHotEncoder(handle_unknown="ignore"),
                         LogisticRegression(max_iter=1000)).fit(x, y), x


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import StringTensorType

    root = tmp_path_factory.mktemp("strings-repo")
    opset = _opset()
    text = helper.make_tensor_value_info("text", TensorProto.STRING, [None])
    number = helper.make_tensor_value_info("number", TensorProto.INT64, [None])
    back = helper.make_tensor_value_info("back", TensorProto.STRING, [None])
    _save(helper.make_graph([
        helper.make_node("Cast", ["text"], ["number"], to=TensorProto.INT64),
        helper.make_node("Cast", ["number"], ["back"], to=TensorProto.STRING)],
        "cast", [text], [number, back]), root / "cast" / "1", opset)
    s = helper.make_tensor_value_info("s", TensorProto.STRING, [None, None])
    t = helper.make_tensor_value_info("t", TensorProto.STRING, [None, None])
    _save(helper.make_graph([helper.make_node("Identity", ["s"], ["t"])], "identity", [s], [t]),
          root / "identity" / "1", opset)
    pipeline, _ = _onehot_pipeline()
    onx = to_onnx(pipeline, initial_types=[("input", StringTensorType([None, 2]))],
                  options={id(pipeline.steps[-1][1]): {"zipmap": False}},
                  target_opset={"": min(opset, 17), "ai.onnx.ml": 3})
    (root / "onehot" / "1").mkdir(parents=True)
    (root / "onehot" / "1" / "model.onnx").write_bytes(onx.SerializeToString())
    (root / "echo" / "1").mkdir(parents=True)
    (root / "echo" / "1" / "model.py").write_text(textwrap.dedent('''
        class Echo:
            def load(self, version_dir):
                pass
            def predict(self, inputs):
                return {"out": inputs["raw"]}
    '''))
    (root / "echo" / "model.yaml").write_text(textwrap.dedent('''\
        runtime: python
        max_batch_size: 8
        inputs: [{name: raw, datatype: BYTES, shape: [-1]}]
        outputs: [{name: out, datatype: BYTES, shape: [-1]}]
    '''))
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(repo)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[th.InferenceServerClient]:
    client = th.InferenceServerClient(server.hostport)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(server: ServerProcess) -> Iterator[tg.InferenceServerClient]:
    client = tg.InferenceServerClient(server.grpc)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(server.grpc)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def _texts(values: object) -> list[str]:
    """A BYTES result as str (JSON answers give str, binary answers bytes)."""
    arr = np.asarray(values, dtype=object).reshape(-1)
    return [v.decode() if isinstance(v, bytes) else v for v in arr.tolist()]


def _objects(values: list[object], shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr.reshape(shape or (len(values),))


# -- the three transports, for one request: name -> (inputs) -> {output: [str]} ------------

def via_rest_json(server: ServerProcess, model: str, name: str, values: np.ndarray,
                  outputs: list[str]) -> dict[str, list[object]]:
    body = {"inputs": [{"name": name, "datatype": "BYTES", "shape": list(values.shape),
                        "data": [v.decode() if isinstance(v, bytes) else v
                                 for v in values.reshape(-1).tolist()]}]}
    response = server.client.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    got = {o["name"]: o for o in response.json()["outputs"]}
    for o in got.values():
        assert o["shape"][0] == values.shape[0]
    return {n: got[n]["data"] for n in outputs}


def via_tritonclient_http(client: th.InferenceServerClient, model: str, name: str,
                          values: np.ndarray, outputs: list[str], binary: bool = True
                          ) -> dict[str, list[object]]:
    inp = th.InferInput(name, list(values.shape), "BYTES")
    inp.set_data_from_numpy(values, binary_data=binary)
    wanted = [th.InferRequestedOutput(n, binary_data=binary) for n in outputs]
    result = client.infer(model, [inp], outputs=wanted)
    return {n: result.as_numpy(n).reshape(-1).tolist() for n in outputs}


def via_tritonclient_grpc(client: tg.InferenceServerClient, model: str, name: str,
                          values: np.ndarray, outputs: list[str]) -> dict[str, list[object]]:
    inp = tg.InferInput(name, list(values.shape), "BYTES")
    inp.set_data_from_numpy(values)  # raw_input_contents
    result = client.infer(model, [inp], outputs=[tg.InferRequestedOutput(n) for n in outputs])
    return {n: result.as_numpy(n).reshape(-1).tolist() for n in outputs}


def via_bytes_contents(stub: pb_grpc.GRPCInferenceServiceStub, model: str, name: str,
                       values: np.ndarray, outputs: list[str]) -> dict[str, list[object]]:
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype="BYTES",
                                                   shape=list(values.shape))
    tensor.contents.bytes_contents.extend(
        v if isinstance(v, bytes) else v.encode() for v in values.reshape(-1).tolist())
    reply = stub.ModelInfer(pb.ModelInferRequest(model_name=model, inputs=[tensor]))
    got = {}
    for out, raw in zip(reply.outputs, reply.raw_output_contents, strict=True):
        if out.datatype == "BYTES":
            got[out.name] = tg.deserialize_bytes_tensor(raw).tolist()
        else:
            got[out.name] = np.frombuffer(raw, dtype=np.int64).tolist()
    return {n: got[n] for n in outputs}


TRANSPORTS = ["rest-json", "http-binary", "http-json", "grpc-raw", "grpc-bytes-contents"]


def run(transport: str, server, http, grpc_client, stub, model, name, values, outputs):
    if transport == "rest-json":
        return via_rest_json(server, model, name, values, outputs)
    if transport == "http-binary":
        return via_tritonclient_http(http, model, name, values, outputs, True)
    if transport == "http-json":
        return via_tritonclient_http(http, model, name, values, outputs, False)
    if transport == "grpc-raw":
        return via_tritonclient_grpc(grpc_client, model, name, values, outputs)
    return via_bytes_contents(stub, model, name, values, outputs)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_decimal_strings_cast_to_integers_and_back(transport, server, http, grpc_client, stub):
    values = _objects([n.encode() for n in NUMBERS])
    got = run(transport, server, http, grpc_client, stub, "cast", "text", values,
              ["number", "back"])
    assert [int(v) for v in got["number"]] == [int(n) for n in NUMBERS]
    assert _texts(got["back"]) == NUMBERS


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_identity_on_strings_round_trips_exactly(transport, server, http, grpc_client, stub):
    values = _objects([w.encode() for w in WORDS], (2, 3))
    got = run(transport, server, http, grpc_client, stub, "identity", "s", values, ["t"])
    assert _texts(got["t"]) == WORDS


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sklearn_onehot_pipeline_on_string_columns(transport, server, http, grpc_client, stub):
    pipeline, x = _onehot_pipeline()
    rows = x[:12]
    values = _objects([v.encode() for v in rows.reshape(-1).tolist()], rows.shape)
    if transport == "grpc-bytes-contents":  # probabilities are FP32: decode both by hand
        tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="BYTES",
                                                       shape=list(rows.shape))
        tensor.contents.bytes_contents.extend(values.reshape(-1).tolist())
        reply = stub.ModelInfer(pb.ModelInferRequest(model_name="onehot", inputs=[tensor]))
        raw = dict(zip([o.name for o in reply.outputs], reply.raw_output_contents, strict=True))
        label = np.frombuffer(raw["label"], dtype=np.int64)
        proba = np.frombuffer(raw["probabilities"], dtype=np.float32).reshape(12, -1)
    else:
        got = run(transport, server, http, grpc_client, stub, "onehot", "input", values,
                  ["label", "probabilities"])
        label = np.asarray(got["label"])
        proba = np.asarray(got["probabilities"], dtype=np.float32).reshape(12, -1)
    np.testing.assert_array_equal(label, pipeline.predict(rows))
    np.testing.assert_allclose(proba, pipeline.predict_proba(rows), rtol=1e-4, atol=1e-5)


def test_model_metadata_shows_string_inputs_as_bytes(http):
    meta = http.get_model_metadata("onehot")
    assert meta["inputs"] == [{"name": "input", "datatype": "BYTES", "shape": [-1, 2]}]


BAD = [b"fine", b"\xff\xfe not utf-8"]


@pytest.mark.parametrize("transport", ["http-binary", "grpc-raw", "grpc-bytes-contents"])
def test_bytes_that_are_not_utf8_are_a_400_naming_the_input(transport, server, http,
                                                            grpc_client, stub):
    values = _objects(list(BAD))
    with pytest.raises((InferenceServerException, grpc.RpcError)) as info:
        run(transport, server, http, grpc_client, stub, "cast", "text", values, ["number"])
    exc = info.value
    if isinstance(exc, grpc.RpcError):
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        message = exc.details()
    else:
        message = exc.message()
        if transport.startswith("grpc"):
            assert exc.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'text': element 1 is not valid UTF-8" in message
    # the server goes on serving
    got = via_tritonclient_http(http, "cast", "text", _objects([b"41"]), ["number"])
    assert got["number"] == [41]


def test_not_utf8_over_rest_binary_is_a_400(server):
    import json

    raw = b"".join(len(v).to_bytes(4, "little") + v for v in BAD)
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    response = server.client.post("/v2/models/cast/infer", content=header + raw,
                                  headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 400
    assert "input 'text': element 1 is not valid UTF-8" in response.json()["error"]


@pytest.mark.parametrize("transport", ["http-binary", "grpc-raw", "grpc-bytes-contents"])
def test_a_python_model_gets_the_bytes_exactly_as_sent(transport, server, http, grpc_client,
                                                       stub):
    values = _objects([b"", b"\x00", b"\xff\xfe", "caf\u00e9".encode()])
    got = run(transport, server, http, grpc_client, stub, "echo", "raw", values, ["out"])
    assert got["out"] == values.tolist()


def test_a_bad_request_among_concurrent_ones_fails_alone(server):
    """grpc.aio: 24 requests at once, one not UTF-8: only that one fails."""

    async def main() -> list[object]:
        client = tga.InferenceServerClient(server.grpc)
        try:
            async def one(i: int) -> object:
                values = _objects([b"\xff"] if i == 7 else [str(i).encode(), b"1"])
                inp = tga.InferInput("text", list(values.shape), "BYTES")
                inp.set_data_from_numpy(values)
                try:
                    result = await client.infer("cast", [inp])
                except InferenceServerException as exc:
                    return exc
                return result.as_numpy("number").tolist()
            return await asyncio.gather(*(one(i) for i in range(24)))
        finally:
            await client.close()

    results = asyncio.run(main())
    for i, result in enumerate(results):
        if i == 7:
            assert isinstance(result, InferenceServerException)
            assert "input 'text': element 0 is not valid UTF-8" in result.message()
        else:
            assert result == [i, 1], (i, result)
