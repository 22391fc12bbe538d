"""Schedules: the pure deciders, and the scheduler starting real runs through the CLI, from
``ferry scheduler``'s loop and from a real ``ferry serve`` process."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ferry.batch.records import RunRecord, RunStore
from ferry.batch.schedules import Scheduler, due_fire, period, schedule_rows, staleness
from ferry.settings import ServerSettings
from tests.batch.conftest import iris_table, write_parquet
from tests.conftest import ServerProcess
from tests.batch.test_local import env, ferry  # noqa: F401 - fixture and helper

T0 = datetime(2026, 11, 20, 1, 30, tzinfo=UTC)


def _run(status: str, started: datetime) -> RunRecord:
    return RunRecord("r", "m", 1, "i", "o", {}, "s", status, 1, 1, 0, 1, started, started,
                     started, "boom" if status == "failed" else None, None)


def test_due_fire_claims_the_latest_missed_fire_once() -> None:
    nightly = "0 2 * * *"
    assert due_fire(nightly, T0, None, T0 + timedelta(minutes=20)) is None  # not yet 02:00
    fire = due_fire(nightly, T0, None, T0 + timedelta(minutes=31))
    assert fire == datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    assert due_fire(nightly, T0, fire, T0 + timedelta(hours=5)) is None  # already claimed
    # down for three days: one catch-up run, for the latest fire only
    assert due_fire(nightly, T0, fire, T0 + timedelta(days=3, hours=1)) == datetime(
        2026, 11, 23, 2, 0, tzinfo=UTC)
    assert period(nightly, T0) == timedelta(days=1)


def test_staleness_rules() -> None:
    cron, grace = "0 2 * * *", 3600.0
    at = datetime(2026, 11, 22, 4, 0, tzinfo=UTC)
    fresh = _run("succeeded", at - timedelta(hours=2))
    assert not staleness(cron, grace, T0, fresh, fresh, at).stale
    old = _run("succeeded", at - timedelta(hours=26))
    state = staleness(cron, grace, T0, old, old, at)
    assert state.stale and "over one period plus grace" in state.reason
    failed = _run("failed", at - timedelta(hours=1))
    assert staleness(cron, grace, T0, failed, fresh, at).stale
    assert not staleness(cron, grace, at - timedelta(hours=1), None, None, at).stale
    assert staleness(cron, grace, at - timedelta(days=2), None, None, at).stale


def test_scheduler_runs_a_due_schedule_once_across_restarts(env: Path) -> None:  # noqa: F811
    write_parquet(iris_table(500), env / "in.parquet")
    ferry("schedule", "add", "hourly", "--cron", "0 * * * *", "--grace", "10m", "--", "batch",
          "iris", "--input", str(env / "in.parquet"), "--output", str(env / "out.parquet"),
          "--key", "id")
    listed = ferry("schedule", "list")
    assert "hourly" in listed.output and "never run" in listed.output
    store = RunStore()
    later = datetime.now(UTC) + timedelta(hours=1, minutes=1)
    first = Scheduler(store, poll_s=0.1)
    started = first.tick(at=later)
    assert len(started) == 1
    first.wait()
    assert Scheduler(store).tick(at=later) == []  # a restarted scheduler: already claimed
    [run] = store.list_runs(schedule="hourly")
    assert (run.run_id, run.status, run.rows_in) == (started[0], "succeeded", 500)
    assert pq.read_table(env / "out.parquet").num_rows == 500
    rows = schedule_rows(store, at=later)
    assert not rows[0]["stale"]
    assert schedule_rows(store, at=later + timedelta(hours=2))[0]["stale"]
    ferry("schedule", "remove", "hourly")
    assert ferry("schedule", "list").output.strip() == "no schedules"
    store.close()


def test_schedule_list_flags_a_failed_run_stale(env: Path) -> None:  # noqa: F811
    (env / "bad.csv").write_text("id,sepal_length,sepal_width,petal_length,petal_width\n"
                                 "a,x,1,1,1\n")
    ferry("schedule", "add", "broken", "--cron", "*/5 * * * *", "--", "batch", "iris",
          "--input", str(env / "bad.csv"), "--output", str(env / "o.parquet"),
          "--max-reject-rate", "0")
    store = RunStore()
    scheduler = Scheduler(store)
    scheduler.tick(at=datetime.now(UTC) + timedelta(minutes=6))
    scheduler.wait()
    out = ferry("schedule", "list").output
    assert "broken" in out and "STALE" in out and "last failed" in out
    assert "rejected" in out
    store.close()


def test_schedule_add_rejects_bad_cron_and_commands(env: Path) -> None:  # noqa: F811
    bad = ferry("schedule", "add", "x", "--cron", "every night", "--", "batch", "iris",
                ok=False)
    assert bad.exit_code == 2 and "not a cron expression" in bad.output
    wrong = ferry("schedule", "add", "x", "--cron", "0 2 * * *", "--", "serve", ok=False)
    assert wrong.exit_code == 2 and "batch MODEL" in wrong.output



def _backdate(store: RunStore, created: datetime) -> None:
    from ferry.batch.records import schedules

    with store.engine.begin() as c:
        c.execute(schedules.update().values(created_at=created))


def test_ferry_serve_runs_schedules_once_across_restarts(env: Path,  # noqa: F811
                                                         batch_repo: Path) -> None:
    write_parquet(iris_table(300), env / "in.parquet")
    (env / "bad.csv").write_text("id,sepal_length,sepal_width,petal_length,petal_width\n"
                                 "a,x,1,1,1\n")
    common = ("--repository", str(batch_repo))
    ferry("schedule", "add", "good", "--cron", "0 0 1 1 *", "--", "batch", "iris", "--input",
          env / "in.parquet", "--output", env / "out.parquet", "--key", "id", *common)
    ferry("schedule", "add", "bad", "--cron", "0 0 1 1 *", "--", "batch", "iris", "--input",
          env / "bad.csv", "--output", env / "bad.parquet", "--max-reject-rate", "0", *common)
    store = RunStore()
    # a yearly fire that is due now: the schedules were made just before this year's fire
    _backdate(store, datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC) - timedelta(minutes=1))

    def finished() -> dict[str, list[str]]:
        return {name: [r.status for r in store.list_runs(schedule=name)]
                for name in ("good", "bad")}

    server = ServerProcess(batch_repo, "--schedules-poll-s", "0.2")
    try:
        deadline = time.monotonic() + 60
        while finished() != {"good": ["succeeded"], "bad": ["failed"]}:
            assert time.monotonic() < deadline, finished()
            time.sleep(0.2)
        while 'ferry_batch_schedule_stale{schedule="bad"} 1.0' not in (
                metrics := server.client.get("/metrics").text):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.2)
        assert 'ferry_batch_schedule_stale{schedule="good"} 0.0' in metrics
    finally:
        server.stop()
    log = "".join(server.log)
    assert "ALERT schedule bad is STALE: last run" in log, log
    assert "ALERT schedule good" not in log
    assert pq.read_table(env / "out.parquet").num_rows == 300

    # a restarted server finds this year's fire claimed: nothing runs twice
    again = ServerProcess(batch_repo, "--schedules-poll-s", "0.2")
    try:
        time.sleep(1.5)
        assert finished() == {"good": ["succeeded"], "bad": ["failed"]}
        assert 'ferry_batch_schedule_stale{schedule="bad"} 1.0' in again.client.get(
            "/metrics").text
    finally:
        again.stop()
    store.close()


def test_which_store_the_server_runs_schedules_from(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    for name in ("FERRY_STORE", "FERRY_BATCH_STORE", "FERRY_SCHEDULES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # relative SQLite paths are made absolute against it
    assert ServerSettings().schedules_store() == f"sqlite:///{tmp_path / 'ferry.db'}"
    assert ServerSettings(store="none").schedules_store() is None
    assert ServerSettings(store="none", batch_store="sqlite:///r.db").schedules_store() == \
        f"sqlite:///{tmp_path / 'r.db'}"
    assert ServerSettings(schedules=False).schedules_store() is None
