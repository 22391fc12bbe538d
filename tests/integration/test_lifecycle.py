"""Model lifecycle against a real server: versions appear and go live by themselves, a
broken version never replaces a working one, unloads drain, and the repository API loads
and unloads models (HTTP and gRPC) under loopback or admin-token control."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg

from tests.conftest import ServerProcess

DIABETES = {"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32",
                        "data": [0.01] * 10}]}
TABULAR = {"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32",
                       "data": [0.5] * 32}]}


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def index(server: ServerProcess) -> dict[tuple[str, str], dict[str, str]]:
    return {(e["name"], e["version"]): e
            for e in server.client.post("/v2/repository/index").json()}


@pytest.fixture()
def repo(tmp_path: Path, example_repo: Path) -> Path:
    root = tmp_path / "repo"
    (root / "diabetes").mkdir(parents=True)
    shutil.copytree(example_repo / "diabetes" / "1", root / "diabetes" / "1")
    shutil.copytree(example_repo / "tabular", root / "tabular")
    return root


@pytest.fixture()
def polling(repo: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(repo, "--poll", "0.2")
    yield proc
    proc.stop()


def test_new_version_goes_live_under_load_with_zero_failures(polling, repo, example_repo):
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=polling.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/v2/models/diabetes/infer", json=DIABETES)
                results.append((r.status_code, r.json().get("model_version", r.text)))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(results) > 50)
        shutil.copytree(example_repo / "diabetes" / "1", repo / "diabetes" / "2")
        wait_for(lambda: results[-1][1] == "2")
        wait_for(lambda: ("diabetes", "1") not in index(polling))
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert all(status == 200 for status, _ in results), {s for s, _ in results}
    versions = [v for _, v in results]
    first_new = versions.index("2")
    # 4 client threads: at most the requests already in flight at the switch answer from v1
    assert versions[first_new + 8:].count("1") == 0
    assert polling.alive()


def test_broken_version_never_replaces_a_working_one(polling, repo):
    (repo / "diabetes" / "5").mkdir()
    (repo / "diabetes" / "5" / "model.onnx").write_bytes(b"corrupt")
    wait_for(lambda: index(polling).get(("diabetes", "5"), {}).get("state") == "UNAVAILABLE")
    entry = index(polling)[("diabetes", "5")]
    assert "onnxruntime could not load" in entry["reason"]
    assert index(polling)[("diabetes", "1")]["state"] == "READY"
    body = polling.client.post("/v2/models/diabetes/infer", json=DIABETES).json()
    assert body["model_version"] == "1"
    metrics = polling.client.get("/metrics").text
    assert 'ferry_model_load_failures_total{model="diabetes"} 1.0' in metrics
    # fixing the files retries the load, and only then does v1 retire
    shutil.rmtree(repo / "diabetes" / "5")
    shutil.copytree(repo / "diabetes" / "1", repo / "diabetes" / "5")
    wait_for(lambda: index(polling).get(("diabetes", "5"), {}).get("state") == "READY")
    wait_for(lambda: ("diabetes", "1") not in index(polling))


def test_deleted_model_unloads_and_others_keep_serving(polling, repo):
    assert polling.client.post("/v2/models/diabetes/infer", json=DIABETES).status_code == 200
    shutil.rmtree(repo / "diabetes")
    wait_for(lambda: polling.client.post("/v2/models/diabetes/infer",
                                         json=DIABETES).status_code == 404)
    assert polling.client.post("/v2/models/tabular/infer", json=TABULAR).status_code == 200


def test_files_replaced_in_place_reload_the_version(polling, repo, example_repo):
    before = polling.client.get("/v2/models/tabular").json()["ferry"]["versions"][0]["sha256"]
    shutil.copy(example_repo / "iris" / "1" / "model.onnx", repo / "tabular" / "1" / "model.onnx")
    wait_for(lambda: polling.client.get("/v2/models/tabular").json()["inputs"][0]["name"]
             == "float_input")
    after = polling.client.get("/v2/models/tabular").json()["ferry"]["versions"][0]["sha256"]
    assert before != after


def test_load_and_unload_api(repo):
    proc = ServerProcess(repo, "--model-control", "explicit", "--load-model", "diabetes")
    try:
        c = proc.client
        assert c.post("/v2/models/diabetes/infer", json=DIABETES).status_code == 200
        assert c.post("/v2/models/tabular/infer", json=TABULAR).status_code == 404
        assert "not loaded" in index(proc)[("tabular", "")]["reason"]
        assert c.post("/v2/repository/models/tabular/load").status_code == 200
        assert c.post("/v2/models/tabular/infer", json=TABULAR).status_code == 200
        assert c.post("/v2/repository/models/tabular/unload").status_code == 200
        r = c.post("/v2/models/tabular/infer", json=TABULAR)
        assert r.status_code == 503 and "unloaded" in r.json()["error"]
        assert index(proc)[("tabular", "")]["state"] == "UNAVAILABLE"
        assert c.post("/v2/repository/models/nope/load").status_code == 404
        assert c.post("/v2/repository/models/nope/unload").status_code == 404
        # concurrent calls for one model are serialised and leave a consistent state
        with httpx.Client(base_url=proc.url, timeout=60) as other:
            threads = [threading.Thread(target=other.post, args=(
                f"/v2/repository/models/tabular/{verb}",)) for verb in ["load", "unload"] * 4]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert c.post("/v2/repository/models/tabular/load").status_code == 200
        assert c.post("/v2/models/tabular/infer", json=TABULAR).status_code == 200
        assert proc.alive()
    finally:
        proc.stop()


def test_load_of_a_broken_model_is_400_with_the_reason(repo):
    (repo / "bad" / "1").mkdir(parents=True)
    (repo / "bad" / "1" / "model.onnx").write_bytes(b"nope")
    proc = ServerProcess(repo, "--model-control", "explicit")
    try:
        r = proc.client.post("/v2/repository/models/bad/load")
        assert r.status_code == 400 and "onnxruntime could not load" in r.json()["error"]
    finally:
        proc.stop()


def test_grpc_load_and_unload(repo):
    proc = ServerProcess(repo, "--model-control", "explicit")
    client = tg.InferenceServerClient(proc.grpc)
    try:
        client.load_model("tabular")
        assert client.is_model_ready("tabular")
        inp = tg.InferInput("input", [1, 32], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 32), dtype=np.float32))
        assert client.infer("tabular", [inp]).as_numpy("label").shape == (1,)
        client.unload_model("tabular")
        assert not client.is_model_ready("tabular")
    finally:
        client.close()
        proc.stop()


def test_admin_token_and_disabled_control(repo):
    proc = ServerProcess(repo, "--admin-token", "s3cret")
    try:
        path = "/v2/repository/models/tabular/unload"
        assert proc.client.post(path).status_code == 401
        assert proc.client.post(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert proc.client.post(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    finally:
        proc.stop()
    proc = ServerProcess(repo, "--no-model-control-api")
    try:
        r = proc.client.post("/v2/repository/models/tabular/unload")
        assert r.status_code == 403 and "disabled" in r.json()["error"]
    finally:
        proc.stop()
