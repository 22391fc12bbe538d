"""model.yaml parsing: strict validation with errors naming the key and the file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from ferry.errors import ManifestError, ModelLoadError
from ferry.manifest import (DynamicBatching, ModelManifest, VersionPolicy, load_manifest,
                            parse_manifest)
from ferry.types import TensorSpec

FULL = """\
    runtime: onnx
    inputs:
      - {name: float_input, datatype: FP32, shape: [-1, 4], allow_nan: false,
         features: [a, b, c, d]}
    outputs:
      - {name: label, datatype: INT64, shape: [-1]}
    max_batch_size: 64
    dynamic_batching: {max_queue_delay_ms: 2.5, preferred_batch_sizes: [8, 16],
                       max_queue_size: 128}
    instances: 2
    threads: 3
    version_policy: {latest: 2}
    parameters: {predictor: Foo, anything: [1, 2]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_full_manifest_parses(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, FULL))
    assert m.runtime == "onnx"
    assert m.max_batch_size == 64
    assert m.instances == 2 and m.threads == 3
    assert m.dynamic_batching == DynamicBatching(max_queue_delay_ms=2.5,
                                                 preferred_batch_sizes=[8, 16],
                                                 max_queue_size=128)
    assert m.version_policy.latest == 2 and not m.version_policy.all
    assert m.parameters == {"predictor": "Foo", "anything": [1, 2]}
    assert m.inputs is not None and m.outputs is not None
    assert m.inputs[0].features == ["a", "b", "c", "d"]
    assert m.inputs[0].spec() == TensorSpec("float_input", "FP32", (-1, 4), allow_nan=False)
    assert m.outputs[0].spec() == TensorSpec("label", "INT64", (-1,), allow_nan=True)


def test_empty_manifest_gives_defaults(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, ""))
    assert m == ModelManifest()
    assert m.runtime is None and m.inputs is None and m.outputs is None
    assert m.max_batch_size is None
    assert m.instances == 1 and m.threads == 1
    assert m.dynamic_batching.max_queue_delay_ms == 0
    assert m.dynamic_batching.max_queue_size == 4096
    assert m.version_policy == VersionPolicy()
    assert m.parameters == {}


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load_manifest(tmp_path / "model.yaml") == ModelManifest()


def test_custom_runtime_name_is_accepted() -> None:
    assert parse_manifest({"runtime": "my_plugin"}).runtime == "my_plugin"


def test_manifest_is_frozen() -> None:
    m = parse_manifest({})
    with pytest.raises(ValidationError, match="frozen"):
        m.instances = 3  # type: ignore[misc]


def test_scalar_and_fixed_shapes_without_batching() -> None:
    m = parse_manifest({"max_batch_size": 0,
                        "inputs": [{"name": "m", "datatype": "FP64", "shape": [2, 2]}],
                        "outputs": [{"name": "s", "datatype": "FP64", "shape": []}]})
    assert m.inputs is not None and m.inputs[0].spec().shape == (2, 2)
    assert m.outputs is not None and m.outputs[0].spec().shape == ()


@pytest.mark.parametrize("datatype", ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8",
                                      "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
                                      "BYTES"])
def test_every_v2_datatype_is_accepted(datatype: str) -> None:
    m = parse_manifest({"inputs": [{"name": "x", "datatype": datatype, "shape": [-1]}]})
    assert m.inputs is not None and m.inputs[0].datatype == datatype


# -- errors ------------------------------------------------------------------------------

def test_unknown_top_level_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "max_batch_size: 8\nmax_batchsize: 8\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert "'max_batchsize'" in info.value.message
    assert str(path) in info.value.message
    assert "max_batch_size" in info.value.message  # the allowed keys are listed
    assert isinstance(info.value, ModelLoadError)


def test_unknown_nested_key_names_dotted_path_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "dynamic_batching: {max_queue_size: 8, foo: 1}\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert "unknown key 'dynamic_batching.foo'" in info.value.message
    assert str(path) in info.value.message


def test_unknown_key_inside_tensor_names_index() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1],
                                    "dims": [3]}]}, "repo/m/model.yaml")
    assert "unknown key 'inputs.0.dims'" in info.value.message
    assert info.value.message.startswith("repo/m/model.yaml: ")


def test_unknown_version_policy_key() -> None:
    with pytest.raises(ManifestError, match=r"unknown key 'version_policy\.newest'"):
        parse_manifest({"version_policy": {"newest": 1}})


def test_bad_datatype() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest({"inputs": [{"name": "x", "datatype": "FLOAT32", "shape": [-1]}]},
                       "m.yaml")
    assert "inputs.0" in info.value.message
    assert "'FLOAT32'" in info.value.message
    assert "FP32" in info.value.message  # names what is allowed


def test_lowercase_datatype_is_rejected() -> None:
    with pytest.raises(ManifestError, match="'fp32'"):
        parse_manifest({"outputs": [{"name": "y", "datatype": "fp32", "shape": [-1]}]})


@pytest.mark.parametrize("shape", [[-1, 0], [0], [-2, 4], [-1, -3]])
def test_bad_shape(shape: list[int]) -> None:
    with pytest.raises(ManifestError, match=r"inputs\.0.*shape"):
        parse_manifest({"inputs": [{"name": "x", "datatype": "FP32", "shape": shape}]})


