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
fire. ``AlertLoop`` runs them every ``interval_s`` on every replica:

- each pass publishes, per model with rules or a reference profile, the drift and quality
  gauges of its report over ``GAUGE_WINDOW`` (``monitoring.report.publish``), and exports
  ``ferry_alert_firing{alert, model}`` (1 while the rule holds in this replica's report);
- an alert's status lives in the store (``alert_states``): the replica that claims a change
  (``monitoring.firing.decide``, applied by ``evalstore.alertstates.claim``) logs it and
  POSTs it with its evidence to the model's ``webhook``, once for all replicas; a failed
  POST is sent again on a later pass.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import os
import re
import socket
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import orjson

from ferry.errors import FerryError, InvalidInput
from ferry.evalstore import alertstates
from ferry.monitoring.firing import Action, decide, firing_after, tick_of
from ferry.monitoring.metrics import Metrics

log = logging.getLogger("ferry.alerts")

GAUGE_WINDOW = "1h"
"""The window of the report each pass publishes as the drift and quality gauges (the monitor
endpoint's default window)."""

LEASE_S = 30.0
"""How long a replica may take to send one notification (the webhook's timeout is 10 s)
before another replica may send it again."""

WEBHOOK_TIMEOUT_S = 10.0

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


def _post(url: str, body: dict[str, Any]) -> None:
    data = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)  # values may be numpy's
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S):
        pass


class AlertLoop:
    """Evaluates every model's alert rules every ``interval_s`` (a task on the loop; the
    reports are built on the thread pool)."""

    def __init__(self, store: Any, metrics: Metrics, interval_s: float) -> None:
        self.store = store
        self.metrics = metrics
        self.interval_s = interval_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        """Who holds a lease, as written in ``alert_states.lease_owner``."""
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

    def _referenced(self, engine: Any) -> set[str]:
        """Models with a reference profile in the store."""
        from sqlalchemy import select

        from ferry.evalstore.schema import references

        with engine.connect() as conn:
            return set(conn.execute(select(references.c.model).distinct()).scalars())

    def run_once(self, now: float | None = None) -> list[dict[str, Any]]:
        """One pass: publish each watched model's gauges, evaluate every rule, and send the
        notifications this replica claims. Returns those notifications."""
        now = time.time() if now is None else now
        events: list[dict[str, Any]] = []
        try:
            engine = self.store.engine()
        except FerryError:
            return events
        referenced = self._referenced(engine)
        for model, (_, cfg) in self._rules().items():
            if cfg.get("alerts") or model in referenced:
                events.extend(self._model_pass(engine, model, cfg, now))
        return events

    def _model_pass(self, engine: Any, model: str, cfg: dict[str, Any], now: float
                    ) -> list[dict[str, Any]]:
        from ferry.evalstore.windows import parse_duration
        from ferry.monitoring.report import build_report, publish

        reports: dict[str, dict[str, Any]] = {}

        def report(window: str) -> dict[str, Any]:
            if window not in reports:
                reports[window] = build_report(engine, model, parse_duration(window), end=now)
            return reports[window]

        try:
            publish(self.metrics, report(GAUGE_WINDOW))
        except FerryError as exc:
            log.error("model %s: the monitoring report for its gauges failed: %s", model,
                      exc.message)
        events = []
        for rule in cfg.get("alerts") or []:
            key = f"{model}:{rule['name']}"
            try:
                cond = parse_rule(rule["when"])
                window_report = report(rule.get("window", "1h"))
                fires, value = evaluate(cond, window_report)
            except FerryError as exc:
                log.error("alert %s: %s", key, exc.message)
                continue
            self.metrics.alerts_firing.labels(rule["name"], model).set(1 if fires else 0)
            evidence = {"alert": rule["name"], "model": model,
                        "version": window_report.get("version"), "rule": rule["when"],
                        "value": value, "window": window_report.get("window"),
                        "drifted_features": (window_report.get("drift") or {}).get(
                            "drifted_features", []),
                        "at": now}
            event = self._apply(engine, model, rule["name"], cfg.get("webhook"), fires,
                                evidence, tick_of(now, self.interval_s))
            if event is not None:
                events.append(event)
        return events

    def _apply(self, engine: Any, model: str, name: str, webhook: str | None, fires: bool,
               evidence: dict[str, Any], tick: float) -> dict[str, Any] | None:
        """Decide on one alert against its stored state, claim the notification, send it.
        Returns the notification when this replica sent (or, without a webhook, logged) it."""
        key = f"{model}:{name}"
        row = alertstates.load(engine, model, name)
        stored = row.stored if row is not None else None
        action = decide(stored, fires, tick, time.time())
        if action is Action.NONE:
            return None
        if action is Action.RENOTIFY and row is not None:  # decide renotifies stored rows
            event, judged = row.event, row.stored.judged
        else:
            event, judged = {"status": action.value, **evidence}, tick
        seq = alertstates.claim(engine, model, name, row, firing=firing_after(action, stored),
                                judged=judged, value=evidence["value"], event=event,
                                notified=not webhook, now=time.time(), lease_s=LEASE_S,
                                owner=self.owner)
        if seq is None:  # another replica claimed it first
            return None
        if action is Action.RENOTIFY:
            log.info("alert %s: sending its %s notification again", key, event["status"])
        else:
            (log.warning if action is Action.FIRE else log.info)(
                "alert %s %s: %s (value %s)", key, event["status"], event["rule"],
                event["value"])
        if webhook:
            try:
                _post(webhook, event)
            except Exception as exc:  # noqa: BLE001 - retried by the next pass
                log.error("alert %s: webhook %s failed: %s (sent again on a later pass)",
                          key, webhook, exc)
                alertstates.failed(engine, model, name, seq)
                return None
            alertstates.delivered(engine, model, name, seq, time.time())
        return event
