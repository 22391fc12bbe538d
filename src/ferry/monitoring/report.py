"""The monitoring report of one model version over a window, read from the store.

``build_report`` returns the JSON document served at ``GET /ferry/v1/models/{m}/monitor``
and printed by ``ferry monitor``::

    {"model", "version", "window": {"start", "end", "rows", "requests"},
     "traffic": {"requests", "errors", "latency": {"p50_ms", "p99_ms"}},
     "drift": {"reference", "features": {name: {"method", "statistic", "p_value",
               "distance", "drifted", ...}}, "drifted_features", "feature_share",
               "since": {name: ts}, "multivariate": {"drifted", "mmd": {...},
               "classifier": {...}}, "prediction": {...}},
     "quality": {...},
     "performance": {"labelled_rows", <metrics>, "versions": {"1": {"labelled_rows", ...}}},
     "config_warnings": [...]}          # only when the monitoring settings name unknown features

The thresholds come from the version's ``monitoring`` settings (``model.yaml``), per feature
where set. A window with no rows says so (``window.rows == 0`` and a ``note``), with empty
drift and quality sections: no crash and no NaN taken for drift. ``publish`` mirrors the
report into the Prometheus gauges.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select

from ferry.errors import NotFound
from ferry.evalstore.features import FeatureLayout
from ferry.evalstore.schema import feedback, prediction_batches, prediction_index, references
from ferry.evalstore.windows import (
    WindowData,
    latest_version,
    load_layouts,
    read_window,
    versions_in,
)
from ferry.monitoring.blas import one_blas_thread
from ferry.monitoring.classifier import ClassifierSettings, classifier_drift
from ferry.monitoring.config import MonitoringConfig
from ferry.monitoring.drift import DriftSettings, drift_report, multivariate_drift
from ferry.monitoring.metrics import Metrics
from ferry.monitoring.performance import performance
from ferry.monitoring.quality import quality_report
from ferry.monitoring.reference import (
    OTHER,
    FeatureProfile,
    Profile,
    build_profile,
    comparable_categories,
)

_SLICES = 10


def load_reference(engine: Engine, model: str, version: int) -> tuple[Profile, str] | None:
    with engine.connect() as conn:
        row = conn.execute(select(references.c.profile, references.c.source).where(
            references.c.model == model, references.c.version == version)).first()
    return None if row is None else (Profile.from_bytes(row[0]), row[1])


def _settings(cfg: MonitoringConfig, feature: str | None = None) -> DriftSettings:
    """The model's drift settings, with ``feature``'s overrides when it has some."""
    d = cfg.drift
    s = DriftSettings(alpha=d.alpha, wasserstein=d.wasserstein,
                      jensen_shannon=d.jensen_shannon, min_rows=d.min_rows)
    over = d.features.get(feature) if feature is not None else None
    if over is None:
        return s
    return replace(s, **{k: v for k, v in over.model_dump(exclude={"ignore"}).items()
                         if v is not None})


def _aligned(ref: FeatureProfile, cur: FeatureProfile
             ) -> tuple[FeatureProfile, FeatureProfile, dict[str, Any] | None]:
    """``ref`` and ``cur`` ready for the drift tests (high-cardinality categories binned)."""
    binned = comparable_categories(ref, cur)
    return (ref, cur, None) if binned is None else binned


def feature_drift_report(ref: Profile, cur: Profile, names: list[str],
                         cfg: MonitoringConfig) -> dict[str, Any]:
    """``drift_report`` with each feature's own settings; features set to ``ignore`` are
    left out, and high-cardinality categorical features are compared over the frequent
    items' bins (their entries say so under ``categories``)."""
    wanted = [n for n in names if n in ref.features and n in cur.features
              and not (n in cfg.drift.features and cfg.drift.features[n].ignore)]
    groups: dict[DriftSettings, list[str]] = {}
    for name in wanted:
        groups.setdefault(_settings(cfg, name), []).append(name)
    ref_f, cur_f = dict(ref.features), dict(cur.features)
    notes: dict[str, dict[str, Any]] = {}
    for name in wanted:
        ref_f[name], cur_f[name], note = _aligned(ref.features[name], cur.features[name])
        if note is not None:
            notes[name] = note
    ref2, cur2 = replace(ref, features=ref_f), replace(cur, features=cur_f)
    entries: dict[str, dict[str, Any]] = {}
    for s, group in groups.items():
        entries.update(drift_report(ref2, cur2, group, s)["features"])
    for name, note in notes.items():
        entry = entries[name]
        entry["categories"] = note
        if "new_categories" in entry:
            entry["new_categories"] = [k for k in entry["new_categories"] if k != OTHER]
    entries = {n: entries[n] for n in wanted if n in entries}
    drifted = [n for n, e in entries.items() if e["drifted"]]
    judged = [n for n, e in entries.items() if e["method"] != "insufficient_data"]
    return {"features": entries, "drifted_features": drifted,
            "feature_share": (len(drifted) / len(judged)) if judged else 0.0}


