"""Several servers on one store: real ``ferry serve`` processes on one PostgreSQL database.

- Two servers started at once on a fresh store apply each migration once (counted in
  PostgreSQL's own statement log), and neither fails to open the store.
- An alert that fires on both sends one webhook (a real HTTP receiver counts the POSTs),
  and a server that starts later, or takes over, does not send it again.
- The drift and quality gauges are on ``/metrics`` after traffic, without anyone calling
  the monitor endpoint, for a model with alert rules and for one with only a reference.
"""

from __future__ import annotations

import json
import re
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from ferry.evalstore.schema import schema_versions
from tests.conftest import ServerProcess
from tests.evalstore.conftest import DRIFTY, MANIFEST, infer_request, reference_data

INTERVAL = {"FERRY_ALERTS_INTERVAL_S": "1"}


class Webhook:
    """A real HTTP receiver on 127.0.0.1 that keeps every POSTed JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                bodies.append(json.loads(raw))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ferry"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, n: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.bodies) >= n, f"{len(self.bodies)} POSTs after {timeout} s"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def make_repo(root: Path, webhook_url: str) -> Path:
    """``drifty``: fires ``busy`` as soon as its window has rows; ``watched``: a reference
    and no alert rules. Both ship reference data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = reference_data()
    table = pa.table({k: pa.array(v.tolist()) for k, v in cols.items()})
    monitoring = textwrap.dedent(f"""\
        monitoring:
          drift: {{multivariate: []}}
          alerts:
            - {{name: busy, when: "window.rows > 0", window: 1h}}
          webhook: {webhook_url}
    """)
    for name, extra in (("drifty", monitoring), ("watched", "")):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.py").write_text(textwrap.dedent(DRIFTY))
        (root / name / "model.yaml").write_text(MANIFEST + extra)
        pq.write_table(table, root / name / "1" / "reference.parquet")
    return root


def send(server: ServerProcess, model: str, rows: int = 60, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    body, headers = infer_request(rng.normal(0.8, 1, size=(rows, 5)).astype(np.float32),
                                  ["red"] * rows)
    r = server.client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text


def gauge_models(server: ServerProcess, metric: str) -> set[str]:
    """The models a gauge has series for on the server's ``/metrics``."""
    page = server.client.get("/metrics").text
    return set(re.findall(rf'^{metric}\{{[^}}]*model="([^"]+)"', page, re.M))


GAUGES = ("ferry_drift_feature_share", "ferry_drift_distance", "ferry_drift_drifted")


def wait_for_gauges(server: ServerProcess, models: set[str], timeout: float = 90) -> None:
    """Until every drift gauge has series for ``models`` (the distances need a pass that
    read the traffic; the share is set by an empty window too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(models <= gauge_models(server, g) for g in GAUGES):
            return
        time.sleep(0.25)
    raise AssertionError(f"drift gauges for {models} missing on /metrics: "
                         f"{ {g: gauge_models(server, g) for g in GAUGES} }")


def wait_for_firing(server: ServerProcess, timeout: float = 90) -> None:
    """Until the server's alert loop has judged ``drifty:busy`` firing."""
    line = 'ferry_alert_firing{alert="busy",model="drifty"} 1.0'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if line in server.client.get("/metrics").text:
            return
        time.sleep(0.25)
    raise AssertionError(f"{line} not on /metrics")


@pytest.fixture(scope="module")
def pg() -> Iterator[Any]:
    """A PostgreSQL server of this module's own, to read its statement log."""
    from tests._services import PostgresServer, postgres_bin

    if postgres_bin() is None:
        pytest.skip("PostgreSQL binaries not installed")
    server = PostgresServer()
    yield server
    server.stop()


def ddl_count(pg: Any, table: str) -> int:
    """``CREATE TABLE <table>`` statements PostgreSQL received (failed ones included)."""
    log = (pg.root / "log").read_text(errors="replace")
    return len(re.findall(rf"(?:statement|execute [^:]*):\s*CREATE TABLE \"?{table}\b", log))


def wait_for_lock_waiters(url: str, table: str, n: int, timeout: float = 120) -> None:
    engine = create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                waiting = conn.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = "
                    "CAST(:t AS regclass) AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"), {"t": table}).scalar()
                conn.rollback()
                if waiting >= n:
                    return
                time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError(f"{n} sessions never waited for {table}")


