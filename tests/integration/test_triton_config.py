"""Triton's model configuration extension through NVIDIA's tritonclient (HTTP, gRPC,
asyncio): the configuration a model runs with, and loads with a configuration override."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.grpc.aio as tg_aio
import tritonclient.http as th
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess


@pytest.fixture(scope="module")
def own_server(test_repo) -> Iterator[ServerProcess]:
    """A server of its own: these tests reload models with other settings."""
    proc = ServerProcess(test_repo)
    yield proc
    proc.stop()


@pytest.fixture()
def http(own_server) -> Iterator[th.InferenceServerClient]:
    c = th.InferenceServerClient(own_server.hostport)
    yield c
    for model in ("iris", "fixed"):  # back to the repository's own settings
        c.load_model(model)
    c.close()


@pytest.fixture()
def grpc_client(own_server) -> Iterator[tg.InferenceServerClient]:
    c = tg.InferenceServerClient(own_server.grpc)
    yield c
    c.close()


def _iris_rows(rows: int) -> th.InferInput:
    inp = th.InferInput("float_input", [rows, 4], "FP32")
    inp.set_data_from_numpy(np.tile(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32), (rows, 1)))
    return inp


def test_config_of_a_model_with_model_yaml(http):
    config = http.get_model_config("iris")
    assert config["name"] == "iris"
    assert config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == 64
    assert config["input"] == [{"name": "float_input", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["output"] == [
        {"name": "label", "data_type": "TYPE_INT64", "dims": []},
        {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [3]}]
    assert config["version_policy"] == {"latest": {"num_versions": 2}}
    assert config["dynamic_batching"] == {"preferred_batch_size": [],
                                          "max_queue_delay_microseconds": 0,
                                          "default_queue_policy": {"max_queue_size": 4096}}
    assert [(g["kind"], g["count"]) for g in config["instance_group"]] == [("KIND_CPU", 1)]
    assert http.get_model_config("iris", "1")["name"] == "iris"


def test_config_of_a_model_without_model_yaml_and_of_one_without_batching(http):
    diabetes = http.get_model_config("diabetes")
    assert diabetes["max_batch_size"] == 64  # every tensor has a variable first axis
    assert diabetes["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [10]}]
    assert diabetes["version_policy"] == {"latest": {"num_versions": 1}}
    fixed = http.get_model_config("fixed")
    assert fixed["max_batch_size"] == 0 and "dynamic_batching" not in fixed
    assert fixed["input"] == [{"name": "m", "data_type": "TYPE_FP64", "dims": [2, 2]}]
    strings = http.get_model_config("strings")
    assert strings["input"][0]["data_type"] == "TYPE_STRING" and strings["backend"] == "python"


def test_grpc_config_is_a_model_config_message(grpc_client):
    response = grpc_client.get_model_config("iris")
    config = response.config
    assert isinstance(config, mc.ModelConfig)
    assert config.name == "iris" and config.max_batch_size == 64
    assert config.input[0].data_type == mc.TYPE_FP32 and list(config.input[0].dims) == [4]
    assert config.version_policy.latest.num_versions == 2
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


def test_unknown_model_or_version_is_404_and_not_found(own_server, grpc_client):
    for path in ("/v2/models/nope/config", "/v2/models/iris/versions/7/config"):
        assert own_server.client.get(path).status_code == 404
    for args in (("nope",), ("iris", "7")):
        with pytest.raises(InferenceServerException) as err:
            grpc_client.get_model_config(*args)
        assert err.value.status() == str(grpc.StatusCode.NOT_FOUND)


def _batch_sizes(http: th.InferenceServerClient, version: str) -> dict[int, int]:
    stats = http.get_inference_statistics("iris", version)["model_stats"][0]
    return {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}


def test_load_with_an_override_takes_effect(own_server, http):
    http.load_model("iris", config=json.dumps({
        "max_batch_size": 16, "dynamic_batching": {"max_queue_delay_microseconds": 50000}}))
    for version in ("", "1", "2"):
        config = http.get_model_config("iris", version)
        assert config["max_batch_size"] == 16
        assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 50000
        assert config["input"][0]["dims"] == [4]  # the rest comes from model.yaml
    assert own_server.client.get("/v2/models/iris").json()["ferry"]["max_batch_size"] == 16

    # the batcher merges at most 16 rows: 40 one-row requests at once, 50 ms to gather
    before = _batch_sizes(http, "2")

    async def burst() -> None:
        client = tg_aio.InferenceServerClient(own_server.grpc)
        try:
            async def one() -> None:
                inp = tg_aio.InferInput("float_input", [1, 4], "FP32")
                inp.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32))
                await client.infer("iris", [inp])

            await asyncio.gather(*(one() for _ in range(40)))
        finally:
            await client.close()

    asyncio.run(burst())
    after = _batch_sizes(http, "2")
    ran = {size: after[size] - before.get(size, 0) for size in after
           if after[size] != before.get(size, 0)}
    assert sum(size * n for size, n in ran.items()) == 40
    assert max(ran) <= 16, ran
    assert max(ran) > 1, ran

    http.load_model("iris")  # a load without one goes back to model.yaml
    assert http.get_model_config("iris")["max_batch_size"] == 64
    assert http.get_model_config("iris")["dynamic_batching"][
        "max_queue_delay_microseconds"] == 0


def test_the_config_read_can_be_loaded_back_changed(http):
    config = http.get_model_config("iris")
    config["max_batch_size"] = 8
    config["instance_group"][0]["count"] = 2
    config["version_policy"] = {"specific": {"versions": [1]}}
    config["input"][0]["dims"] = [4]
    http.load_model("iris", config=json.dumps(config))
    changed = http.get_model_config("iris")
    assert changed["max_batch_size"] == 8
    assert changed["instance_group"][0]["count"] == 2
    assert changed["version_policy"] == {"specific": {"versions": [1]}}
    ready = {m["version"] for m in http.get_model_repository_index()
             if m["name"] == "iris" and m["state"] == "READY"}
    assert ready == {"1"}
    assert http.infer("iris", [_iris_rows(2)]).get_response()["model_version"] == "1"


_INVALID = [
    pytest.param("iris", "{", "not valid JSON", id="bad-json"),
    pytest.param("iris", '["max_batch_size", 8]', "expected a JSON object", id="not-object"),
    pytest.param("iris", '{"max_batchsize": 8}', "max_batchsize", id="unknown-field"),
    pytest.param("iris", '{"max_batch_size": "many"}', "max_batch_size", id="wrong-type"),
    pytest.param("iris", '{"max_batch_size": -1}', "max_batch_size", id="negative"),
    pytest.param("iris", '{"sequence_batching": {}}', "sequence_batching", id="unsupported"),
    pytest.param("iris", '{"instance_group": [{"kind": "KIND_GPU"}]}', "KIND_GPU", id="gpu"),
    pytest.param("iris", '{"name": "other"}', "other", id="other-name"),
    pytest.param("iris", '{"platform": "tensorrt_plan"}', "tensorrt_plan", id="platform"),
    pytest.param("iris", '{"input": [{"name": "nope", "data_type": "TYPE_FP32", "dims": [4]}]}',
                 "nope", id="unknown-input"),
    pytest.param("fixed", '{"max_batch_size": 4}', "max_batch_size", id="cannot-batch"),
]


@pytest.mark.parametrize(("model", "config", "detail"), _INVALID)
def test_an_invalid_override_fails_and_changes_nothing(own_server, http, model, config,
                                                       detail):
    before = http.get_model_config(model)
    response = own_server.client.post(f"/v2/repository/models/{model}/load",
                                      json={"parameters": {"config": config}})
    assert response.status_code == 400
    assert "failed to load" in response.json()["error"]
    assert detail in response.json()["error"]
    with pytest.raises(InferenceServerException, match="failed to load"):
        http.load_model(model, config=config)
    assert http.get_model_config(model) == before
    assert http.is_model_ready(model)
    if model == "iris":
        assert http.infer("iris", [_iris_rows(3)]).as_numpy("label").shape == (3,)


def test_load_parameters_other_than_config_are_refused(own_server):
    response = own_server.client.post("/v2/repository/models/iris/load",
                                      json={"parameters": {"file:1/model.onnx": "AAAA"}})
    assert response.status_code == 400 and "failed to load" in response.json()["error"]
    response = own_server.client.post("/v2/repository/models/iris/load",
                                      json={"parameters": {"config": {"max_batch_size": 8}}})
    assert response.status_code == 400 and "must be a string" in response.json()["error"]


def test_grpc_load_with_an_override(http, grpc_client):
    grpc_client.load_model("iris", config='{"max_batch_size": 12}')
    assert grpc_client.get_model_config("iris").config.max_batch_size == 12
    with pytest.raises(InferenceServerException, match="failed to load") as err:
        grpc_client.load_model("iris", config='{"max_batch_size": "many"}')
    assert err.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert grpc_client.get_model_config("iris").config.max_batch_size == 12
