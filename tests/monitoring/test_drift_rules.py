"""The pure deciders: drift decisions by effect size and significance, empty windows,
codec round trips, alert rules with deduplication."""

from __future__ import annotations

import numpy as np
import pytest

from ferry.evalstore import codec
from ferry.monitoring.alerts import evaluate, parse_rule
from ferry.monitoring.drift import DriftSettings, drift_report
from ferry.monitoring.reference import Profile, build_profile


def _profile(values: np.ndarray, kind: str = "numeric") -> Profile:
    return build_profile({"a": values}, {"a": kind}, sample_size=200_000)


@pytest.mark.parametrize(("shift", "drifted"), [(0.0, False), (0.02, False), (0.15, True)])
def test_numeric_decision_uses_effect_size_not_only_p_values(shift, drifted):
    rng = np.random.default_rng(3)
    ref = _profile(rng.normal(0, 1, 100_000))
    cur = _profile(rng.normal(shift, 1, 100_000))
    entry = drift_report(ref, cur, ["a"], DriftSettings())["features"]["a"]
    assert entry["drifted"] is drifted
    if shift == 0.02:
        assert entry["p_value"] < 0.05  # plain KS would have flagged this harmless shift


def test_small_and_empty_windows_are_not_judged():
    ref = _profile(np.random.default_rng(0).normal(size=1000))
    for cur in (np.zeros(0), np.full(10, 5.0), np.full(100, np.nan)):
        entry = drift_report(ref, _profile(cur), ["a"], DriftSettings())["features"]["a"]
        assert entry["method"] == "insufficient_data" and entry["drifted"] is False


def test_profile_roundtrip_and_merge():
    rng = np.random.default_rng(1)
    a = build_profile({"n": rng.normal(size=500), "c": np.array(["x", "y"] * 250, object)},
                      {"n": "numeric", "c": "categorical"})
    b = Profile.from_bytes(a.to_bytes())
    assert b.features["c"].categories == {"x": 250, "y": 250}
    np.testing.assert_array_equal(b.features["n"].sample, a.features["n"].sample)
    merged = a.merge(b)
    assert merged.rows == 1000 and merged.features["c"].categories["x"] == 500
    assert merged.features["n"].quantiles([0.5])


def test_codec_decodes_mixed_batches_in_order():
    blobs = [codec.encode({"x": np.full((k, 2), k, np.float32),
                           "s": np.array([f"r{k}"] * k, object)}) for k in (1, 3, 1, 2)]
    tensors, rows = codec.decode_many(blobs)
    assert rows.tolist() == [1, 3, 1, 2]
    assert tensors["x"][:, 0].tolist() == [1, 3, 3, 3, 1, 2, 2]
    assert tensors["s"].tolist() == ["r1", "r3", "r3", "r3", "r1", "r2", "r2"]


def test_alert_rules_evaluate_over_report_paths():
    rule = parse_rule("drift.feature_share > 0.3")
    hot = {"drift": {"feature_share": 0.5}}
    assert evaluate(rule, hot) == (True, 0.5)
    assert evaluate(parse_rule("perf.accuracy < 0.8"), {"performance": {}}) == (False, None)
    assert evaluate(parse_rule("quality.null_rate.age > 0.05"),
                    {"quality": {"null_rate": {"age": 0.2}}})[0]
    assert evaluate(parse_rule("latency.p99_ms > 50"),
                    {"traffic": {"latency": {"p99_ms": 80.0}}})[0]
    with pytest.raises(Exception, match="METRIC OP NUMBER"):
        parse_rule("drift is bad")
