"""A load's configuration override, read into manifest settings and laid over a manifest
(pure functions, by enumeration)."""

from __future__ import annotations

import json

import pytest

from ferry.errors import ManifestError, RepositoryError
from ferry.manifest import ModelManifest, overlay, parse_manifest
from ferry.protocols.model_config import override_settings


@pytest.mark.parametrize(("config", "settings"), [
    ({}, {}),
    ({"max_batch_size": 0}, {"max_batch_size": 0}),
    ({"max_batch_size": 16, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]},
     {"max_batch_size": 16, "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]}),
    ({"output": [{"name": "s", "data_type": "TYPE_STRING", "dims": [2, -1]}]},
     {"outputs": [{"name": "s", "datatype": "BYTES", "shape": [2, -1]}]}),  # no batching
    ({"dynamic_batching": {"max_queue_delay_microseconds": 1500, "preferred_batch_size": [4, 8],
                           "default_queue_policy": {"max_queue_size": 100}}},
     {"dynamic_batching": {"max_queue_delay_ms": 1.5, "preferred_batch_sizes": [4, 8],
                           "max_queue_size": 100}}),
    ({"dynamic_batching": {}},  # Triton's 0 = unbounded queue keeps Ferry's limit
     {"dynamic_batching": {"max_queue_delay_ms": 0.0, "preferred_batch_sizes": []}}),
    ({"instance_group": [{"count": 2, "kind": "KIND_CPU"}, {"kind": "KIND_AUTO"}]},
     {"instances": 3}),
    ({"version_policy": {"latest": {"num_versions": 3}}}, {"version_policy": {"latest": 3}}),
    ({"version_policy": {"all": {}}}, {"version_policy": "all"}),
    ({"version_policy": {"specific": {"versions": [1, 3]}}},
     {"version_policy": {"specific": [1, 3]}}),
    ({"name": "m", "platform": "", "input": [], "max_batch_size": 0}, {"max_batch_size": 0}),
    ({"maxBatchSize": 0}, {"max_batch_size": 0}),  # protobuf's JSON names count as given
    ({"default_model_filename": "net.onnx", "output": [
        {"name": "p", "data_type": "TYPE_FP32", "dims": [3], "label_filename": "l.txt"}]},
     {"artifact": "net.onnx", "labels": {"p": "l.txt"},
      "outputs": [{"name": "p", "datatype": "FP32", "shape": [3]}]}),  # as in a config.pbtxt
])
def test_override_settings(config, settings):
    assert override_settings(json.dumps(config), "m", None) == settings


@pytest.mark.parametrize(("text", "detail"), [
    ("{", "not valid JSON"),
    ("3", "expected a JSON object"),
    ('{"max_batchsize": 8}', "max_batchsize"),
    ('{"max_batch_size": "x"}', "max_batch_size"),
    ('{"input": [{"name": "x", "data_type": "TYPE_NOPE"}]}', "TYPE_NOPE"),
    ('{"sequence_batching": {}}', "sequence_batching"),
    ('{"input": [{"name": "x", "reshape": {"shape": [2]}}]}', "input[0].reshape"),
    ('{"dynamic_batching": {"preserve_ordering": true}}', "dynamic_batching.preserve_ordering"),
    ('{"instance_group": [{"kind": "KIND_GPU"}]}', "KIND_GPU"),
    ('{"name": "other"}', "'other'"),
    ('{"input": [{"name": "x", "dims": [1]}]}', "input 'x' has no data_type"),
])
def test_invalid_overrides_name_the_problem(text, detail):
    with pytest.raises(RepositoryError, match="failed to load 'm'") as err:
        override_settings(text, "m", None)
    assert detail in err.value.message


def test_overlay_keeps_what_the_override_does_not_say():
    base = parse_manifest({
        "max_batch_size": 64, "instances": 2, "dynamic_batching": {"max_queue_size": 50},
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2], "allow_nan": False,
                    "features": ["a", "b"]}]})
    same_shape = overlay(base, {"max_batch_size": 8, "dynamic_batching": {
        "max_queue_delay_ms": 2.0}, "inputs": [{"name": "x", "datatype": "FP32",
                                               "shape": [-1, 2]}]}, "override")
    assert same_shape.max_batch_size == 8 and same_shape.instances == 2
    assert same_shape.dynamic_batching.max_queue_size == 50
    assert same_shape.dynamic_batching.max_queue_delay_ms == 2.0
    assert same_shape.inputs is not None
    assert same_shape.inputs[0].features == ["a", "b"] and not same_shape.inputs[0].allow_nan
    wider = overlay(base, {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]},
                    "override")
    assert wider.inputs is not None and wider.inputs[0].features is None  # names no longer fit
    with pytest.raises(ManifestError, match="max_batch_size"):
        overlay(ModelManifest(), {"max_batch_size": -1}, "override")


def test_overlay_keeps_the_labels_of_outputs_the_override_does_not_name():
    base = parse_manifest({"labels": {"a": "a.txt", "b": "b.txt"}})
    assert overlay(base, {"labels": {"b": "new.txt"}}, "override").labels == {
        "a": "a.txt", "b": "new.txt"}
