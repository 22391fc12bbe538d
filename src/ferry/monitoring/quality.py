"""Data-quality rules per window (pure): null rates, numeric ranges, allowed categories and
row count, derived from the reference profile and overridden in the ``monitoring.quality``
section of ``model.yaml``. Types are enforced at the door: a value of the wrong datatype is
a 400, never a row.

The category rule needs the list of allowed categories: the override's, else the
reference's when its counts are exact (at most ``MAX_CATEGORIES`` distinct values). A
high-cardinality reference (a frequent items sketch) has no such list, so without an
override the rule is not applied.

Each rule reports the rows that broke it, its rate, whether it is violated (rate above its
allowance) and up to five examples (value and request id).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ferry.monitoring.config import QualityConfig
from ferry.monitoring.reference import OTHER, FeatureProfile, _is_null

_EXAMPLES = 5


def _examples(values: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> list[dict[str, Any]]:
    idx = np.flatnonzero(mask)[:_EXAMPLES]
    out = []
    for i in idx:
        v = values[i]
        v = v.item() if hasattr(v, "item") else v
        if isinstance(v, float) and v != v:
            v = None
        out.append({"value": v, "request_id": str(ids[i]) if len(ids) > i else None})
    return out


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _rule(rule: str, rows: int, total: int, allowed: float, mask: np.ndarray | None,
          values: np.ndarray, ids: np.ndarray, **extra: Any) -> dict[str, Any]:
    rate = rows / total if total else 0.0
    doc = {"rule": rule, "rows": rows, "rate": rate, "allowed": allowed,
           "violated": bool(rate > allowed), **extra}
    if mask is not None and rows:
        doc["examples"] = _examples(values, ids, mask)
    return doc


def feature_quality(ref: FeatureProfile, values: np.ndarray, ids: np.ndarray,
                    cfg: QualityConfig) -> list[dict[str, Any]]:
    """The rules of one feature over the window's values."""
    override = cfg.features.get(ref.name)
    total = len(values)
    nulls = _is_null(values)
    allowed_null = (override.max_null_rate if override and override.max_null_rate is not None
                    else min(1.0, ref.null_rate + cfg.max_null_rate))
    rules = [_rule("null_rate", int(nulls.sum()), total, allowed_null, nulls, values, ids)]
    present = ~nulls
    bounds = override is not None and (override.min is not None or override.max is not None)
    if ref.kind == "numeric" and ((ref.min is not None and ref.max is not None) or bounds):
        margin = 0.1 * (ref.max - ref.min) if ref.min is not None and ref.max is not None \
            else 0.0
        lo = override.min if override and override.min is not None else (
            ref.min - margin if ref.min is not None else -np.inf)
        hi = override.max if override and override.max is not None else (
            ref.max + margin if ref.max is not None else np.inf)
        x = np.asarray(values, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = present & ((x < lo) | (x > hi))
        rules.append(_rule("range", int(bad.sum()), total, cfg.max_out_of_range, bad, values,
                           ids, min=_finite(lo), max=_finite(hi)))
    elif ref.kind == "categorical":
        allowed = set(override.categories) if override and override.categories else (
            set(ref.categories) - {OTHER} if ref.exact else set())
        if allowed:
            text = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values],
                            dtype=object)
            bad = present & ~np.isin(text.astype(str), list(allowed))
            rules.append(_rule("categories", int(bad.sum()), total, cfg.max_unknown_categories,
                               bad, values, ids, allowed_count=len(allowed)))
    return rules


def quality_report(reference: dict[str, FeatureProfile], columns: dict[str, np.ndarray],
                   ids: np.ndarray, rows: int, cfg: QualityConfig) -> dict[str, Any]:
    """``{"rows", "features": {name: [rule, ...]}, "violations": [...], "null_rate": {...}}``.

    ``reference`` holds the profile of each input feature; without reference data, empty
    profiles (``FeatureProfile(name, kind)``) give the rules that need none: null rate,
    the overrides' ranges and categories, and the row count."""
    features: dict[str, list[dict[str, Any]]] = {}
    violations = []
    null_rate = {}
    for name, ref in reference.items():
        values = columns.get(name)
        if values is None or not len(values):
            continue
        rules = feature_quality(ref, values, ids, cfg)
        features[name] = rules
        null_rate[name] = rules[0]["rate"]
        violations += [{"feature": name, "rule": r["rule"], "rows": r["rows"],
                        "rate": r["rate"]} for r in rules if r["violated"]]
    row_rule = {"rule": "min_rows", "rows": rows, "min_rows": cfg.min_rows,
                "violated": bool(cfg.min_rows and rows < cfg.min_rows)}
    if row_rule["violated"]:
        violations.append({"feature": None, "rule": "min_rows", "rows": rows, "rate": None})
    return {"rows": rows, "row_count": row_rule, "features": features,
            "null_rate": null_rate, "violations": violations,
            "violated_features": sorted({v["feature"] for v in violations if v["feature"]})}
