"""Render a monitoring report as a terminal table or a self-contained HTML page (inline
SVG plots of each drifted feature's reference vs window distribution; no scripts, no
external files)."""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import Any


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render_table(report: dict[str, Any]) -> str:
    w = report["window"]
    lines = [f"{report['model']} v{report['version']}  window {_when(w['start'])} .. "
             f"{_when(w['end'])}  rows {w['rows']}  requests {w['requests']}"]
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    t = report.get("traffic") or {}
    lat = t.get("latency") or {}
    lines.append(f"traffic: {t.get('requests', 0)} requests, {t.get('errors', 0)} errors, "
                 f"p50 {_fmt(lat.get('p50_ms'))} ms, p99 {_fmt(lat.get('p99_ms'))} ms")
    drift = report.get("drift") or {}
    if drift.get("note"):
        lines.append(f"drift: {drift['note']}")
    feats = drift.get("features") or {}
    if feats:
        width = max(len(n) for n in [*feats, "feature"]) + 2
        lines.append("")
        lines.append(f"{'feature':{width}}{'method':22}{'statistic':>11}{'p_value':>11}"
                     f"{'distance':>10}  drifted")
        for name, e in feats.items():
            lines.append(f"{name:{width}}{e['method']:22}{_fmt(e.get('statistic')):>11}"
                         f"{_fmt(e.get('p_value')):>11}{_fmt(e.get('distance')):>10}  "
                         f"{'YES' if e['drifted'] else 'no'}")
        lines.append(f"drifted: {', '.join(drift.get('drifted_features') or []) or 'none'}"
                     f" (share {_fmt(drift.get('feature_share'))})")
        for method, mv in (drift.get("multivariate") or {}).items():
            if not isinstance(mv, dict):
                continue
            name = "AUC" if method == "classifier" else "statistic"
            line = (f"multivariate {method}: {name} {_fmt(mv.get('statistic'))}, "
                    f"p {_fmt(mv.get('p_value'))}, drifted {'YES' if mv.get('drifted') else 'no'}")
            if mv.get("top_terms"):
                line += f" (mostly {', '.join(list(mv['top_terms'])[:3])})"
            if mv.get("note"):
                line += f" ({mv['note']})"
            lines.append(line)
        pred = drift.get("prediction") or {}
        if pred:
            lines.append(f"predictions vs {pred.get('baseline')}: drifted "
                         f"{', '.join(pred.get('drifted_features') or []) or 'none'}")
    quality = report.get("quality") or {}
    violations = quality.get("violations") or []
    lines.append("")
    lines.append(f"quality: {len(violations)} violation(s)")
    for v in violations:
        lines.append(f"  {v['feature'] or '(window)'}: {v['rule']} rows={v['rows']} "
                     f"rate={_fmt(v['rate'])}")
    perf = report.get("performance") or {}
    lines.append("")
    versions = perf.get("versions") or {}
    if perf.get("labelled_rows") or versions:
        lines.append("performance:")
        for version, block in (versions or {str(report["version"]): perf}).items():
            keys = [k for k in _PERF_KEYS if block.get(k) is not None]
            lines.append(f"  v{version} ({block['labelled_rows']} labelled rows): "
                         + ", ".join(f"{k} {_fmt(block[k])}" for k in keys))
    else:
        lines.append("performance: no feedback in this window")
    for warning in report.get("config_warnings") or []:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


_PERF_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "mae", "rmse")


def _svg(plot: dict[str, Any]) -> str:
    ref, cur = plot.get("reference") or [], plot.get("window") or []
    if not ref:
        return ""
    width, height, pad = 520, 180, 24
    n = len(ref)
    top = max(max(ref), max(cur or [0])) or 1.0
    bar = (width - 2 * pad) / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
    for i, (r, c) in enumerate(zip(ref, cur, strict=False)):
        x = pad + i * bar
        for value, color, off in ((r, "#4c78a8", 0.0), (c, "#e45756", bar / 2)):
            h = (height - 2 * pad) * value / top
            parts.append(f'<rect x="{x + off:.1f}" y="{height - pad - h:.1f}" '
                         f'width="{bar / 2 - 1:.1f}" height="{h:.1f}" fill="{color}"/>')
    if plot.get("kind") == "numeric":
        edges = plot["edges"]
        parts.append(f'<text x="{pad}" y="{height - 6}" font-size="10">{edges[0]:.3g}</text>')
        parts.append(f'<text x="{width - pad - 40}" y="{height - 6}" font-size="10">'
                     f'{edges[-1]:.3g}</text>')
    else:
        for i, k in enumerate(plot.get("categories") or []):
            parts.append(f'<text x="{pad + i * bar:.1f}" y="{height - 6}" font-size="9">'
                         f'{html.escape(str(k))[:8]}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict[str, Any]) -> str:
    title = f"Ferry monitor: {report['model']} v{report['version']}"
    plots = report.get("plots") or {}
    figures = "".join(
        f"<figure><figcaption>{html.escape(name)}: reference "
        f"<span style='color:#4c78a8'>■</span> vs window "
        f"<span style='color:#e45756'>■</span></figcaption>{_svg(plot)}</figure>"
        for name, plot in plots.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f6f6f6;"
            f"padding:1em}}figure{{display:inline-block;margin:1em}}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><pre>{html.escape(render_table(report))}</pre>"
            f"<h2>Drifted features</h2>{figures or '<p>none</p>'}"
            f"<details><summary>Report JSON</summary><pre>"
            f"{html.escape(json.dumps(report, indent=2, default=str))}</pre></details>"
            f"</body></html>")