def test_two_servers_on_one_fresh_postgres_store_migrate_once_and_notify_once(
        pg, webhook, tmp_path):
    repo = make_repo(tmp_path / "repo", webhook.url)
    admin = create_engine(pg.url.rsplit("/", 1)[0] + "/ferry", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE replicas"))
        conn.execute(text("ALTER DATABASE replicas SET log_statement = 'ddl'"))
    admin.dispose()
    url = pg.url.rsplit("/", 1)[0] + "/replicas"
    store = url.replace("postgresql+psycopg://", "postgresql://")  # as a user writes it
    # The schema's version table, empty (no migration applied), held locked until both
    # servers wait at the check: the race is certain, not a matter of timing.
    engine = create_engine(url)
    schema_versions.create(engine)
    servers: list[ServerProcess] = []
    stopped: list[ServerProcess] = []
    try:
        with engine.connect() as hold:
            hold.execute(text("LOCK TABLE ferry_schema IN ACCESS EXCLUSIVE MODE"))
            started: list[ServerProcess | BaseException] = []

            def start() -> None:
                try:
                    started.append(ServerProcess(repo, "--store", store, env=INTERVAL))
                except BaseException as exc:  # noqa: BLE001 - reported below
                    started.append(exc)

            threads = [threading.Thread(target=start) for _ in range(2)]
            for t in threads:
                t.start()
            wait_for_lock_waiters(url, "ferry_schema", 2)
            hold.commit()  # let both go at once
        for t in threads:
            t.join(180)
        servers = [s for s in started if isinstance(s, ServerProcess)]
        assert len(servers) == 2, started
        a, b = servers
        for i in range(4):  # traffic through both servers, to both models
            for server in (a, b):
                send(server, "drifty", seed=i)
                send(server, "watched", seed=i)

        webhook.wait_for(1)
        for server in (a, b):  # both have judged the rule firing...
            wait_for_firing(server)
        time.sleep(3)  # ...and had time to send what they would send
        assert [(e["status"], e["model"], e["alert"]) for e in webhook.bodies] == [
            ("firing", "drifty", "busy")], webhook.bodies
        assert webhook.bodies[0]["value"] > 0

        # drift gauges on both servers, with no call to the monitor endpoint
        for server in (a, b):
            wait_for_gauges(server, {"drifty", "watched"})

        # one server goes away, a new one starts: the alert has been sent, not again
        a.stop()
        servers.remove(a)
        stopped.append(a)
        c = ServerProcess(repo, "--store", store, env=INTERVAL)
        servers.append(c)
        send(c, "drifty", seed=9)
        wait_for_gauges(c, {"drifty", "watched"})
        wait_for_firing(c)
        time.sleep(3)
        assert len(webhook.bodies) == 1, webhook.bodies
    finally:
        for server in servers:
            server.stop()
            stopped.append(server)
        engine.dispose()

    for table in ("predictions", "alert_states", "batch_runs"):
        assert ddl_count(pg, table) == 1, (table, ddl_count(pg, table))
    logs = "".join(line for s in stopped for line in s.log)
    assert "evaluation store unavailable" not in logs, logs
    assert "cannot open the run-record store" not in logs, logs


def test_alert_loop_publishes_drift_gauges_without_the_monitor_endpoint(webhook, tmp_path):
    """One server on SQLite: the loop's reports reach ``/metrics`` by themselves."""
    repo = make_repo(tmp_path / "repo", webhook.url)
    server = ServerProcess(repo, env=INTERVAL)
    try:
        for i in range(3):
            send(server, "drifty", seed=i)
            send(server, "watched", seed=i)
        wait_for_gauges(server, {"drifty", "watched"})
        page = server.client.get("/metrics").text
        assert re.search(r'^ferry_quality_violations\{.*model="watched"', page, re.M)
        webhook.wait_for(1)
    finally:
        server.stop()
