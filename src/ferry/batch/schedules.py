"""Cron schedules for batch runs: pure deciders (when is a fire due, is a schedule stale)
and ``Scheduler``, the loop that applies them.

No double runs: before starting a fire, a scheduler claims it with a compare-and-set on the
schedule's row (``RunStore.claim_fire``: ``last_fire`` moves forward only). A restarted
scheduler, or a second one on the same store, sees the fire already claimed. Fires missed
while no scheduler ran are caught up once (the latest one), not once per missed period.

Staleness: a schedule is STALE when its last success started longer ago than one period plus
its grace (or it has never succeeded that long after it was created), or its last run
failed. The scheduler logs an alert when a schedule turns stale and exports
``ferry_batch_schedule_stale{schedule}`` (1 = stale): on ``--metrics-port`` for
``ferry scheduler``, on the server's own ``/metrics`` when ``ferry serve`` runs the loop
(``SchedulerThread``).

Where the loop runs: ``Scheduler.run_forever`` in the ``ferry scheduler`` process, or
``SchedulerThread`` (a daemon thread of ``ferry serve``). Both call the same ``tick``; a
failing pass (the store unreachable) is logged and retried on the next one.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from croniter import croniter

from ferry.batch.job import BatchError, redact_url
from ferry.batch.records import RunRecord, RunStore, new_run_id, now

log = logging.getLogger("ferry.batch.scheduler")


def check_cron(expr: str) -> str:
    if not croniter.is_valid(expr):
        raise BatchError(f"--cron {expr!r} is not a cron expression; use five fields "
                         f"'minute hour day-of-month month day-of-week', e.g. '0 2 * * *'")
    return expr


def period(expr: str, at: datetime) -> timedelta:
    """The time between the two fires around ``at``."""
    nxt: datetime = croniter(expr, at).get_next(datetime)
    after: datetime = croniter(expr, nxt).get_next(datetime)
    return after - nxt


def next_fire(expr: str, at: datetime) -> datetime:
    return croniter(expr, at).get_next(datetime)  # type: ignore[no-any-return]


def due_fire(expr: str, created_at: datetime, last_fire: datetime | None,
             at: datetime) -> datetime | None:
    """The fire to start now, if any: the latest fire time <= ``at`` that is later than
    both the last claimed fire and the schedule's creation."""
    latest: datetime = croniter(expr, at + timedelta(microseconds=1)).get_prev(datetime)
    floor = max(created_at, last_fire) if last_fire else created_at
    return latest if latest > floor else None


@dataclass(frozen=True)
class Staleness:
    stale: bool
    reason: str


def staleness(expr: str, grace_s: float, created_at: datetime, last_run: RunRecord | None,
              last_success: RunRecord | None, at: datetime) -> Staleness:
    """Pure: whether the schedule's stored predictions should be considered stale."""
    allowed = period(expr, at) + timedelta(seconds=grace_s)
    if last_run is not None and last_run.status == "failed":
        return Staleness(True, f"last run {last_run.run_id} failed: {last_run.error}")
    if last_success is None:
        if at - created_at > allowed:
            return Staleness(True, f"no successful run since the schedule was created "
                                   f"{_ago(at - created_at)}")
        return Staleness(False, "no run yet")
    age = at - last_success.started_at
    if age > allowed:
        return Staleness(True, f"last success {_ago(age)}, over one period plus grace "
                               f"({_ago(allowed)})")
    return Staleness(False, f"last success {_ago(age)}")


