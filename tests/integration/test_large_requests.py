"""Requests with more rows than ``max_batch_size`` are served, through a real server: run
alone as one call when the model takes any batch size, in chunks when its graph fixes the
batch at one, never merged with other requests; small requests still batch."""

from __future__ import annotations

import re
import shutil
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import ServerProcess

_ECHO = '''
import threading, time
import numpy as np

class Echo:
    """y = 2x; ``batch`` tags each row with the call it ran in."""
    def load(self, version_dir):
        self.calls = 0
        self.lock = threading.Lock()
    def predict(self, inputs):
        with self.lock:
            self.calls += 1
            call = self.calls
        time.sleep(0.005)
        x = inputs["x"]
        return {"y": x * 2, "batch": np.full(len(x), call, dtype=np.int64)}
'''


def fixed_batch_onnx(path: Path) -> np.ndarray:
    """An ONNX graph ``y = x @ w`` whose input and output shapes fix the batch at 1 (as
    ``torch.onnx.export`` writes without ``dynamic_axes``); returns ``w``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(8, dtype=np.float32).reshape(4, 2) / 10
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "fixed_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))
    return w


@pytest.fixture(scope="module")
def large(example_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("large")
    shutil.copytree(example_repo / "iris", root / "iris")
    w = fixed_batch_onnx(root / "fixed_one" / "1" / "model.onnx")
    (root / "echo" / "1").mkdir(parents=True)
    (root / "echo" / "1" / "model.py").write_text(_ECHO)
    (root / "echo" / "model.yaml").write_text(textwrap.dedent("""\
        runtime: python
        max_batch_size: 16
        inputs: [{name: x, datatype: FP32, shape: [-1, 2]}]
        outputs:
          - {name: y, datatype: FP32, shape: [-1, 2]}
          - {name: batch, datatype: INT64, shape: [-1]}
    """))
    proc = ServerProcess(root, "--store", "none")
    yield proc, w
    proc.stop()


def infer(client: httpx.Client, model: str, name: str, x: np.ndarray,
          datatype: str = "FP32") -> dict[str, np.ndarray]:
    response = client.post(f"/v2/models/{model}/infer", json={"inputs": [{
        "name": name, "shape": list(x.shape), "datatype": datatype,
        "data": x.ravel().tolist()}]})
    assert response.status_code == 200, response.text
    return {o["name"]: np.array(o["data"]).reshape(o["shape"])
            for o in response.json()["outputs"]}


def batch_counts(client: httpx.Client, model: str) -> tuple[int, float]:
    """(batches run, rows run) of ``model`` version 1, from /metrics."""
    text = client.get("/metrics").text
    found = {}
    for suffix in ("count", "sum"):
        match = re.search(rf'^ferry_batch_size_rows_{suffix}\{{model="{model}",version="1"\}}'
                          rf' (\S+)$', text, re.M)
        assert match, f"no ferry_batch_size_rows_{suffix} for {model}"
        found[suffix] = float(match.group(1))
    return int(found["count"]), found["sum"]


def test_200_row_iris_request_equals_four_50_row_requests(large) -> None:
    proc, _ = large
    rng = np.random.default_rng(0)
    x = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(200, 4)).astype(np.float32)
    whole = infer(proc.client, "iris", "float_input", x)  # 200 rows at max_batch_size 64
    parts = [infer(proc.client, "iris", "float_input", x[i:i + 50]) for i in range(0, 200, 50)]
    assert whole["label"].shape == (200,)
    assert whole["probabilities"].shape == (200, 3)
    np.testing.assert_array_equal(whole["label"], np.concatenate([p["label"] for p in parts]))
    np.testing.assert_allclose(whole["probabilities"],
                               np.concatenate([p["probabilities"] for p in parts]), rtol=1e-6)


def test_fixed_batch_of_one_is_served_in_chunks(large) -> None:
    proc, w = large
    meta = proc.client.get("/v2/models/fixed_one").json()
    assert meta["inputs"][0]["shape"] == [-1, 4]  # served with a batch axis
    assert meta["ferry"]["max_batch_size"] == 1
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    before = batch_counts(proc.client, "fixed_one")
    out = infer(proc.client, "fixed_one", "x", x)
    np.testing.assert_allclose(out["y"], x @ w, rtol=1e-6)
    after = batch_counts(proc.client, "fixed_one")
    assert (after[0] - before[0], after[1] - before[1]) == (10, 10.0)  # ten 1-row calls
    # a 1-row request is one call, as before
    np.testing.assert_allclose(infer(proc.client, "fixed_one", "x", x[:1])["y"], x[:1] @ w,
                               rtol=1e-6)
    assert batch_counts(proc.client, "fixed_one")[0] == after[0] + 1


def test_large_request_runs_alone_while_concurrent_small_requests_batch(large) -> None:
    proc, _ = large
    big = np.arange(200 * 2, dtype=np.float32).reshape(200, 2)
    small = [np.full((1, 2), i, dtype=np.float32) for i in range(1, 49)]

    def send(x: np.ndarray) -> dict[str, np.ndarray]:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            return infer(client, "echo", "x", x)

    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = [pool.submit(send, x) for x in small[:24]]
        big_future = pool.submit(send, big)
        futures += [pool.submit(send, x) for x in small[24:]]
        results = [f.result() for f in futures]
        big_out = big_future.result()
    np.testing.assert_array_equal(big_out["y"], big * 2)
    big_batches = set(big_out["batch"].tolist())
    assert len(big_batches) == 1  # one call held the whole request (echo does not split)
    small_batches = [int(r["batch"][0]) for r in results]
    for x, r in zip(small, results, strict=True):
        np.testing.assert_array_equal(r["y"], x * 2)
    assert not big_batches & set(small_batches)  # no small request shared its call
    assert len(set(small_batches)) < len(small)  # small requests were merged into batches
