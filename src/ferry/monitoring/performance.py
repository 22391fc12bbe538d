"""Model performance from joined feedback (pure): classifiers get accuracy, precision,
recall, F1 (binary: of class 1; multiclass: macro), ROC AUC (binary, or one-vs-rest macro)
and log loss when class probabilities are an output; regressors get MAE and RMSE. Rewards
are summarized on their own. Every block carries ``labelled_rows``.

Which output is the prediction: the first integer or categorical output feature is a
predicted class (classifier); a ``[-1, k]`` float output whose rows sum to 1 gives the class
probabilities; otherwise the first float output is a regression prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ferry.evalstore.features import Feature


def _auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification(y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None
                   ) -> dict[str, Any]:
    classes = np.unique(np.concatenate([y, pred]))
    out: dict[str, Any] = {"task": "classification", "labelled_rows": len(y),
                           "accuracy": float((y == pred).mean())}
    per = []
    for c in classes:
        tp = float(((pred == c) & (y == c)).sum())
        fp = float(((pred == c) & (y != c)).sum())
        fn = float(((pred != c) & (y == c)).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        per.append((c, p, r, 2 * p * r / (p + r) if p + r else 0.0))
    binary = len(classes) == 2 and set(classes.tolist()) <= {0, 1}
    chosen = [t for t in per if t[0] == 1] if binary else per
    out["average"] = "binary" if binary else "macro"
    out["precision"] = float(np.mean([t[1] for t in chosen]))
    out["recall"] = float(np.mean([t[2] for t in chosen]))
    out["f1"] = float(np.mean([t[3] for t in chosen]))
    if proba is not None and y.dtype.kind in "iuf" and proba.ndim == 2:
        k = proba.shape[1]
        yi = y.astype(np.int64)
        if ((yi >= 0) & (yi < k)).all():
            p = np.clip(proba[np.arange(len(yi)), yi], 1e-15, 1)
            out["log_loss"] = float(-np.log(p).mean())
            if k == 2:
                out["roc_auc"] = _auc(proba[:, 1], yi == 1)
            else:
                aucs = [a for c in range(k) if (a := _auc(proba[:, c], yi == c)) is not None]
                out["roc_auc"] = float(np.mean(aucs)) if aucs else None
    return out


def regression(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    err = pred.astype(np.float64) - y.astype(np.float64)
    return {"task": "regression", "labelled_rows": len(y), "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err ** 2).mean()))}


def performance(outputs: list[Feature], columns: dict[str, np.ndarray],
                labels: np.ndarray | None, rewards: np.ndarray | None) -> dict[str, Any]:
    """The performance block of a window (``{"labelled_rows": 0}`` without feedback)."""
    out: dict[str, Any] = {"labelled_rows": 0}
    if rewards is not None and (~np.isnan(rewards)).any():
        r = rewards[~np.isnan(rewards)]
        out["reward"] = {"rows": len(r), "mean": float(r.mean()), "sum": float(r.sum())}
    if labels is None:
        return out
    mask = np.array([v is not None for v in labels], dtype=bool)
    if not mask.any():
        return out
    raw = labels[mask]
    kind_class = next((f for f in outputs if f.kind == "categorical" or (
        f.name in columns and columns[f.name].dtype.kind in "iub")), None)
    proba = None
    groups: dict[str, list[Feature]] = {}
    for f in outputs:
        if f.column is not None:
            groups.setdefault(f.tensor, []).append(f)
    for feats in groups.values():
        cols = [columns[f.name] for f in feats if f.name in columns]
        if len(cols) == len(feats) and cols and cols[0].dtype.kind == "f":
            m = np.column_stack(cols)
            if np.allclose(m.sum(axis=1), 1.0, atol=1e-3):
                proba = m[mask]
                break
    if kind_class is not None and kind_class.name in columns:
        pred = columns[kind_class.name][mask]
        try:
            y = np.array(raw.tolist(), dtype=pred.dtype) if pred.dtype.kind in "iub" \
                else np.array([str(v) for v in raw], dtype=object)
        except (TypeError, ValueError):
            y = np.array([str(v) for v in raw], dtype=object)
            pred = np.array([str(v) for v in pred], dtype=object)
        out.update(classification(y, pred, proba))
        out["prediction"] = kind_class.name
    else:
        target = next((f for f in outputs if f.name in columns), None)
        if target is None:
            return out
        try:
            y = np.array(raw.tolist(), dtype=np.float64)
        except (TypeError, ValueError):
            return out
        out.update(regression(y, columns[target.name][mask]))
        out["prediction"] = target.name
    return out
