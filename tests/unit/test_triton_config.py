"""config.pbtxt -> manifest settings (repository/triton_config.py), enumerated."""

from __future__ import annotations

import json

import pytest

from ferry.errors import ManifestError
from ferry.manifest import parse_manifest
from ferry.repository.triton_config import (REPOSITORY, Reading, parse_config_json,
                                            parse_config_text, platform_backend,
                                            triton_datatype, v2_datatype)

SRC = "repo/m/config.pbtxt"


def _settings(text: str) -> dict:
    return parse_config_text(text, SRC, "m").settings


@pytest.mark.parametrize(("text", "shape", "mbs"), [
    ('max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]', [-1, 4], 8),
    ('max_batch_size: 0 input [ { name: "x" data_type: TYPE_FP32 dims: [ 2, 4 ] } ]', [2, 4], 0),
    ('input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]', [-1, 4], 0),
    ('max_batch_size: 4 input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]', [-1, -1], 4),
])
def test_dims_exclude_the_batch_dimension_only_when_batching(text: str, shape: list[int],
                                                             mbs: int) -> None:
    s = _settings(text)
    assert s["inputs"][0]["shape"] == shape and s["max_batch_size"] == mbs
    parse_manifest(s)  # a valid manifest


@pytest.mark.parametrize(("triton", "v2"), [("TYPE_FP32", "FP32"), ("TYPE_INT64", "INT64"),
                                            ("TYPE_STRING", "BYTES"), ("TYPE_BOOL", "BOOL"),
                                            ("TYPE_UINT8", "UINT8"), ("TYPE_FP16", "FP16")])
def test_data_types(triton: str, v2: str) -> None:
    s = _settings(f'output [ {{ name: "y" data_type: {triton} dims: [ 1 ] }} ]')
    assert s["outputs"][0]["datatype"] == v2


@pytest.mark.parametrize(("text", "policy"), [
    ("version_policy: { all { } }", "all"),
    ("version_policy: { latest: { num_versions: 3 } }", {"latest": 3}),
    ("version_policy: { specific: { versions: [ 1, 4 ] } }", {"specific": [1, 4]}),
])
def test_version_policies(text: str, policy: object) -> None:
    assert _settings(text)["version_policy"] == policy
    parse_manifest(_settings(text))


def test_a_config_without_batching_settings_leaves_ferrys_defaults() -> None:
    assert _settings('platform: "onnxruntime_onnx"') == {"runtime": "onnx"}
    assert _settings("") == {}


def test_dynamic_batching_and_instances() -> None:
    s = _settings("""
        dynamic_batching { max_queue_delay_microseconds: 2500 preferred_batch_size: [ 2, 4 ]
                           default_queue_policy { max_queue_size: 0 } }
        instance_group [ { count: 2 kind: KIND_CPU }, { kind: KIND_AUTO } ]""")
    assert s["dynamic_batching"] == {"max_queue_delay_ms": 2.5, "preferred_batch_sizes": [2, 4]}
    assert s["instances"] == 3  # a group without a count is one instance


def test_labels_and_default_model_filename() -> None:
    c = parse_config_text('default_model_filename: "net.onnx" output [ { name: "p" '
                          'data_type: TYPE_FP32 dims: [ 3 ] label_filename: "labels.txt" } ]',
                          SRC, "m")
    assert c.settings["labels"] == {"p": "labels.txt"}
    assert c.settings["artifact"] == "net.onnx" and c.settings["runtime"] == "onnx"
    assert c.unsupported == []


def test_every_set_field_outside_the_supported_set_is_reported() -> None:
    c = parse_config_text("""
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] optional: true } ]
        dynamic_batching { priority_levels: 2 default_queue_policy { timeout_action: DELAY } }
        model_warmup [ { name: "w" } ]
        parameters { key: "k" value { string_value: "v" } }
        response_cache { enable: true }""", SRC, "m")
    assert c.unsupported == ["dynamic_batching.default_queue_policy.timeout_action",
                             "dynamic_batching.priority_levels", "input[0].optional",
                             "model_warmup", "parameters", "response_cache"]


