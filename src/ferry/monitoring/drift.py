"""Drift: reference profile vs window profile, per feature and jointly (pure functions).

Per numeric feature, on the exact reservoir samples: the two-sample **KS** statistic and
p-value (``scipy.stats.ks_2samp``), the **Wasserstein** distance divided by the reference's
standard deviation (so ``0.1`` means "moved by about 0.1 sigma"), **PSI** over the
reference's deciles and the **L-infinity** distance between the two CDFs (= the KS
statistic). Per categorical feature: **chi-square** homogeneity test on the counts,
**Jensen-Shannon** distance (base 2), PSI and L-infinity between the category frequencies.

Decision (why not p-values alone): on 100k rows the KS test rejects harmless 0.02-sigma
shifts; on small windows a large-looking distance is noise. So a feature drifts when the
test is significant (``p < alpha``) **and** the effect is large enough
(``distance >= threshold``). Windows with fewer than ``min_rows`` non-null rows are not
judged (``method: "insufficient_data"``, ``drifted: false``), and an empty window never
yields NaN-as-drift. p-values are always reported.

Multivariate: maximum mean discrepancy (MMD, RBF kernel, median-heuristic bandwidth) on the
standardized numeric inputs' joint samples, with a permutation p-value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferry.errors import ExtraNotInstalled
from ferry.monitoring.reference import FeatureProfile, Profile

_EPS = 1e-4


@dataclass(frozen=True)
class DriftSettings:
    """Thresholds; every one can be overridden per model (``monitoring.yaml``)."""

    alpha: float = 0.01
    """Significance level of the KS / chi-square tests."""
    wasserstein: float = 0.1
    """Numeric features: drift when Wasserstein / reference std reaches this (sigmas)."""
    jensen_shannon: float = 0.1
    """Categorical features: drift when the Jensen-Shannon distance reaches this."""
    min_rows: int = 50
    """Fewer non-null rows than this in the window (or reference): not judged."""
    mmd_rows: int = 300
    """Rows per side in the multivariate test."""
    mmd_permutations: int = 100


def _stats() -> Any:
    try:
        from scipy import stats
    except ImportError:
        raise ExtraNotInstalled("drift tests need scipy: pip install 'ferry[monitoring]'") \
            from None
    return stats


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    p = np.clip(p, _EPS, None)
    q = np.clip(q, _EPS, None)
    return float(np.sum((q - p) * np.log(q / p)))


def _clean(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """The 1-Wasserstein distance of two samples (the area between their CDFs), as
    ``scipy.stats.wasserstein_distance`` computes it, without its argsort of both."""
    a, b = np.sort(a), np.sort(b)
    both = np.concatenate([a, b])
    both.sort(kind="mergesort")
    deltas = np.diff(both)
    cdf_a = np.searchsorted(a, both[:-1], side="right") / len(a)
    cdf_b = np.searchsorted(b, both[:-1], side="right") / len(b)
    return float(np.sum(np.abs(cdf_a - cdf_b) * deltas))


def numeric_drift(ref: np.ndarray, cur: np.ndarray, ref_std: float | None,
                  s: DriftSettings) -> dict[str, Any]:
    """KS, Wasserstein, PSI and L-infinity on two numeric samples."""
    stats = _stats()
    ks = stats.ks_2samp(ref, cur)
    w = wasserstein(ref, cur)
    scale = ref_std if ref_std and ref_std > 0 else 1.0
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)))
    if len(edges) > 2:
        inner = edges[1:-1]
        p = np.bincount(np.searchsorted(inner, ref, side="right"), minlength=len(edges) - 1)
        q = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=len(edges) - 1)
        psi = _psi(p / p.sum(), q / q.sum())
    else:
        psi = 0.0
    distance = w / scale
    p_value = float(ks.pvalue)
    return {"method": "ks+wasserstein", "statistic": float(ks.statistic), "p_value": p_value,
            "distance": distance, "wasserstein": w, "psi": psi,
            "linf": float(ks.statistic),
            "drifted": bool(p_value < s.alpha and distance >= s.wasserstein)}


def categorical_drift(ref: dict[str, int], cur: dict[str, int], s: DriftSettings
                      ) -> dict[str, Any]:
    """Chi-square, Jensen-Shannon, PSI and L-infinity on two category count tables."""
    stats = _stats()
    from scipy.spatial.distance import jensenshannon

    keys = sorted(ref.keys() | cur.keys())
    a = np.array([ref.get(k, 0) for k in keys], dtype=np.float64)
    b = np.array([cur.get(k, 0) for k in keys], dtype=np.float64)
    p, q = a / a.sum(), b / b.sum()
    if len(keys) > 1:
        chi = stats.chi2_contingency(np.vstack([a, b]), correction=False)
        statistic, p_value = float(chi.statistic), float(chi.pvalue)
    else:
        statistic, p_value = 0.0, 1.0
    js = float(jensenshannon(p, q, base=2))
    new = [k for k in keys if ref.get(k, 0) == 0 and cur.get(k, 0) > 0]
    return {"method": "chi2+jensen_shannon", "statistic": statistic, "p_value": p_value,
            "distance": js, "psi": _psi(p, q), "linf": float(np.abs(p - q).max()),
            "new_categories": new[:20],
            "drifted": bool(p_value < s.alpha and js >= s.jensen_shannon)}


def feature_drift(ref: FeatureProfile, cur: FeatureProfile, s: DriftSettings
                  ) -> dict[str, Any]:
    """One feature's drift entry (see the module docstring for the decision)."""
    n_ref, n_cur = ref.count - ref.nulls, cur.count - cur.nulls
    if n_ref < s.min_rows or n_cur < s.min_rows or len(cur.sample) == 0:
        return {"method": "insufficient_data", "statistic": None, "p_value": None,
                "distance": None, "drifted": False, "n_reference": n_ref, "n_window": n_cur}
    if ref.kind == "numeric":
        out = numeric_drift(np.asarray(ref.sample, np.float64),
                            np.asarray(cur.sample, np.float64), ref.std, s)
    else:
        out = categorical_drift(ref.categories, cur.categories, s)
    out = {k: (_clean(v) if isinstance(v, float) else v) for k, v in out.items()}
    out.update(n_reference=n_ref, n_window=n_cur)
    return out


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int, seed: int = 0
             ) -> tuple[float, float]:
    """Unbiased MMD² with an RBF kernel (median heuristic) and a permutation p-value."""
    z = np.vstack([x, y])
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
    med = np.median(d2[np.triu_indices(len(z), 1)])
    k = np.exp(-d2 / (med if med > 0 else 1.0))
    n = len(x)
    rng = np.random.default_rng(seed)

    def stat(idx: np.ndarray) -> float:
        a, b = idx[:n], idx[n:]
        kxx, kyy, kxy = k[np.ix_(a, a)], k[np.ix_(b, b)], k[np.ix_(a, b)]
        m = len(b)
        return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
                     + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())

    observed = stat(np.arange(len(z)))
    hits = sum(stat(rng.permutation(len(z))) >= observed for _ in range(permutations))
    return observed, (hits + 1) / (permutations + 1)


