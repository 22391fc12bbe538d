"""The domain-classifier drift test (``ferry.monitoring.classifier``): how often it fires
on clean data (is its p-value calibrated?) and how often it catches a correlation change
that MMD and the per-feature tests miss.

1. Calibration: ``--trials`` null trials (both sides N(0, I), 1,000 rows a side, 5
   features). For each, the p-value of the held-out half (what Ferry does) and of pooled
   5-fold out-of-fold scores (the usual cross-validated AUC, for comparison). A calibrated
   test rejects ``alpha`` of the trials.
2. Power: 20 seeds of 20 features whose first two go from uncorrelated to ``--rho``,
   profiled as the monitor does; counts of windows flagged by the classifier, MMD and the
   per-feature tests.

    python bench/classifier_drift_check.py [--trials 400] [--rho 0.6]
"""

from __future__ import annotations

import argparse

import numpy as np


def calibration(trials: int) -> None:
    from scipy import stats
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from ferry.monitoring.classifier import ClassifierSettings, design, domain_classifier_test

    names = [f"f{i}" for i in range(5)]
    held, pooled = [], []
    for t in range(trials):
        rng = np.random.default_rng(1000 + t)
        x, y = rng.normal(size=(1000, 5)), rng.normal(size=(1000, 5))
        held.append(domain_classifier_test(x, y, names, ClassifierSettings(seed=t))["p_value"])
        both = np.vstack([x, y])
        z, _ = design((both - both.mean(0)) / both.std(0), names)
        label = np.r_[np.zeros(1000), np.ones(1000)]
        score = np.zeros(len(label))
        for train, test in StratifiedKFold(5, shuffle=True, random_state=t).split(z, label):
            model = LogisticRegression(C=0.1, max_iter=1000).fit(z[train], label[train])
            score[test] = model.decision_function(z[test])
        pooled.append(stats.mannwhitneyu(score[label == 1], score[label == 0],
                                         alternative="greater").pvalue)
    for name, ps in (("held-out half (Ferry)", held), ("pooled 5-fold", pooled)):
        p = np.array(ps)
        print(f"{name:22} rejected at 0.01: {(p < 0.01).mean():.3f}  at 0.05: "
              f"{(p < 0.05).mean():.3f}  ({trials} null trials)")


def power(rho: float) -> None:
    from ferry.monitoring.config import MonitoringConfig
    from ferry.monitoring.reference import build_profile
    from ferry.monitoring.report import feature_drift_report, multivariate

    names = [f"f{i}" for i in range(20)]

    def profile(r: float, seed: int):  # type: ignore[no-untyped-def]
        x = np.random.default_rng(seed).normal(size=(5000, len(names)))
        x[:, 1] = r * x[:, 0] + np.sqrt(1 - r ** 2) * x[:, 1]
        return build_profile({n: x[:, i] for i, n in enumerate(names)},
                             dict.fromkeys(names, "numeric"), seed=seed)

    cfg = MonitoringConfig()
    ref = profile(0.0, 1)
    for r in (0.0, rho):
        hits = {"classifier": 0, "mmd": 0, "per-feature": 0}
        for seed in range(2, 22):
            window = profile(r, seed)
            mv = multivariate(ref, window, cfg)
            hits["classifier"] += mv["classifier"]["drifted"]
            hits["mmd"] += mv["mmd"]["drifted"]
            hits["per-feature"] += bool(
                feature_drift_report(ref, window, names, cfg)["drifted_features"])
        print(f"correlation {r}: windows flagged of 20: " +
              ", ".join(f"{k} {v}" for k, v in hits.items()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--rho", type=float, default=0.6)
    args = ap.parse_args()
    calibration(args.trials)
    power(args.rho)


if __name__ == "__main__":
    main()
