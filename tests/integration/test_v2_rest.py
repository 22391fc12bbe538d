"""KServe V2 REST against the live server: health, metadata, inference, repository index."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

SETOSA = [5.1, 3.5, 1.4, 0.2]


def iris_body(rows: list[list[float]], **extra: object) -> dict[str, object]:
    return {"inputs": [{"name": "float_input", "shape": [len(rows), 4], "datatype": "FP32",
                        "data": rows}], **extra}


def test_health_and_server_metadata(server):
    assert server.client.get("/v2/health/live").json() == {"live": True}
    meta = server.client.get("/v2").json()
    assert meta["name"] == "ferry" and "binary_tensor_data" in meta["extensions"]


def test_readiness_is_strict_while_a_model_is_broken(server):
    # 'broken' and 'pickled' never load, so the server as a whole is not ready (Triton's
    # strict readiness), while each good model reports ready on its own
    assert server.client.get("/v2/health/ready").status_code == 503
    assert server.client.get("/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    assert server.client.get("/v2/models/broken/ready").status_code == 503


def test_model_metadata_reads_signature_from_graph(server):
    meta = server.client.get("/v2/models/diabetes").json()
    assert meta["name"] == "diabetes" and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}]
    version = meta["ferry"]["versions"][0]
    assert version["state"] == "READY" and len(version["sha256"]) == 64


def test_infer_nested_and_flat_data_agree_with_onnxruntime(server, test_repo):
    rows = [SETOSA, [6.7, 3.0, 5.2, 2.3]]
    nested = server.client.post("/v2/models/iris/infer", json=iris_body(rows)).json()
    flat_body = iris_body([]) | {"inputs": [{"name": "float_input", "shape": [2, 4],
                                             "datatype": "FP32", "data": sum(rows, [])}]}
    flat = server.client.post("/v2/models/iris/infer", json=flat_body).json()
    assert nested["outputs"] == flat["outputs"]
    session = ort.InferenceSession(str(test_repo / "iris" / "2" / "model.onnx"))
    label, proba = session.run(None, {"float_input": np.array(rows, dtype=np.float32)})
    outputs = {o["name"]: o for o in nested["outputs"]}
    assert outputs["label"]["data"] == label.tolist()
    assert outputs["probabilities"]["shape"] == [2, 3]
    np.testing.assert_allclose(outputs["probabilities"]["data"], proba.ravel(), rtol=1e-6)
    assert nested["model_name"] == "iris" and nested["model_version"] == "2"


def test_version_specific_infer_answers_with_that_version(server):
    for version in ("1", "2"):
        body = server.client.post(f"/v2/models/iris/versions/{version}/infer",
                                  json=iris_body([SETOSA])).json()
        assert body["model_version"] == version
        assert body["outputs"][0]["data"] == [0]


def test_id_and_parameters_are_echoed_and_outputs_selected(server):
    body = server.client.post("/v2/models/iris/infer", json=iris_body(
        [SETOSA], id="req-42", parameters={"tag": "x"},
        outputs=[{"name": "probabilities"}])).json()
    assert body["id"] == "req-42" and body["parameters"] == {"tag": "x"}
    assert [o["name"] for o in body["outputs"]] == ["probabilities"]


def test_python_runtime_feature_transform(server):
    body = {"inputs": [{"name": "measurements", "shape": [1, 4], "datatype": "FP32",
                        "data": SETOSA}]}
    out = server.client.post("/v2/models/iris_features/infer", json=body).json()
    assert {o["name"]: o["data"] for o in out["outputs"]}["label"] == [0]


def test_bytes_tensors_in_json(server):
    body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                        "data": ["ab", "ferry"]}]}
    out = server.client.post("/v2/models/strings/infer", json=body).json()
    got = {o["name"]: o for o in out["outputs"]}
    assert got["length"]["data"] == [2, 5]
    assert got["upper"] == {"name": "upper", "datatype": "BYTES", "shape": [2],
                            "data": ["AB", "FERRY"]}


def test_unbatched_model_runs_its_fixed_shape(server):
    body = {"inputs": [{"name": "m", "shape": [2, 2], "datatype": "FP64",
                        "data": [[2, 0], [0, 3]]}]}
    out = server.client.post("/v2/models/fixed/infer", json=body).json()
    assert out["outputs"][0]["data"] == [6.0]


def test_concurrent_requests_are_batched_without_mixing_rows(server):
    import concurrent.futures as cf

    def call(i: int) -> tuple[int, dict[str, object]]:
        rows = [[i, i + 0.5, -i]] * (1 + i % 3)
        body = {"inputs": [{"name": "x", "shape": [len(rows), 3], "datatype": "FP32",
                            "data": rows}]}
        return i, server.client.post("/v2/models/echo/infer", json=body).json()

    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(96)))
    batches = set()
    for i, body in results:
        outputs = {o["name"]: o for o in body["outputs"]}
        n = 1 + i % 3
        assert outputs["y"]["shape"] == [n, 3]
        assert outputs["y"]["data"] == [2 * i, 2 * i + 1, -2 * i] * n
        assert len(set(outputs["batch"]["data"])) == 1  # a request is never split
        batches.add(outputs["batch"]["data"][0])
    assert len(batches) < len(results)  # requests that queued while busy shared batches


def test_repository_index(server):
    index = server.client.post("/v2/repository/index").json()
    by_name = {(e["name"], e["version"]): e for e in index}
    assert by_name[("iris", "1")]["state"] == "READY"
    assert by_name[("broken", "1")]["state"] == "UNAVAILABLE"
    assert "onnxruntime could not load" in by_name[("broken", "1")]["reason"]
    assert "--trust-pickles" in by_name[("pickled", "1")]["reason"]
    assert "unknown key 'max_batchsize'" in by_name[("badmanifest", "")]["reason"]
    ready = server.client.post("/v2/repository/index", json={"ready": True}).json()
    assert all(e["state"] == "READY" for e in ready) and len(ready) < len(index)


def test_metrics_count_requests_batches_and_load_times(server):
    server.client.post("/v2/models/tabular/infer", json={"inputs": [
        {"name": "input", "shape": [1, 32], "datatype": "FP32", "data": [0.0] * 32}]})
    text = server.client.get("/metrics").text
    assert 'ferry_requests_total{model="tabular",outcome="success",version="1"}' in text
    for name in ("ferry_request_duration_seconds_bucket", "ferry_queue_duration_seconds_bucket",
                 "ferry_compute_duration_seconds_bucket", "ferry_batch_size_rows_bucket",
                 "ferry_queue_rows", "ferry_model_load_seconds", "ferry_model_load_failures"):
        assert name in text


def test_openapi_document_lists_the_routes(server):
    doc = server.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/v2/models/{model}/infer" in doc["paths"]


@pytest.mark.parametrize("path", ["/v2/models/iris", "/v2/models/iris/versions/1"])
def test_tfserving_status_and_metadata(server, path):
    status = server.client.get("/v1/models/iris").json()
    assert {s["version"] for s in status["model_version_status"]} == {"1", "2"}
    assert server.client.get(path).status_code == 200


def test_tfserving_row_and_columnar_formats(server):
    rows = server.client.post("/v1/models/iris:predict", json={"instances": [SETOSA]}).json()
    assert rows["predictions"][0]["label"] == 0
    assert len(rows["predictions"][0]["probabilities"]) == 3
    cols = server.client.post("/v1/models/iris/versions/1:predict",
                              json={"inputs": {"float_input": [SETOSA]}}).json()
    assert cols["outputs"]["label"] == [0]
    single = server.client.post("/v1/models/diabetes:predict",
                                json={"instances": [[0.0] * 10]}).json()
    assert len(single["predictions"]) == 1 and len(single["predictions"][0]) == 1
