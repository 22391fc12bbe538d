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

from ferry.monitoring.reference import FeatureProfile, Profile

_EPS = 1e-4
_vecdot = getattr(np, "vecdot", None)
"""numpy >= 2: what ``scipy.stats.wasserstein_distance`` sums its integrand with."""


@dataclass(frozen=True)
class DriftSettings:
    """Thresholds; every one can be overridden per model (``monitoring: drift:`` in
    ``model.yaml``)."""

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
    exact_ks: bool = True
    """Exact KS p-values for samples of at most ``EXACT_KS_MAX`` values (scipy's rule);
    False: always the asymptotic one (coarse answers, e.g. the ``since`` slices)."""
    p_values: bool = True
    """False: numeric features skip the KS p-value (reported as None) and decide on the
    distance alone. For the ``since`` slices, which only need the distance: an asymptotic
    p-value costs up to ~30 ms when the shift is large (scipy's ``smirnov`` is a sum over
    n terms)."""


def _stats() -> Any:
    from scipy import stats  # a default dependency, imported when first needed (~0.3 s)

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
    """The 1-Wasserstein distance of two samples (the area between their CDFs): the same
    number as ``scipy.stats.wasserstein_distance(a, b)``."""
    return _Merged(np.sort(np.asarray(a, np.float64)),
                   np.sort(np.asarray(b, np.float64))).wasserstein()


EXACT_KS_MAX = 10_000
"""Up to this many values per side, ``ks_2samp`` computes the exact p-value (scipy's
``method="auto"`` rule); above it, Smirnov's asymptotic distribution."""


class _Merged:
    """Two samples merged into one sorted array, the one pass every measure shares (KS,
    Wasserstein, PSI bin counts; L-infinity is the KS statistic).

    The merge is a stable ``argsort`` of the two samples concatenated; given sorted
    samples (callers pass them so) it is timsort merging two runs, in linear time. At every
    position of the merge, ``gap`` is ``F_a - F_b``, the difference of the two empirical
    CDFs counted up to and including that position, so neither CDF needs a
    ``searchsorted`` of one sample into the other (scipy's ``ks_2samp`` and
    ``wasserstein_distance`` do that four times per feature). Where values tie, the counts
    are right only at the **end of each run of equal values** (``ends``): KS reads the gap
    only there, and inside a run the Wasserstein integrand is multiplied by a zero-width
    step. Every number is thus computed from the same floats, in the same order, as
    scipy's: identical, not merely close (``tests/monitoring/test_drift_speed_exact.py``).
    """

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        self.n1, self.n2 = n1, n2 = len(a), len(b)
        both = np.concatenate([a, b])
        order = np.argsort(both, kind="stable")
        self.values = both[order]
        # int32: an int64 cumulative sum is ~3x slower and n1 + n2 is far below 2**31
        self.in_a = in_a = np.cumsum(order < n1, dtype=np.int32)
        in_b = np.arange(1, n1 + n2 + 1, dtype=np.int32) - in_a
        self.gap = in_a / n1 - in_b / n2
        ends = np.empty(n1 + n2, dtype=bool)
        np.not_equal(self.values[1:], self.values[:-1], out=ends[:-1])
        ends[-1] = True
        self.ends = None if ends.all() else ends
        """None when no two values are equal (continuous data): every position counts."""

    def ks_statistic(self) -> float:
        """``max |F_a - F_b|`` over the data points (``scipy.stats.ks_2samp``'s D)."""
        gap = self.gap if self.ends is None else self.gap[self.ends]
        return float(max(-gap.min(), gap.max()))

    def wasserstein(self) -> float:
        """``scipy.stats.wasserstein_distance``: the CDF gap integrated over the merged
        values (``vecdot`` of the gaps and the steps, as scipy sums them)."""
        if len(self.values) < 2:
            return 0.0
        gaps = np.abs(self.gap[:-1])
        steps = np.diff(self.values)
        if _vecdot is None:  # numpy 1.x: scipy sums the products the same way
            return float(np.sum(gaps * steps))
        return float(_vecdot(gaps, steps))

    def below_b(self, edges: np.ndarray) -> np.ndarray:
        """How many values of ``b`` are strictly below each of ``edges`` (sorted):
        ``searchsorted(b, edges, "left")``, read off the merge."""
        at = np.searchsorted(self.values, edges, side="left")
        before = np.where(at > 0, self.in_a[np.maximum(at - 1, 0)], 0)
        return at - before


