"""The domain-classifier multivariate test: it catches a correlation change that every
per-feature test and MMD miss, stays quiet on clean data, and its AUC and p-value are
sklearn's and scipy's on the held-out rows."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ferry.monitoring.classifier import ClassifierSettings, classifier_drift, design
from ferry.monitoring.config import MonitoringConfig
from ferry.monitoring.reference import Profile, build_profile
from ferry.monitoring.report import feature_drift_report, multivariate

NAMES = [f"f{i}" for i in range(20)]


def _profile(rho: float, seed: int, rows: int = 5000) -> Profile:
    """Twenty standard normal features; ``f0`` and ``f1`` correlated by ``rho``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(NAMES)))
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho ** 2) * x[:, 1]
    return build_profile({n: x[:, i] for i, n in enumerate(NAMES)},
                         dict.fromkeys(NAMES, "numeric"), seed=seed)


@pytest.fixture(scope="module")
def reference() -> Profile:
    return _profile(0.0, seed=1)


def test_correlation_change_is_caught_where_marginal_tests_and_mmd_are_not(reference):
    # on 20 seeds: the classifier flagged 20 of 20, MMD and the per-feature tests none
    window = _profile(0.6, seed=2)
    cfg = MonitoringConfig()
    per_feature = feature_drift_report(reference, window, NAMES, cfg)
    assert per_feature["drifted_features"] == []  # every marginal is still N(0, 1)
    mv = multivariate(reference, window, cfg)
    assert not mv["mmd"]["drifted"]
    clf = mv["classifier"]
    assert clf["drifted"] and mv["drifted"]
    assert clf["auc"] >= 0.6 and clf["p_value"] < 1e-6
    assert next(iter(clf["top_terms"])) == "f0*f1"  # the evidence names the pair


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_clean_window_is_not_flagged(reference, seed):
    clf = classifier_drift(reference, _profile(0.0, seed=seed), ClassifierSettings())
    assert not clf["drifted"]
    assert abs(clf["auc"] - 0.5) < 0.05 and "top_terms" not in clf


def test_auc_and_p_value_match_sklearn_and_scipy(reference):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    window = _profile(0.4, seed=6)
    s = ClassifierSettings()
    clf = classifier_drift(reference, window, s)
    # the same steps by hand: 1,000 joint rows a side, standardized, quadratic terms
    x, y = reference.joint, window.joint
    both = np.vstack([x, y])
    z, _ = design((both - both.mean(0)) / both.std(0), NAMES)
    label = np.r_[np.zeros(len(x)), np.ones(len(y))]
    train, test = train_test_split(np.arange(len(label)), test_size=0.5, stratify=label,
                                   random_state=0)
    score = LogisticRegression(C=0.1, max_iter=1000).fit(z[train], label[train]
                                                         ).decision_function(z[test])
    assert clf["rows"] == [1000, 1000] and clf["scored_rows"] == [500, 500]
    assert clf["auc"] == pytest.approx(roc_auc_score(label[test], score), rel=1e-12)
    held = label[test]
    p = stats.mannwhitneyu(score[held == 1], score[held == 0], alternative="greater").pvalue
    assert clf["p_value"] == pytest.approx(p, rel=1e-9)


def test_too_few_rows_and_switching_it_off(reference):
    tiny = _profile(0.0, seed=7, rows=20)
    clf = classifier_drift(reference, tiny, ClassifierSettings())
    assert clf["drifted"] is False and clf["note"] == "not enough complete rows"
    only_mmd = MonitoringConfig.model_validate({"drift": {"multivariate": ["mmd"]}})
    assert set(multivariate(reference, tiny, only_mmd)) == {"mmd", "drifted"}


def test_infinite_values_are_left_out(reference):
    window = _profile(0.0, seed=8)
    window.joint[:10, 3] = np.inf
    clf = classifier_drift(reference, window, ClassifierSettings())
    assert clf["rows"] == [1000, 990] and not clf["drifted"]
