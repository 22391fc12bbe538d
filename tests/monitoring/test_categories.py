"""Categorical features: exact counts up to 1,000 distinct values, an Apache DataSketches
frequent items sketch above; profiles still merge and round-trip, and high-cardinality
drift is tested over frequent-item bins on the uniform samples, agreeing with scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from ferry.monitoring.config import MonitoringConfig, QualityConfig
from ferry.monitoring.quality import feature_quality
from ferry.monitoring.reference import (
    FREQUENT_LG_MAP,
    MAX_CATEGORIES,
    OTHER,
    Profile,
    build_profile,
    comparable_categories,
)
from ferry.monitoring.report import feature_drift_report

EPSILON = 3.5 / 2 ** FREQUENT_LG_MAP  # DataSketches' a-priori error of the map size


def _values(rows: int, seed: int, distinct: int = 5000, hot: float = 0.0) -> np.ndarray:
    """Zipf-like user ids; ``hot`` extra share of rows go to ``u7``."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, distinct + 1)
    ids = rng.choice(distinct, rows, p=weights / weights.sum())
    values = np.array([f"u{i}" for i in ids], dtype=object)
    values[rng.random(rows) < hot] = "u7"
    return values


def _profile(values: np.ndarray, seed: int = 0) -> Profile:
    return build_profile({"user": values}, {"user": "categorical"}, seed=seed)


def test_high_cardinality_keeps_a_frequent_items_sketch_instead_of_counts():
    values = _values(100_000, seed=1)
    p = _profile(values).features["user"]
    assert not p.exact and p.categories == {} and p.frequent is not None
    keys, counts = np.unique(values.astype(str), return_counts=True)
    assert len(keys) > MAX_CATEGORIES
    truth = dict(zip(keys.tolist(), counts.tolist(), strict=True))
    top = p.top_categories(10)
    assert list(top)[:3] == ["u0", "u1", "u2"]
    for key, estimate in top.items():
        assert abs(estimate - truth[key]) <= EPSILON * len(values)
    again = Profile.from_bytes(_profile(values).to_bytes()).features["user"]
    assert not again.exact and again.top_categories(10) == top
    summary = p.summary()
    assert summary["categories"] is None and summary["categories_exact"] is False
    assert list(summary["frequent_items"])[:2] == ["u0", "u1"]


def test_low_cardinality_stays_exact_and_merges_exactly():
    a = _profile(np.array(["x", "y", "y"], dtype=object)).features["user"]
    assert a.exact and a.categories == {"x": 1, "y": 2} and a.frequent is None
    small = _profile(np.array(["x", "y", "y"], dtype=object))
    merged = small.merge(small).features["user"]
    assert merged.exact and merged.categories == {"x": 2, "y": 4}


def test_merging_past_the_limit_switches_to_the_sketch():
    left = np.array([f"a{i}" for i in range(700)] * 3, dtype=object)
    right = np.array([f"b{i}" for i in range(700)] + ["a0"] * 500, dtype=object)
    a, b = _profile(left), _profile(right)
    assert a.features["user"].exact and b.features["user"].exact
    merged = a.merge(b).features["user"]
    assert not merged.exact and merged.count == len(left) + len(right)
    top = merged.top_categories(1)
    assert list(top) == ["a0"]
    assert abs(top["a0"] - 503) <= EPSILON * merged.count
    # and an inexact profile merges with an exact one and with itself
    big = _profile(_values(20_000, seed=2))
    assert not big.merge(a).features["user"].exact
    assert big.merge(big).features["user"].count == 40_000


def test_profiles_stored_before_the_sketch_still_load():
    p = _profile(np.array(["x"] * 5 + ["y"], dtype=object))
    p.features["user"].categories = {"x": 5, OTHER: 1}  # what the old code wrote
    blob = p.to_bytes()
    size = int.from_bytes(blob[:4], "little")
    import orjson

    meta = orjson.loads(blob[4:4 + size])
    for key in ("exact", "frequent"):
        del meta["features"]["user"][key]
    head = orjson.dumps(meta)
    old = Profile.from_bytes(len(head).to_bytes(4, "little") + head + blob[4 + size:])
    feature = old.features["user"]
    assert not feature.exact and feature.top_categories(5) == {"x": 5.0}


def test_high_cardinality_drift_uses_bins_and_agrees_with_scipy():
    ref = _profile(_values(100_000, seed=3), seed=3)
    cfg = MonitoringConfig()
    clean = feature_drift_report(ref, _profile(_values(20_000, seed=4), seed=4), ["user"],
                                 cfg)
    assert clean["drifted_features"] == []
    window = _profile(_values(20_000, seed=5, hot=0.3), seed=5)
    report = feature_drift_report(ref, window, ["user"], cfg)
    entry = report["features"]["user"]
    assert report["drifted_features"] == ["user"]
    assert entry["method"] == "chi2+jensen_shannon"
    assert entry["categories"]["counts"] == "samples"
    assert entry["categories"]["reference_sample"] == 50_000
    assert entry["categories"]["window_sample"] == 20_000
    # the same test by hand: bins of both sides' top items, counts from the samples
    r, c, note = comparable_categories(ref.features["user"], window.features["user"])
    assert note["bins"] == len(r.categories) and OTHER in r.categories
    keys = sorted(r.categories)
    a = np.array([r.categories[k] for k in keys], float)
    b = np.array([c.categories[k] for k in keys], float)
    assert a.sum() == 50_000 and b.sum() == 20_000
    chi = stats.chi2_contingency(np.vstack([a, b]), correction=False)
    assert entry["statistic"] == pytest.approx(chi.statistic, rel=1e-9)
    assert entry["distance"] == pytest.approx(jensenshannon(a / a.sum(), b / b.sum(), base=2))
    assert OTHER not in entry["new_categories"]


def test_exact_categories_are_untouched():
    ref = _profile(np.array(["x"] * 600 + ["y"] * 400, dtype=object))
    cur = _profile(np.array(["x"] * 300 + ["y"] * 700, dtype=object))
    assert comparable_categories(ref.features["user"], cur.features["user"]) is None
    entry = feature_drift_report(ref, cur, ["user"], MonitoringConfig())["features"]["user"]
    chi = stats.chi2_contingency(np.array([[600, 400], [300, 700]]), correction=False)
    assert entry["statistic"] == pytest.approx(chi.statistic) and "categories" not in entry


def test_allowed_categories_need_exact_counts_or_an_override():
    ref = _profile(_values(50_000, seed=6)).features["user"]
    window = np.array(["u1", "nobody", "u2"], dtype=object)
    ids = np.array(["r1", "r2", "r3"], dtype=object)
    rules = feature_quality(ref, window, ids, QualityConfig())
    assert [r["rule"] for r in rules] == ["null_rate"]  # no list of allowed categories
    declared = QualityConfig.model_validate(
        {"features": {"user": {"categories": ["u1", "u2"]}}})
    rules = feature_quality(ref, window, ids, declared)
    assert rules[1]["rule"] == "categories" and rules[1]["rows"] == 1
    assert rules[1]["examples"] == [{"value": "nobody", "request_id": "r2"}]