def _kolmogorov_sf(d: float, n1: int, n2: int) -> float:
    """scipy's asymptotic two-sided p-value (``ks_2samp``, ``method="asymp"``)."""
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(_stats().kstwo.sf(d, np.round(en)), 0, 1))


def ks_2samp(a: np.ndarray, b: np.ndarray, exact: bool = True) -> tuple[float, float]:
    """The two-sided two-sample KS statistic and p-value of two samples (sorted ones skip
    a sort): the same numbers as ``scipy.stats.ks_2samp(a, b)`` (method ``auto``).

    Samples of more than ``EXACT_KS_MAX`` values (the usual case: 50,000-value
    reservoirs) take scipy's ``asymp`` path, with the statistic read off one merge of the
    samples; smaller ones defer to scipy for the exact p-value, unless ``exact`` is False
    (then every size is asymptotic).
    """
    if exact and max(len(a), len(b)) <= EXACT_KS_MAX:
        ks = _stats().ks_2samp(a, b)
        return float(ks.statistic), float(ks.pvalue)
    d = _Merged(_sorted(np.asarray(a, np.float64)),
                _sorted(np.asarray(b, np.float64))).ks_statistic()
    return d, _kolmogorov_sf(d, len(a), len(b))


def _sorted(x: np.ndarray) -> np.ndarray:
    return x if len(x) < 2 or bool(np.all(x[1:] >= x[:-1])) else np.sort(x)


def numeric_drift(ref: np.ndarray, cur: np.ndarray, ref_std: float | None,
                  s: DriftSettings) -> dict[str, Any]:
    """KS, Wasserstein, PSI and L-infinity on two numeric samples, from one merge."""
    ref = _sorted(ref)  # reference samples are stored sorted: usually a no-op check
    merged = _Merged(ref, np.sort(cur))
    p_value: float | None
    if s.exact_ks and max(len(ref), len(cur)) <= EXACT_KS_MAX:
        # small samples: scipy's exact path, whose D is its own rational h / lcm(n1, n2)
        ks = _stats().ks_2samp(ref, cur)
        statistic, p_value = float(ks.statistic), float(ks.pvalue)
    else:
        statistic = merged.ks_statistic()
        p_value = _kolmogorov_sf(statistic, len(ref), len(cur)) if s.p_values else None
    w = merged.wasserstein()
    scale = ref_std if ref_std and ref_std > 0 else 1.0
    # deciles of the sorted reference (np.quantile's linear rule, without its partition)
    pos = np.linspace(0, 1, 11) * (len(ref) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(ref) - 1)
    edges = np.unique(ref[lo] + (ref[hi] - ref[lo]) * (pos - lo))
    if len(edges) > 2:
        inner = edges[1:-1]
        # counts per bin: the edges' positions in the sorted reference and in the merge
        p = np.diff(np.concatenate([[0], np.searchsorted(ref, inner, side="left"),
                                    [len(ref)]]))
        q = np.diff(np.concatenate([[0], merged.below_b(inner), [len(cur)]]))
        psi = _psi(p / p.sum(), q / q.sum())
    else:
        psi = 0.0
    distance = w / scale
    significant = p_value is None or p_value < s.alpha
    return {"method": "ks+wasserstein", "statistic": statistic, "p_value": p_value,
            "distance": distance, "wasserstein": w, "psi": psi,
            "linf": statistic,
            "drifted": bool(significant and distance >= s.wasserstein)}


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
    n, total = len(x), len(z)
    m = total - n
    rng = np.random.default_rng(seed)
    # every split at once: row 0 the observed one, then the permutations; with 0/1
    # indicator vectors a (first group) and b, sum(Kxx) = a'Ka, sum(Kyy) = b'Kb,
    # sum(Kxy) = a'Kb, and the traces are the kernel's diagonal summed over each group
    orders = np.vstack([np.arange(total)] + [rng.permutation(total)
                                             for _ in range(permutations)])
    a = np.zeros((len(orders), total))
    np.put_along_axis(a, orders[:, :n], 1.0, axis=1)
    b = 1.0 - a
    ka, kb = a @ k, b @ k
    diag = np.diag(k)
    sxx, syy, sxy = (ka * a).sum(1), (kb * b).sum(1), (ka * b).sum(1)
    stats = ((sxx - a @ diag) / (n * (n - 1)) + (syy - b @ diag) / (m * (m - 1))
             - 2 * sxy / (n * m))
    observed = float(stats[0])
    hits = int(np.sum(stats[1:] >= observed))
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