def test_empty_tensor_name() -> None:
    with pytest.raises(ManifestError, match=r"inputs\.0\.name"):
        parse_manifest({"inputs": [{"name": "", "datatype": "FP32", "shape": [-1]}]})


def test_missing_tensor_fields() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest({"inputs": [{"name": "x"}]})
    assert "inputs.0.datatype" in info.value.message
    assert "inputs.0.shape" in info.value.message


def test_features_length_mismatch() -> None:
    with pytest.raises(ManifestError, match="features lists 3 names"):
        parse_manifest({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4],
                                    "features": ["a", "b", "c"]}]})


def test_features_need_two_dimensional_input() -> None:
    with pytest.raises(ManifestError, match="features"):
        parse_manifest({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1],
                                    "features": ["a"]}]})


def test_batching_requires_variable_first_dim() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest({"max_batch_size": 8,
                        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                        "outputs": [{"name": "y", "datatype": "FP32", "shape": [4]}]})
    assert "'y'" in info.value.message and "max_batch_size is 8" in info.value.message


def test_batching_rejects_scalar_tensor() -> None:
    with pytest.raises(ManifestError, match="'x' has shape"):
        parse_manifest({"max_batch_size": 2,
                        "inputs": [{"name": "x", "datatype": "FP32", "shape": []}]})


def test_fixed_first_dim_is_fine_without_batching() -> None:
    m = parse_manifest({"max_batch_size": 0,
                        "inputs": [{"name": "x", "datatype": "FP32", "shape": [3]}]})
    assert m.max_batch_size == 0


@pytest.mark.parametrize("raw, where", [
    ({"max_batch_size": -1}, "max_batch_size"),
    ({"instances": 0}, "instances"),
    ({"threads": 0}, "threads"),
    ({"dynamic_batching": {"max_queue_delay_ms": -1}}, "dynamic_batching.max_queue_delay_ms"),
    ({"dynamic_batching": {"max_queue_size": 0}}, "dynamic_batching.max_queue_size"),
    ({"dynamic_batching": {"preferred_batch_sizes": [4, 0]}},
     "dynamic_batching.preferred_batch_sizes.1"),
    ({"parameters": [1, 2]}, "parameters"),
    ({"inputs": {"name": "x"}}, "inputs"),
])
def test_out_of_range_values_name_the_field(raw: dict, where: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw, "f.yaml")
    assert f"{where}:" in info.value.message


# -- version_policy ----------------------------------------------------------------------

def test_version_policy_default_is_latest_one() -> None:
    p = parse_manifest({}).version_policy
    assert p.latest is None and not p.all and p.specific is None


def test_version_policy_latest() -> None:
    p = parse_manifest({"version_policy": {"latest": 2}}).version_policy
    assert p.latest == 2 and not p.all and p.specific is None


def test_version_policy_word_all(tmp_path: Path) -> None:
    p = load_manifest(write(tmp_path, "version_policy: all\n")).version_policy
    assert p.all and p.latest is None and p.specific is None


def test_version_policy_all_true() -> None:
    p = parse_manifest({"version_policy": {"all": True}}).version_policy
    assert p.all


def test_version_policy_specific() -> None:
    p = parse_manifest({"version_policy": {"specific": [1, 3]}}).version_policy
    assert p.specific == [1, 3] and not p.all and p.latest is None


@pytest.mark.parametrize("policy", [{"latest": 2, "all": True},
                                    {"latest": 1, "specific": [1]},
                                    {"all": True, "specific": [2]}])
def test_version_policy_two_at_once_is_an_error(policy: dict) -> None:
    with pytest.raises(ManifestError, match="version_policy: .*choose one of"):
        parse_manifest({"version_policy": policy})


@pytest.mark.parametrize("policy", [{"latest": 0}, {"specific": [-1]}, "newest", 3])
def test_version_policy_bad_values(policy: object) -> None:
    with pytest.raises(ManifestError, match="version_policy"):
        parse_manifest({"version_policy": policy})


# -- the file itself -------------------------------------------------------------------------

def test_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "inputs: [unclosed\n")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(path) in info.value.message and "not valid YAML" in info.value.message


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("just a string\n", "str"),
                                        ("42\n", "int")])
def test_non_mapping_yaml(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(path) in info.value.message
    assert f"got {kind}" in info.value.message


@pytest.mark.parametrize("text, kind", [("[]\n", "list"), ("0\n", "int"), ("false\n", "bool")])
def test_falsy_non_mapping_yaml(tmp_path: Path, text: str, kind: str) -> None:
    with pytest.raises(ManifestError, match=f"got {kind}"):
        load_manifest(write(tmp_path, text))


@pytest.mark.parametrize(("path", "ok"), [
    ("labels.txt", True), ("classes/iris.txt", True), ("./labels.txt", True),
    ("", False), ("/etc/passwd", False), ("../other/labels.txt", False),
    ("classes/../../x", False), ("\\\\server\\share", False), ("C:labels.txt", False),
])
def test_labels_files_stay_inside_the_model_folder(path: str, ok: bool) -> None:
    raw = {"labels": {"probabilities": path}}
    if ok:
        assert parse_manifest(raw).labels == {"probabilities": path}
    else:
        with pytest.raises(ManifestError, match="labels.probabilities: .* must be a path "
                                                "inside the model folder"):
            parse_manifest(raw)