def multivariate_drift(ref: Profile, cur: Profile, s: DriftSettings) -> dict[str, Any]:
    names = [n for n in ref.joint_names if n in cur.joint_names]
    if not names or len(ref.joint) < s.min_rows or len(cur.joint) < s.min_rows:
        return {"method": "mmd", "statistic": None, "p_value": None, "drifted": False,
                "features": names, "note": "not enough complete rows"}
    ri = [ref.joint_names.index(n) for n in names]
    ci = [cur.joint_names.index(n) for n in names]
    x, y = ref.joint[:, ri], cur.joint[:, ci]
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd[sd == 0] = 1.0
    x, y = (x - mu) / sd, (y - mu) / sd
    rng = np.random.default_rng(0)
    x = x[rng.choice(len(x), min(len(x), s.mmd_rows), replace=False)]
    y = y[rng.choice(len(y), min(len(y), s.mmd_rows), replace=False)]
    statistic, p_value = mmd_test(x, y, s.mmd_permutations)
    return {"method": "mmd", "statistic": statistic, "p_value": p_value,
            "drifted": bool(p_value < s.alpha), "features": names,
            "rows": [len(x), len(y)]}


def drift_report(ref: Profile, cur: Profile, features: list[str], s: DriftSettings
                 ) -> dict[str, Any]:
    """``{"features": {name: entry}, "drifted_features": [...], "feature_share"}``."""
    entries = {}
    for name in features:
        r, c = ref.features.get(name), cur.features.get(name)
        if r is None or c is None:
            continue
        entries[name] = feature_drift(r, c, s)
    drifted = [n for n, e in entries.items() if e["drifted"]]
    judged = [n for n, e in entries.items() if e["method"] != "insufficient_data"]
    return {"features": entries, "drifted_features": drifted,
            "feature_share": (len(drifted) / len(judged)) if judged else 0.0}