def _ago(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def schedule_rows(store: RunStore, at: datetime | None = None) -> list[dict[str, Any]]:
    """Every schedule with its last run, next run and staleness (for ``schedule list``)."""
    at = at or now()
    rows = []
    for s in store.list_schedules():
        recent = store.list_runs(1, schedule=s["name"])
        last = recent[0] if recent else None
        success = store.last_success(s["name"])
        state = staleness(s["cron"], s["grace_s"], s["created_at"], last, success, at)
        rows.append({**s, "last_run": last, "last_success": success,
                     "next_run": next_fire(s["cron"], at), "stale": state.stale,
                     "stale_reason": state.reason})
    return rows


def stale_gauge(registry: Any) -> Any:
    """``ferry_batch_schedule_stale{schedule}`` in a Prometheus ``registry``."""
    from prometheus_client import Gauge

    return Gauge("ferry_batch_schedule_stale", "1 when a batch schedule is STALE (its last "
                 "success is older than one period plus grace, or its last run failed)",
                 ["schedule"], registry=registry)


class Scheduler:
    """Starts due fires as ``python -m ferry <argv> --run-id ID --schedule NAME`` processes.

    Staleness goes to ``gauge`` (see ``stale_gauge``) when given, else to a registry served
    on ``metrics_port`` when given. Use from one thread at a time."""

    def __init__(self, store: RunStore, poll_s: float = 15.0, metrics_port: int | None = None,
                 python: str = sys.executable, gauge: Any = None) -> None:
        self.store, self.poll_s, self.python = store, poll_s, python
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._stale: dict[str, bool] = {}
        self._gauge: Any = gauge
        if gauge is None and metrics_port is not None:
            from prometheus_client import CollectorRegistry, start_http_server

            registry = CollectorRegistry()
            self._gauge = stale_gauge(registry)
            start_http_server(metrics_port, registry=registry)

    def tick(self, at: datetime | None = None) -> list[str]:
        """One pass: reap finished children, start due fires, refresh staleness.
        Returns the run ids started."""
        at = at or now()
        for name, child in list(self.children.items()):
            if child.poll() is not None:
                log.info("schedule %s: run finished with exit code %s", name, child.returncode)
                del self.children[name]
        started = []
        for s in self.store.list_schedules():
            name = s["name"]
            fire = due_fire(s["cron"], s["created_at"], s["last_fire"], at)
            if fire is not None and name not in self.children:
                run_id = new_run_id()
                if self.store.claim_fire(name, fire, run_id):
                    argv = [*s["argv"], "--run-id", run_id, "--schedule", name,
                            "--store", self.store.url, "--quiet"]
                    log.info("schedule %s: starting run %s for the %s fire", name, run_id,
                             fire.isoformat())
                    self.children[name] = subprocess.Popen(
                        [self.python, "-m", "ferry", *argv], env=os.environ.copy())
                    started.append(run_id)
        names = set()
        for row in schedule_rows(self.store, at):
            name, stale = row["name"], row["stale"]
            names.add(name)
            if stale and not self._stale.get(name):
                log.warning("ALERT schedule %s is STALE: %s", name, row["stale_reason"])
            self._stale[name] = stale
            if self._gauge is not None:
                self._gauge.labels(name).set(1 if stale else 0)
        for gone in set(self._stale) - names:  # removed schedules stop being exported
            del self._stale[gone]
            if self._gauge is not None:
                self._gauge.remove(gone)
        return started

    def wait(self) -> None:
        for child in self.children.values():
            child.wait()
        self.children.clear()

    def run_forever(self, stop: threading.Event | None = None) -> None:
        """Tick every ``poll_s`` until ``stop`` is set; a failing tick is logged, not fatal."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the store may be back on the next pass
                log.exception("scheduler pass failed; retrying in %.0f s", self.poll_s)
            stop.wait(self.poll_s)

    def running(self) -> dict[str, int]:
        """Schedule name -> pid of its run still going."""
        return {n: c.pid for n, c in self.children.items() if c.poll() is None}


class SchedulerThread:
    """The scheduler loop on a daemon thread: how ``ferry serve`` runs schedules.

    ``start()`` returns at once; the thread opens the run-record store at ``store_url``
    (retrying every ``poll_s`` while it is unreachable) and ticks every ``poll_s``.
    ``stop()`` ends the loop after the pass in progress; runs it started keep going (each
    records its own outcome; a run cut short by a shutdown of the whole machine is marked
    failed or interrupted and can be resumed)."""

    def __init__(self, store_url: str, poll_s: float, registry: Any = None) -> None:
        self.store_url, self.poll_s = store_url, poll_s
        self.gauge = stale_gauge(registry) if registry is not None else None
        self.scheduler: Scheduler | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="ferry-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        store = None
        while store is None and not self._stop.is_set():
            try:
                store = RunStore(self.store_url)
            except Exception as exc:  # noqa: BLE001 - retried until it answers
                log.warning("schedules: cannot open the run-record store %s: %s; retrying in "
                            "%.0f s", redact_url(self.store_url), exc, self.poll_s)
                self._stop.wait(self.poll_s)
        if store is None:
            return
        log.info("schedules: running the schedules of %s every %.0f s",
                 redact_url(self.store_url), self.poll_s)
        self.scheduler = Scheduler(store, self.poll_s, gauge=self.gauge)
        try:
            self.scheduler.run_forever(self._stop)
        finally:
            for name, pid in self.scheduler.running().items():
                log.info("schedule %s: run (pid %d) keeps going after the scheduler stops",
                         name, pid)
            store.close()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

