"""A Triton model repository (``config.pbtxt`` per model, ONNX models) served by a real Ferry
server. The configuration files are written the way Triton's model configuration guide
writes them for ONNX models (``model_configuration.md``)."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

_ONNX_TYPES = {"INT32": TensorProto.INT32, "FP32": TensorProto.FLOAT,
               "INT64": TensorProto.INT64}


def _add_sub(path: Path, datatype: str = "INT32", dims: list[int | str] | None = None,
             offset: int = 0) -> None:
    """Triton's ``simple`` model as ONNX: OUTPUT0 = INPUT0 + INPUT1 (+ offset),
    OUTPUT1 = INPUT0 - INPUT1."""
    dims = dims or ["batch", 16]
    kind = _ONNX_TYPES[datatype]
    x0 = helper.make_tensor_value_info("INPUT0", kind, dims)
    x1 = helper.make_tensor_value_info("INPUT1", kind, dims)
    y0 = helper.make_tensor_value_info("OUTPUT0", kind, dims)
    y1 = helper.make_tensor_value_info("OUTPUT1", kind, dims)
    nodes = [helper.make_node("Add", ["INPUT0", "INPUT1"], ["sum"]),
             helper.make_node("Add", ["sum", "offset"], ["OUTPUT0"]),
             helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])]
    off = helper.make_tensor("offset", kind, [], [offset])
    graph = helper.make_graph(nodes, "simple", [x0, x1], [y0, y1], [off])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def _model(root: Path, name: str, config: str, versions: tuple[int, ...] = (1,),
           file_name: str = "model.onnx", **graph: object) -> Path:
    for v in versions:
        _add_sub(root / name / str(v) / file_name, offset=v, **graph)  # type: ignore[arg-type]
    (root / name / "config.pbtxt").write_text(textwrap.dedent(config))
    return root / name


_SIMPLE = """\
    name: "simple"
    platform: "onnxruntime_onnx"
    max_batch_size: 8
    input [
      {
        name: "INPUT0"
        data_type: TYPE_INT32
        dims: [ 16 ]
      },
      {
        name: "INPUT1"
        data_type: TYPE_INT32
        dims: [ 16 ]
      }
    ]
    output [
      {
        name: "OUTPUT0"
        data_type: TYPE_INT32
        dims: [ 16 ]
        label_filename: "labels.txt"
      },
      {
        name: "OUTPUT1"
        data_type: TYPE_INT32
        dims: [ 16 ]
      }
    ]
    dynamic_batching {
      preferred_batch_size: [ 4, 8 ]
      max_queue_delay_microseconds: 100
      default_queue_policy { max_queue_size: 32 }
    }
    instance_group [
      {
        count: 2
        kind: KIND_CPU
      }
    ]
    """


@pytest.fixture(scope="module")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton")
    _model(root, "simple", _SIMPLE)
    # OUTPUT0's label_filename: one class name per line (read at load, as Triton reads it)
    (root / "simple" / "labels.txt").write_text("".join(f"class{i}\n" for i in range(16)))
    # no batching: dims are the full shape
    _model(root, "fixed", """\
        backend: "onnxruntime"
        max_batch_size: 0
        input [ { name: "INPUT0", data_type: TYPE_INT32, dims: [ 2, 16 ] },
                { name: "INPUT1", data_type: TYPE_INT32, dims: [ 2, 16 ] } ]
        output [ { name: "OUTPUT0", data_type: TYPE_INT32, dims: [ 2, 16 ] } ]
        """, dims=[2, 16])
    _model(root, "specific", """\
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        version_policy: { specific: { versions: [ 1, 3 ] } }
        """, versions=(1, 2, 3))
    _model(root, "every", """\
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        version_policy: { all { } }
        """, versions=(1, 2, 3))
    _model(root, "latest2", """\
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        version_policy: { latest: { num_versions: 2 } }
        """, versions=(1, 2, 3))
    _model(root, "renamed", """\
        platform: "onnxruntime_onnx"
        max_batch_size: 4
        default_model_filename: "simple_int32.onnx"
        """, file_name="simple_int32.onnx")
    _model(root, "extras", """\
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        input [ { name: "INPUT0", data_type: TYPE_INT32, dims: [ 16 ],
                  reshape: { shape: [ 16 ] } },
                { name: "INPUT1", data_type: TYPE_INT32, dims: [ 16 ] } ]
        instance_group [ { count: 1, kind: KIND_GPU, gpus: [ 0 ] } ]
        optimization { execution_accelerators {
          cpu_execution_accelerator : [ { name : "openvino" } ] } }
        model_warmup [ { name: "zeros", batch_size: 1 } ]
        """)
    _model(root, "malformed", """\
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        input [
          { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
          { name: "INPUT1" data_typo: TYPE_INT32 dims: [ 16 ] }
        ]
        """)
    _model(root, "wrongtype", """\
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] } ]
        """)
    _model(root, "wrongname", """\
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        output [ { name: "SUM", data_type: TYPE_INT32, dims: [ 16 ] } ]
        """)
    # for a load's override: a second graph and a second labels file beside the first
    _model(root, "relabel", """\
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        """)
    _add_sub(root / "relabel" / "1" / "alt.onnx", offset=10)
    (root / "relabel" / "names.txt").write_text("".join(f"name{i}\n" for i in range(16)))
    # both files: model.yaml wins for the keys it sets
    both = _model(root, "both", """\
        platform: "onnxruntime_onnx"
        max_batch_size: 8
        instance_group [ { count: 3 } ]
        """)
    (both / "model.yaml").write_text("max_batch_size: 2\nthreads: 1\n")
    return root


@pytest.fixture(scope="module")
def triton_server(triton_repo: Path) -> Iterator[ServerProcess]:
    # --poll: the repository is rescanned every 0.3 s, and warnings must still come once
    proc = ServerProcess(triton_repo, "--log-level", "info", "--poll", "0.3")
    yield proc
    proc.stop()


def _metadata(server: ServerProcess, name: str) -> dict:
    response = server.client.get(f"/v2/models/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def _pair(rows: int, shape: tuple[int, ...] = (16,)) -> tuple[np.ndarray, np.ndarray]:
    a = np.arange(rows * int(np.prod(shape)), dtype=np.int32).reshape(rows, *shape)
    return a, np.ones_like(a)


def _top_classes(server: ServerProcess, model: str, a: np.ndarray, b: np.ndarray,
                 k: int) -> np.ndarray:
    """OUTPUT0 of ``model`` for INPUT0 ``a`` and INPUT1 ``b``, as its top ``k`` classes."""
    client = th.InferenceServerClient(server.hostport)
    inputs = [th.InferInput("INPUT0", list(a.shape), "INT32"),
              th.InferInput("INPUT1", list(b.shape), "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer(model, inputs,
                          outputs=[th.InferRequestedOutput("OUTPUT0", class_count=k)])
    return result.as_numpy("OUTPUT0")


def test_batching_model_dims_exclude_the_batch_dimension(triton_server: ServerProcess) -> None:
    meta = _metadata(triton_server, "simple")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["ferry"]["max_batch_size"] == 8
    assert meta["inputs"] == [{"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]},
                              {"name": "INPUT1", "datatype": "INT32", "shape": [-1, 16]}]
    assert meta["ferry"]["unsupported_config"] == []
    client = th.InferenceServerClient(triton_server.hostport)
    a, b = _pair(3)
    inputs = [th.InferInput("INPUT0", [3, 16], "INT32"), th.InferInput("INPUT1", [3, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("simple", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b + 1)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_label_filename_names_the_classes_of_the_classification_extension(
        triton_server: ServerProcess) -> None:
    a, b = _pair(2)
    top = _top_classes(triton_server, "simple", a, b, 2)
    assert top.shape == (2, 2)
    sums = a + b + 1
    for row, classes in zip(sums, top, strict=True):
        best = int(np.argmax(row))  # ties: the lower index first
        score, index, label = classes[0].decode().split(":")
        assert (int(index), label, float(score)) == (best, f"class{best}", float(row[best]))


def test_an_override_honours_what_a_config_pbtxt_honours(triton_server: ServerProcess) -> None:
    """One mapping for both: default_model_filename and label_filename in a load's override
    take effect as they do in a config.pbtxt; an unsupported field is refused, not shown."""
    client = th.InferenceServerClient(triton_server.hostport)
    client.load_model("relabel", config=json.dumps({
        "default_model_filename": "alt.onnx",
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": [16],
                    "label_filename": "names.txt"}]}))
    a, b = _pair(1)
    score, index, label = _top_classes(triton_server, "relabel", a, b, 1)[0][0].decode().split(":")
    assert (int(index), label, float(score)) == (15, "name15", float(a[0, 15] + 1 + 10))
    with pytest.raises(InferenceServerException, match="failed to load.*model_warmup"):
        client.load_model("relabel", config='{"model_warmup": [{"name": "w"}]}')
    assert _metadata(triton_server, "relabel")["ferry"]["unsupported_config"] == []


def test_max_batch_size_zero_dims_are_the_full_shape(triton_server: ServerProcess) -> None:
    meta = _metadata(triton_server, "fixed")
    assert meta["ferry"]["max_batch_size"] == 0
    assert meta["inputs"][0]["shape"] == [2, 16]
    assert [o["name"] for o in meta["outputs"]] == ["OUTPUT0"]
    client = tg.InferenceServerClient(triton_server.grpc)
    a, b = _pair(2)
    inputs = [tg.InferInput("INPUT0", [2, 16], "INT32"), tg.InferInput("INPUT1", [2, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    np.testing.assert_array_equal(client.infer("fixed", inputs).as_numpy("OUTPUT0"), a + b + 1)


@pytest.mark.parametrize(("model", "served"), [("specific", ["3", "1"]),
                                               ("every", ["3", "2", "1"]),
                                               ("latest2", ["3", "2"])])
def test_version_policy_selects_versions(triton_server: ServerProcess, model: str,
                                         served: list[str]) -> None:
    assert _metadata(triton_server, model)["versions"] == served
    index = triton_server.client.post("/v2/repository/index", json={"ready": True}).json()
    assert sorted(e["version"] for e in index if e["name"] == model) == sorted(served)


def test_default_model_filename_loads_a_differently_named_file(
        triton_server: ServerProcess) -> None:
    meta = _metadata(triton_server, "renamed")
    assert meta["ferry"]["versions"][0]["state"] == "READY"
    assert meta["ferry"]["max_batch_size"] == 4
    assert meta["inputs"][0]["shape"] == [-1, 16]  # the rest of the signature is the graph's


def test_instance_count_and_queue_settings_take_effect(triton_server: ServerProcess,
                                                        triton_repo: Path) -> None:
    from ferry.repository.layout import scan_model

    manifest = scan_model(triton_repo / "simple").manifest
    assert manifest is not None
    assert manifest.instances == 2
    assert manifest.dynamic_batching.max_queue_delay_ms == pytest.approx(0.1)
    assert manifest.dynamic_batching.preferred_batch_sizes == [4, 8]
    assert manifest.dynamic_batching.max_queue_size == 32
    assert triton_server.wait_for_log("model simple version 1 ready")
    log = "".join(triton_server.log)
    line = next(x for x in log.splitlines() if "model simple version 1 ready" in x)
    assert "max_batch_size 8, 2 instance(s)" in line


def test_unsupported_fields_are_logged_and_shown(triton_server: ServerProcess) -> None:
    meta = _metadata(triton_server, "extras")
    assert meta["ferry"]["unsupported_config"] == [
        "input[0].reshape", "instance_group[0].gpus",
        "instance_group[0].kind=KIND_GPU (runs on CPU)", "model_warmup", "optimization"]
    assert meta["ferry"]["versions"][0]["state"] == "READY"  # served, on CPU
    assert triton_server.wait_for_log("extras/config.pbtxt: Ferry does not support")
    time.sleep(1.5)  # several rescans
    log = "".join(triton_server.log)
    warned = [x for x in log.splitlines() if "extras/config.pbtxt: Ferry does not support" in x]
    assert len(warned) == 1, warned
    assert "model_warmup" in warned[0] and "optimization" in warned[0]


def test_a_malformed_config_is_a_load_error_naming_file_and_line(
        triton_server: ServerProcess) -> None:
    error = _metadata(triton_server, "malformed")["ferry"]["error"]
    assert "malformed/config.pbtxt:5:" in error
    assert 'has no field named "data_typo"' in error
    index = triton_server.client.post("/v2/repository/index", json={}).json()
    assert any(e["name"] == "malformed" and "config.pbtxt:5:" in e["reason"] for e in index)


@pytest.mark.parametrize(("model", "words"), [
    ("wrongtype", ["input 'INPUT0' as FP32", "graph's is INT32"]),
    ("wrongname", ["output 'SUM'", "['OUTPUT0', 'OUTPUT1']"]),
])
def test_tensor_mismatch_against_the_graph_is_a_load_error(
        triton_server: ServerProcess, model: str, words: list[str]) -> None:
    versions = _metadata(triton_server, model)["ferry"]["versions"]
    assert versions[0]["state"] == "UNAVAILABLE", versions
    for word in words:
        assert word in versions[0]["reason"]
    assert triton_server.client.get(f"/v2/models/{model}/ready").status_code != 200


def test_model_yaml_wins_key_by_key(triton_server: ServerProcess, triton_repo: Path) -> None:
    from ferry.repository.layout import scan_model

    assert _metadata(triton_server, "both")["ferry"]["max_batch_size"] == 2  # model.yaml's
    manifest = scan_model(triton_repo / "both").manifest
    assert manifest is not None and manifest.instances == 3  # config.pbtxt's
    assert triton_server.wait_for_log("both/model.yaml overrides config.pbtxt for: max_batch_size")