@pytest.mark.parametrize(("text", "words"), [
    ('platform: "tensorrt_plan"', ["platform 'tensorrt_plan'", "onnxruntime_onnx"]),
    ('backend: "python"', ["backend 'python'"]),
    ('platform: "onnxruntime_onnx" backend: "python"', ["backend 'python'", "onnxruntime"]),
    ('name: "other"', ["name is 'other'", "folder is 'm'"]),
    ('input [ { name: "x" dims: [ 1 ] } ]', ["input 'x' has no data_type"]),
    ('max_batch_size: 8\nfoo: 1', [f"{SRC}:2:1", "foo"]),
    ("max_batch_size: -", [f"{SRC}:1:"]),
])
def test_errors_name_the_file_and_the_problem(text: str, words: list[str]) -> None:
    with pytest.raises(ManifestError) as info:
        parse_config_text(text, SRC, "m")
    for word in words:
        assert word in info.value.message


def test_json_form_maps_the_same() -> None:
    c = parse_config_json('{"max_batch_size": 16, "instance_group": [{"count": 2}]}', "load", "m")
    assert c.settings == {"max_batch_size": 16, "instances": 2}
    with pytest.raises(ManifestError, match="load: not a valid"):
        parse_config_json('{"max_batch_size": "x"}', "load", "m")


_EXTRAS = '{"max_batch_size": 4, "optimization": {"input_pinned_memory": {"enable": true}}, ' \
          '"instance_group": [{"kind": "KIND_GPU"}]}'


def test_one_mapping_a_lenient_and_a_strict_reading() -> None:
    """The same configuration: a config.pbtxt reports what Ferry does not honour and
    serves; an override refuses it, naming every field."""
    lenient = parse_config_json(_EXTRAS, "load", "m", REPOSITORY)
    assert lenient.settings == {"max_batch_size": 4, "instances": 1}
    assert lenient.unsupported == ["instance_group[0].kind=KIND_GPU (runs on CPU)",
                                   "optimization"]
    with pytest.raises(ManifestError) as info:
        parse_config_json(_EXTRAS, "load", "m", Reading.override("onnx", 8))
    assert info.value.message.startswith(
        "load: Ferry does not support instance_group[0].kind=KIND_GPU, optimization; "
        "it honours backend, default_model_filename, dynamic_batching, ")


@pytest.mark.parametrize(("config", "runtime", "settings"), [
    ('{"backend": "python", "input": [{"name": "x", "data_type": "TYPE_STRING", "dims": [1]}]}',
     "python", {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [-1, 1]}]}),
    ('{"platform": "onnxruntime_onnx", "backend": "onnxruntime"}', "onnx", {}),
    ('{"platform": "tensorrt_plan"}', None, {}),  # no version runs: nothing to check against
])
def test_an_override_targets_the_running_runtime_and_batching(config: str, runtime: str | None,
                                                              settings: dict) -> None:
    assert parse_config_json(config, "load", "m", Reading.override(runtime, 8)).settings \
        == settings


@pytest.mark.parametrize(("config", "runtime", "words"), [
    ('{"platform": "onnxruntime_onnx"}', "python",
     ["platform 'onnxruntime_onnx' is not the model's runtime 'python'", "backend: 'python'"]),
    ('{"backend": "sklearn"}', "onnx", ["backend 'sklearn'", "platform: 'onnxruntime_onnx'"]),
])
def test_an_override_naming_another_runtime_is_refused(config: str, runtime: str,
                                                       words: list[str]) -> None:
    with pytest.raises(ManifestError) as info:
        parse_config_json(config, "load", "m", Reading.override(runtime, 0))
    for word in words:
        assert word in info.value.message


@pytest.mark.parametrize(("v2", "triton"), [("FP32", "TYPE_FP32"), ("BYTES", "TYPE_STRING"),
                                            ("INT64", "TYPE_INT64"), ("BOOL", "TYPE_BOOL")])
def test_datatype_names_both_ways(v2: str, triton: str) -> None:
    assert triton_datatype(v2) == triton and v2_datatype(triton) == v2


@pytest.mark.parametrize("runtime", ["onnx", "python", "sklearn"])
def test_platform_and_backend_name_the_runtime_both_ways(runtime: str) -> None:
    platform, backend = platform_backend(runtime)
    config = json.dumps({"platform": platform, "backend": backend})
    assert parse_config_json(config, "load", "m", Reading.override(runtime, 0)).settings == {}
