"""The ``monitoring:`` section of model.yaml: strict validation (errors name the key and the
file), feature names checked against a declared signature, and the deprecated
``monitoring.yaml`` still read when the manifest has no section."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from ferry.errors import ManifestError
from ferry.manifest import load_manifest, parse_manifest
from ferry.monitoring.config import MonitoringConfig, load_config
from ferry.repository.layout import scan_model

SIGNATURE = """\
inputs:
  - {name: x, datatype: FP32, shape: [-1, 2], features: [age, income]}
  - {name: country, datatype: BYTES, shape: [-1]}
outputs:
  - {name: score, datatype: FP32, shape: [-1]}
"""


def write(folder: Path, text: str, name: str = "model.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_section_parses_into_the_monitoring_settings(tmp_path: Path) -> None:
    m = load_manifest(write(tmp_path, SIGNATURE + textwrap.dedent("""\
        monitoring:
          drift:
            wasserstein: 0.2
            multivariate: [classifier]
            features: {age: {wasserstein: 0.5}, country: {ignore: true}}
          quality:
            min_rows: 100
            features: {age: {min: 0, max: 120}, country: {categories: [FR, DE]}}
          alerts:
            - {name: drifted, when: "drift.feature_share > 0.3", window: 15m}
          webhook: http://127.0.0.1:9/hook
        """)))
    cfg = m.monitoring
    assert cfg.drift.wasserstein == 0.2 and cfg.drift.multivariate == ["classifier"]
    assert cfg.drift.features["age"].wasserstein == 0.5
    assert cfg.drift.features["country"].ignore
    assert cfg.quality.features["age"].max == 120 and cfg.quality.min_rows == 100
    assert cfg.alerts[0].window == "15m" and cfg.webhook == "http://127.0.0.1:9/hook"
    assert parse_manifest({}).monitoring == MonitoringConfig()


@pytest.mark.parametrize(("section", "key"), [
    ({"drift": {"wassersten": 0.2}}, "monitoring.drift.wassersten"),
    ({"quality": {"features": {"age": {"maximum": 3}}}},
     "monitoring.quality.features.age.maximum"),
    ({"alerts": [{"name": "a", "when": "window.rows < 1", "every": "1h"}]},
     "monitoring.alerts.0.every"),
    ({"drfit": {}}, "monitoring.drfit"),
])
def test_unknown_key_is_named_with_the_file(tmp_path: Path, section: dict, key: str) -> None:
    import yaml

    path = write(tmp_path, yaml.safe_dump({"monitoring": section}))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert f"unknown key {key!r}" in info.value.message
    assert info.value.message.startswith(f"{path}: ")


def test_bad_values_are_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest({"monitoring": {"drift": {"alpha": 2},
                                       "alerts": [{"name": "a", "when": "drift is bad",
                                                   "window": "soon"}]}}, "m/model.yaml")
    message = info.value.message
    assert "monitoring.drift.alpha" in message
    assert "monitoring.alerts.0.when" in message and "METRIC OP NUMBER" in message
    assert "monitoring.alerts.0.window" in message and "'soon'" in message


def test_feature_names_are_checked_against_a_declared_signature() -> None:
    raw = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2],
                       "features": ["age", "income"]}],
           "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
           "monitoring": {"quality": {"features": {"agee": {"min": 0}}}}}
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw, "m/model.yaml")
    assert "monitoring.quality.features names 'agee'" in info.value.message
    assert "['age', 'income', 'score']" in info.value.message
    # unnamed columns are x[0], x[1]; without outputs the names cannot be checked yet
    raw["inputs"][0]["features"] = None
    raw["monitoring"] = {"drift": {"features": {"x[1]": {"wasserstein": 1}}}}
    assert parse_manifest(raw).monitoring.drift.features["x[1]"].wasserstein == 1
    del raw["outputs"]
    raw["monitoring"] = {"drift": {"features": {"anything": {"ignore": True}}}}
    assert parse_manifest(raw).monitoring.drift.features["anything"].ignore


def test_a_bad_section_keeps_the_model_from_loading(tmp_path: Path) -> None:
    write(tmp_path / "m", "monitoring: {quality: {min_row: 5}}\n")
    (tmp_path / "m" / "1").mkdir()
    entry = scan_model(tmp_path / "m")
    assert entry.manifest is None
    assert entry.error is not None and "unknown key 'monitoring.quality.min_row'" in entry.error


def test_load_config_reads_model_yaml_then_the_legacy_file(tmp_path: Path, caplog) -> None:
    model = tmp_path / "m"
    write(model, "quality: {min_rows: 7}\n", "monitoring.yaml")
    with caplog.at_level(logging.WARNING, "ferry.monitoring"):
        assert load_config(model).quality.min_rows == 7  # no model.yaml: the old file
    assert "deprecated" in caplog.text
    write(model, "monitoring: {quality: {min_rows: 9}}\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, "ferry.monitoring"):
        assert load_config(model).quality.min_rows == 9  # the section wins
    assert "monitoring.yaml is ignored" in caplog.text
    write(model, "instances: 2\n")
    assert load_config(model).quality.min_rows == 7  # no section: the old file again
    write(model, "quality: {min_rows: -1}\n", "monitoring.yaml")
    with pytest.raises(ManifestError, match=r"monitoring\.yaml: quality\.min_rows"):
        load_config(model)
    assert load_config(tmp_path / "absent") == MonitoringConfig()
