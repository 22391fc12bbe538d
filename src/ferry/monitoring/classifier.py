"""Multivariate drift by a domain classifier: can a model tell reference rows from window
rows? (pure functions)

Per-feature tests look at one marginal at a time, and a kernel two-sample test (MMD) with a
median-heuristic bandwidth loses power as the number of features grows; both can miss a
change in how features move together (a correlation that appears or flips). Here a
scikit-learn ``LogisticRegression`` is trained to separate the reference's joint sample
(label 0) from the window's (label 1) on the standardized numeric inputs, their squares
and, up to ``INTERACTIONS_MAX_FEATURES`` features, their pairwise products, so it sees
shifts in means, spreads and correlations.

- **Statistic:** the ROC AUC on a held-out half (stratified split: the model is fitted on
  one half of each side and scores the other). 0.5 means the two samples are
  indistinguishable.
- **p-value:** the one-sided Mann-Whitney U test of the held-out window scores above the
  held-out reference scores (the AUC is U / (n x m)). It is valid because the scored rows
  played no part in the fit. Pooling the out-of-fold scores of k-fold cross-fitting is
  not: the folds' models share training rows, so their AUCs are positively correlated; on
  400 null trials (1,000 rows a side, 5 features) pooled 5-fold scores rejected 3.3% at
  alpha 0.01 and 9.5% at 0.05, the held-out half 1.5% and 5.0%.
- **Decision:** ``p < alpha`` **and** ``AUC >= auc`` (default 0.55), for the same reason as
  the per-feature rules: with many rows a tiny, harmless difference becomes significant.
- **Evidence:** when drifted, the terms with the largest coefficients of the fitted model
  (``f0*f1`` is the product of ``f0`` and ``f1``: their correlation changed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ferry.monitoring.reference import Profile

INTERACTIONS_MAX_FEATURES = 30
"""Up to this many features the classifier also gets every pairwise product (435 terms at
30); above it, only the features and their squares."""


@dataclass(frozen=True)
class ClassifierSettings:
    alpha: float = 0.01
    """Significance level of the Mann-Whitney test on the out-of-fold scores."""
    auc: float = 0.55
    """Effect-size threshold: drift needs a cross-validated AUC at least this high."""
    rows: int = 1000
    """Rows per side at most (the profiles' joint samples hold 1,000)."""
    test_share: float = 0.5
    """Share of each side held out and scored."""
    min_rows: int = 50
    """Fewer complete rows on either side: not judged."""
    regularization: float = 0.1
    """``C`` of the logistic regression (smaller is stronger)."""
    seed: int = 0


def _sklearn() -> Any:
    # a default dependency, imported when first needed (about 0.5 s)
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    return LogisticRegression, train_test_split


def design(x: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """The classifier's inputs from standardized features: each feature, its square and
    (up to ``INTERACTIONS_MAX_FEATURES`` features) every pairwise product, standardized."""
    d = x.shape[1]
    terms = [x, x * x]
    labels = list(names) + [f"{n}^2" for n in names]
    if d <= INTERACTIONS_MAX_FEATURES:
        i, j = np.triu_indices(d, 1)
        terms.append(x[:, i] * x[:, j])
        labels += [f"{names[a]}*{names[b]}" for a, b in zip(i.tolist(), j.tolist(),
                                                              strict=True)]
    z = np.hstack(terms)
    sd = z.std(axis=0)
    sd[sd == 0] = 1.0
    return (z - z.mean(axis=0)) / sd, labels


def domain_classifier_test(x: np.ndarray, y: np.ndarray, names: list[str],
                           s: ClassifierSettings) -> dict[str, Any]:
    """AUC, p-value and decision of reference rows ``x`` against window rows ``y`` (the
    same columns, complete rows, at least two a side)."""
    from scipy import stats

    logistic, split = _sklearn()
    both = np.vstack([x, y])
    mu, sd = both.mean(axis=0), both.std(axis=0)
    sd[sd == 0] = 1.0
    z, terms = design((both - mu) / sd, names)
    label = np.concatenate([np.zeros(len(x)), np.ones(len(y))])
    train, test = split(np.arange(len(label)), test_size=s.test_share, stratify=label,
                        random_state=s.seed)
    model = logistic(C=s.regularization, max_iter=1000).fit(z[train], label[train])
    scores = model.decision_function(z[test])
    held = label[test]
    n_ref, n_win = int((held == 0).sum()), int((held == 1).sum())
    mw = stats.mannwhitneyu(scores[held == 1], scores[held == 0], alternative="greater")
    auc = float(mw.statistic) / (n_ref * n_win)
    p_value = float(mw.pvalue)
    drifted = bool(p_value < s.alpha and auc >= s.auc)
    out: dict[str, Any] = {"method": "classifier", "statistic": auc, "auc": auc,
                           "p_value": p_value, "threshold": s.auc, "drifted": drifted,
                           "features": list(names), "rows": [len(x), len(y)],
                           "scored_rows": [n_ref, n_win], "model": "logistic_regression",
                           "interactions": len(names) <= INTERACTIONS_MAX_FEATURES}
    if drifted:
        coef = model.coef_[0]
        top = np.argsort(-np.abs(coef))[:5]
        out["top_terms"] = {terms[k]: float(coef[k]) for k in top.tolist()}
    return out


def classifier_drift(ref: Profile, cur: Profile, s: ClassifierSettings) -> dict[str, Any]:
    """The domain-classifier test on the numeric inputs' joint samples of two profiles."""
    names = [n for n in ref.joint_names if n in cur.joint_names]
    x = ref.joint[:, [ref.joint_names.index(n) for n in names]] if names else ref.joint
    y = cur.joint[:, [cur.joint_names.index(n) for n in names]] if names else cur.joint
    x, y = x[np.isfinite(x).all(axis=1)], y[np.isfinite(y).all(axis=1)]  # no inf rows
    if not names or len(x) < s.min_rows or len(y) < s.min_rows:
        return {"method": "classifier", "statistic": None, "auc": None, "p_value": None,
                "drifted": False, "features": names, "note": "not enough complete rows"}
    rng = np.random.default_rng(s.seed)
    if len(x) > s.rows:
        x = x[rng.choice(len(x), s.rows, replace=False)]
    if len(y) > s.rows:
        y = y[rng.choice(len(y), s.rows, replace=False)]
    return domain_classifier_test(x, y, names, s)
