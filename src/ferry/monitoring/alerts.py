"""Alerts: rules over the monitoring report, evaluated on a schedule inside the server.

A rule is ``METRIC OP NUMBER`` (``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``) where METRIC is a
dotted path into the report with these shortcuts:

- ``drift.feature_share``, ``drift.distance.<feature>``, ``drift.drifted.<feature>`` (0/1),
  ``drift.multivariate.drifted`` (0/1), ``drift.multivariate.mmd.p_value``,
  ``drift.multivariate.classifier.auc``
- ``quality.null_rate.<feature>``, ``quality.violations`` (how many rules broke)
- ``perf.<metric>`` (``perf.accuracy``, ``perf.f1``, ``perf.rmse``, ...)
- ``latency.p50_ms``, ``latency.p99_ms``, ``traffic.errors``, ``window.rows``

``evaluate`` is pure: a rule whose metric is absent (no feedback yet, empty window) does not
fire. ``AlertState`` deduplicates: an alert is reported once when it starts firing and once
when it resolves. ``AlertLoop`` runs them every ``interval_s``: a firing alert is logged,
exported as ``ferry_alert_firing{alert, model}``, and POSTed with its evidence to the
model's ``webhook`` when one is configured.
"""

from __future__ import annotations

import asyncio
import json
import logging
import operator
import re
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from ferry.errors import FerryError, InvalidInput
from ferry.monitoring.metrics import Metrics

log = logging.getLogger("ferry.alerts")

_RULE = re.compile(r"^\s*([A-Za-z_][\w.\[\]-]*)\s*(>=|<=|==|!=|>|<)\s*(-?[\d.]+(?:e-?\d+)?)\s*$")
_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
        "==": operator.eq, "!=": operator.ne}


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    threshold: float


def parse_rule(text: str) -> Condition:
    m = _RULE.match(text)
    if not m:
        raise InvalidInput(f"alert rule {text!r} is not 'METRIC OP NUMBER', e.g. "
                           f"'drift.feature_share > 0.3' or 'perf.accuracy < 0.8'")
    return Condition(m.group(1), m.group(2), float(m.group(3)))


def metric_value(report: dict[str, Any], metric: str) -> float | None:
    """The number a metric path names in a report, or None when absent."""
    head, _, rest = metric.partition(".")
    drift = report.get("drift") or {}
    quality = report.get("quality") or {}
    if head == "drift" and rest.startswith("distance."):
        value = (drift.get("features") or {}).get(rest[9:], {}).get("distance")
    elif head == "drift" and rest.startswith("drifted."):
        entry = (drift.get("features") or {}).get(rest[8:])
        value = None if entry is None else float(entry["drifted"])
    elif head == "quality" and rest.startswith("null_rate."):
        value = (quality.get("null_rate") or {}).get(rest[10:])
    elif head == "quality" and rest == "violations":
        value = len(quality.get("violations") or [])
    elif head == "perf":
        value = (report.get("performance") or {}).get(rest)
    elif head == "latency":
        value = (report.get("traffic") or {}).get("latency", {}).get(rest)
    else:
        node: Any = report
        for part in metric.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        value = node
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, int | float) else None


def evaluate(condition: Condition, report: dict[str, Any]) -> tuple[bool, float | None]:
    value = metric_value(report, condition.metric)
    if value is None or value != value:
        return False, value
    return bool(_OPS[condition.op](value, condition.threshold)), value


@dataclass
class AlertState:
    """Which alerts fire now; ``update`` returns the transitions to report."""

    firing: dict[str, dict[str, Any]] = field(default_factory=dict)

    def update(self, key: str, fires: bool, evidence: dict[str, Any]) -> str | None:
        if fires and key not in self.firing:
            self.firing[key] = evidence
            return "firing"
        if not fires and key in self.firing:
            del self.firing[key]
            return "resolved"
        if fires:
            self.firing[key] = evidence
        return None


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


class AlertLoop:
    """Evaluates every model's alert rules every ``interval_s`` (a task on the loop; the
    reports are built on the thread pool)."""

    def __init__(self, store: Any, metrics: Metrics, interval_s: float) -> None:
        self.store = store
        self.metrics = metrics
        self.interval_s = interval_s
        self.state = AlertState()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.run_once)
            except Exception:
                log.exception("alert evaluation failed")

    def _rules(self) -> dict[str, tuple[int, dict[str, Any]]]:
        latest: dict[str, tuple[int, dict[str, Any]]] = {}
        for (model, version), doc in list(self.store._layouts.items()):
            if version >= latest.get(model, (-1, {}))[0]:
                latest[model] = (version, doc.get("monitoring") or {})
        return latest

    def run_once(self, now: float | None = None) -> list[dict[str, Any]]:
        """Evaluate every rule once; returns the transitions (fired / resolved)."""
        from ferry.evalstore.windows import parse_duration
        from ferry.monitoring.report import build_report

        events = []
        try:
            engine = self.store.engine()
        except FerryError:
            return events
        for model, (_, cfg) in self._rules().items():
            reports: dict[str, dict[str, Any]] = {}
            for rule in cfg.get("alerts") or []:
                key = f"{model}:{rule['name']}"
                try:
                    cond = parse_rule(rule["when"])
                    window = rule.get("window", "1h")
                    if window not in reports:
                        reports[window] = build_report(engine, model, parse_duration(window),
                                                       end=now)
                    fires, value = evaluate(cond, reports[window])
                except FerryError as exc:
                    log.error("alert %s: %s", key, exc.message)
                    continue
                report = reports[window]
                evidence = {"alert": rule["name"], "model": model,
                            "version": report.get("version"), "rule": rule["when"],
                            "value": value, "window": report.get("window"),
                            "drifted_features": (report.get("drift") or {}).get(
                                "drifted_features", []),
                            "at": time.time()}
                change = self.state.update(key, fires, evidence)
                self.metrics.alerts_firing.labels(rule["name"], model).set(1 if fires else 0)
                if change is None:
                    continue
                event = {"status": change, **evidence}
                events.append(event)
                (log.warning if change == "firing" else log.info)(
                    "alert %s %s: %s (value %s)", key, change, rule["when"], value)
                if cfg.get("webhook"):
                    try:
                        _post(cfg["webhook"], event)
                    except Exception as exc:
                        log.error("alert %s: webhook %s failed: %s", key, cfg["webhook"], exc)
        return events