def multivariate(ref: Profile, cur: Profile, cfg: MonitoringConfig) -> dict[str, Any]:
    """``{"drifted": any method drifted, "mmd": {...}, "classifier": {...}}`` for the
    methods the settings ask for."""
    out: dict[str, Any] = {}
    if "mmd" in cfg.drift.multivariate:
        out["mmd"] = multivariate_drift(ref, cur, _settings(cfg))
    if "classifier" in cfg.drift.multivariate:
        cs = ClassifierSettings(alpha=cfg.drift.alpha, auc=cfg.drift.classifier_auc,
                                min_rows=cfg.drift.min_rows)
        out["classifier"] = classifier_drift(ref, cur, cs)
    out["drifted"] = any(v["drifted"] for v in out.values())
    return out


def _since(data: WindowData, columns: dict[str, np.ndarray], ref: Profile, name: str,
           s: DriftSettings, kind: str) -> float | None:
    """Start of the earliest time slice from which every later slice is beyond the
    feature's distance threshold (slices with too few rows are skipped)."""
    from ferry.monitoring.drift import feature_drift

    if not data.rows:
        return None
    edges = np.linspace(data.ts.min(), data.ts.max() + 1e-9, _SLICES + 1)
    slot = np.clip(np.searchsorted(edges, data.ts, side="right") - 1, 0, _SLICES - 1)
    rng = np.random.default_rng(0)
    loose = replace(s, alpha=1.0, min_rows=max(10, s.min_rows // 5), exact_ks=False,
                    p_values=False)  # slices are judged by distance only
    since = None
    for i in range(_SLICES):
        mask = slot == i
        if not mask.any():
            continue
        part = build_profile({name: columns[name][mask]}, {name: kind}, 2000, joint_size=0,
                             sketches=False)
        base = ref.features[name]
        if len(base.sample) > 5000:  # a slice only needs a coarse answer
            base = replace(base, sample=rng.choice(base.sample, 5000, replace=False))
        base, window, _ = _aligned(base, part.features[name])
        entry = feature_drift(base, window, loose)
        if entry["method"] == "insufficient_data":
            continue
        if entry["drifted"]:
            since = since if since is not None else float(edges[i])
        else:
            since = None
    return since


def _histogram(ref: Profile, cur: Profile, name: str) -> dict[str, Any]:
    r, c = ref.features[name], cur.features[name]
    if r.kind == "numeric":
        both = np.concatenate([np.asarray(r.sample, float), np.asarray(c.sample, float)])
        if not len(both):
            return {}
        lo, hi = np.quantile(both, [0.005, 0.995])
        edges = np.linspace(lo, hi if hi > lo else lo + 1, 31)
        rh, _ = np.histogram(r.sample, edges)
        ch, _ = np.histogram(c.sample, edges)
        return {"kind": "numeric", "edges": edges.tolist(),
                "reference": (rh / max(1, rh.sum())).tolist(),
                "window": (ch / max(1, ch.sum())).tolist()}
    r, c, _ = _aligned(r, c)
    keys = sorted(r.categories.keys() | c.categories.keys(),
                  key=lambda k: -(r.categories.get(k, 0) + c.categories.get(k, 0)))[:20]
    rt, ct = max(1, sum(r.categories.values())), max(1, sum(c.categories.values()))
    return {"kind": "categorical", "categories": keys,
            "reference": [r.categories.get(k, 0) / rt for k in keys],
            "window": [c.categories.get(k, 0) / ct for k in keys]}


def _config_warnings(cfg: MonitoringConfig, layout: FeatureLayout) -> list[str]:
    known = {f.name for f in layout.features}
    return [f"the monitoring settings name feature {name!r}, which this version does not "
            f"have (its features: {sorted(known)})"
            for name in sorted(cfg.feature_names() - known)]


@one_blas_thread()  # see monitoring/blas.py: 0.80 s -> 0.34 s for 100k x 20 on a busy box
def build_report(engine: Engine, model: str, window_s: float, version: int | None = None,
                 end: float | None = None, plots: bool = False) -> dict[str, Any]:
    """The report (see the module docstring). ``NotFound`` for a model the store never saw."""
    end = time.time() if end is None else end
    start = end - window_s
    layouts = load_layouts(engine, model)
    if version is None:
        seen = versions_in(engine, model, start, end)
        version = seen[-1] if seen else latest_version(engine, model)
    if version is None or version not in layouts:
        raise NotFound(f"the evaluation store knows no model {model!r}"
                       + (f" version {version}" if version is not None else "")
                       + f"; it has layouts for versions {sorted(layouts)}")
    doc = layouts[version]
    layout = FeatureLayout.from_json(doc)
    cfg = MonitoringConfig.model_validate(doc.get("monitoring") or {})
    data = read_window(engine, model, start, end, version)
    columns = layout.columns(data.inputs, data.outputs)
    kinds = {f.name: f.kind for f in layout.features if f.name in columns}
    lat = data.latency_ms
    report: dict[str, Any] = {
        "model": model, "version": version,
        "window": {"start": start, "end": end, "seconds": window_s, "rows": data.rows,
                   "requests": data.requests},
        "traffic": {"requests": len(lat), "errors": data.errors, "latency": {
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None}},
    }
    warnings = _config_warnings(cfg, layout)
    if warnings:
        report["config_warnings"] = warnings
    ref_row = load_reference(engine, model, version)
    inputs = [f.name for f in layout.inputs]
    outputs = [f.name for f in layout.outputs]
    empty_drift = {"features": {}, "drifted_features": [], "feature_share": 0.0,
                   "multivariate": None, "prediction": None}
    if data.rows == 0:
        report["note"] = "no rows in this window"
        report["drift"] = {**empty_drift, "reference": ref_row[1] if ref_row else None}
        report["quality"] = {"rows": 0, "features": {}, "violations": [],
                             "violated_features": []}
        report["performance"] = {"labelled_rows": 0, "versions": {}}
        return report
    current = build_profile(columns, kinds)
    if ref_row is None:
        report["drift"] = {**empty_drift, "reference": None,
                           "note": "no reference profile: add reference.parquet (or .csv) to "
                                   "the version folder or run `ferry reference`"}
        # the rules that need no reference: null rate, declared ranges and categories
        empty = {f.name: FeatureProfile(f.name, f.kind) for f in layout.inputs}
        report["quality"] = {**quality_report(empty, columns, data.request_ids, data.rows,
                                              cfg.quality),
                             "note": "no reference profile: only the null-rate rule and "
                                     "the ranges and categories of model.yaml apply"}
    else:
        ref, source = ref_row
        drift = feature_drift_report(ref, current, inputs, cfg)
        drift["reference"] = source
        drift["since"] = {n: _since(data, columns, ref, n, _settings(cfg, n), kinds[n])
                          for n in drift["drifted_features"]}
        drift["multivariate"] = multivariate(ref, current, cfg)
        pred_ref = [n for n in outputs if n in ref.features]
        if pred_ref:
            drift["prediction"] = {"baseline": "reference",
                                   **feature_drift_report(ref, current, pred_ref, cfg)}
        else:
            drift["prediction"] = _previous_window_drift(engine, model, version, start,
                                                         window_s, layout, current, outputs,
                                                         cfg)
        report["drift"] = drift
        report["quality"] = quality_report({n: ref.features[n] for n in inputs
                                            if n in ref.features}, columns,
                                           data.request_ids, data.rows, cfg.quality)
        if plots:
            report["plots"] = {n: _histogram(ref, current, n) for n in
                               drift["drifted_features"] + [
                                   n for n in drift["prediction"].get("drifted_features", [])
                                   if n in ref.features]}
    perf = performance(layout.outputs, columns, data.labels, data.rewards)
    perf["versions"] = {str(version): dict(perf)} if perf["labelled_rows"] else {}
    perf["versions"].update(_other_versions_performance(engine, model, version, start, end,
                                                        layouts))
    perf["versions"] = dict(sorted(perf["versions"].items(), key=lambda kv: int(kv[0])))
    report["performance"] = perf
    return report


def _labelled_versions(engine: Engine, model: str, start: float, end: float) -> list[int]:
    """Versions whose predictions in (batches overlapping) the window have feedback."""
    b, i, f = prediction_batches.c, prediction_index.c, feedback.c
    query = (select(b.version, func.count())
             .select_from(feedback.join(prediction_index, i.request_id == f.request_id)
                          .join(prediction_batches, b.id == i.batch_id))
             .where(b.model == model, b.ts_max >= start, b.ts_min < end)
             .group_by(b.version))
    with engine.connect() as conn:
        return sorted(int(v) for v, n in conn.execute(query) if n)


def _other_versions_performance(engine: Engine, model: str, version: int, start: float,
                                end: float, layouts: dict[int, dict[str, Any]]
                                ) -> dict[str, dict[str, Any]]:
    """The performance block of every other version with feedback in the window."""
    out = {}
    for v in _labelled_versions(engine, model, start, end):
        if v == version or v not in layouts:
            continue
        layout = FeatureLayout.from_json(layouts[v])
        data = read_window(engine, model, start, end, v)
        cols = layout.columns(data.inputs, data.outputs, roles=("output",))
        block = performance(layout.outputs, cols, data.labels, data.rewards)
        if block["labelled_rows"]:
            out[str(v)] = block
    return out


def _previous_window_drift(engine: Engine, model: str, version: int, start: float,
                           window_s: float, layout: FeatureLayout, current: Profile,
                           outputs: list[str], cfg: MonitoringConfig) -> dict[str, Any]:
    prev = read_window(engine, model, start - window_s, start, version, with_feedback=False)
    if not prev.rows:
        return {"baseline": "previous_window", "features": {}, "drifted_features": [],
                "note": "the reference has no prediction columns and the previous window "
                        "is empty"}
    cols = layout.columns(prev.inputs, prev.outputs, roles=("output",))
    base = build_profile(cols, {f.name: f.kind for f in layout.outputs if f.name in cols})
    return {"baseline": "previous_window",
            **feature_drift_report(base, current, outputs, cfg)}


def publish(metrics: Metrics, report: dict[str, Any]) -> None:
    """Set the drift and quality gauges from a report."""
    model, version = report["model"], str(report["version"])
    drift = report.get("drift") or {}
    for name, entry in (drift.get("features") or {}).items():
        if entry.get("distance") is not None:
            metrics.drift_distance.labels(model, version, name).set(entry["distance"])
        metrics.drift_drifted.labels(model, version, name).set(1 if entry["drifted"] else 0)
    metrics.drift_share.labels(model, version).set(drift.get("feature_share") or 0.0)
    counts: dict[str, int] = {}
    for rules in (report.get("quality") or {}).get("features", {}).values():
        for r in rules:
            if r["violated"]:
                counts[r["rule"]] = counts.get(r["rule"], 0) + r["rows"]
    for rule in ("null_rate", "range", "categories"):
        metrics.quality_violations.labels(model, version, rule).set(counts.get(rule, 0))
