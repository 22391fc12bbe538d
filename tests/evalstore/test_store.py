"""The evaluation store through a real server: every prediction recorded with its request
id, feedback joined (also before the prediction is flushed), unknown ids refused, duplicates
kept with the last winning, graceful shutdown flushing, and a store that is down spilling to
disk and catching up, on real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import time

import numpy as np
import orjson
from sqlalchemy import func, select, text

from ferry.evalstore.schema import (SCHEMA_VERSION, SQLITE_PAGE_SIZE, feedback, open_engine,
                                    prediction_index, table_names)
from ferry.evalstore.windows import read_window
from tests.conftest import ServerProcess
from tests.evalstore.conftest import infer_request


def send(server: ServerProcess, rows: int, rid: str | None = None, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    body, headers = infer_request(rng.normal(size=(rows, 5)).astype(np.float32),
                                  ["red"] * rows)
    if rid is not None:
        headers["ferry-request-id"] = rid
    r = server.client.post("/v2/models/drifty/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.headers["ferry-request-id"]


def count(url: str, table=prediction_index) -> int:
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar())
    finally:
        engine.dispose()


def test_every_prediction_is_recorded_and_feedback_joins(monitor_repo, store_url):
    server = ServerProcess(monitor_repo, "--store", store_url)
    try:
        ids = [send(server, 3, f"r-{i}", seed=i) for i in range(20)]
        generated = send(server, 1)
        assert ids[0] == "r-0" and generated and generated not in ids
        r = server.client.post("/ferry/v1/feedback", json={"request_id": "r-0", "label": 1})
        assert r.status_code == 200 and r.json() == {"accepted": 1, "duplicates": 0}
        r = server.client.post("/ferry/v1/feedback", json={"feedback": [
            {"request_id": f"r-{i}", "label": [0, 1, 0]} for i in range(1, 10)]
            + [{"request_id": generated, "reward": 0.5}]})
        assert r.json() == {"accepted": 10, "duplicates": 0}
        # duplicate: last write wins, both recorded
        r = server.client.post("/ferry/v1/feedback", json={"request_id": "r-0", "label": 0})
        assert r.json() == {"accepted": 1, "duplicates": 1}
        # unknown id: 404, kept nowhere (the batch is refused whole)
        r = server.client.post("/ferry/v1/feedback", json={"feedback": [
            {"request_id": "r-1", "label": 1}, {"request_id": "nope", "label": 1}]})
        assert r.status_code == 404 and "'nope'" in r.json()["error"]
        r = server.client.post("/ferry/v1/feedback", json={"request_id": "r-1"})
        assert r.status_code == 400 and "label" in r.json()["error"]
    finally:
        assert server.stop() == 0
    assert count(store_url) == 21
    assert count(store_url, feedback) == 12
    engine = open_engine(store_url)
    data = read_window(engine, "drifty", 0, None)
    engine.dispose()
    assert data.rows == 61 and data.requests == 21
    by_id = {}
    for rid, label in zip(data.request_ids, data.labels, strict=True):
        by_id.setdefault(rid, []).append(label)
    assert by_id["r-0"] == [0, 0, 0]  # the newer label won
    assert by_id["r-1"] == [0, 1, 0]  # one label per row
    assert by_id["r-15"] == [None] * 3
    assert np.nansum(data.rewards) == 0.5
    x = data.inputs["x"]
    assert x.shape == (61, 5) and data.inputs["color"][0] == "red"
    first = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    np.testing.assert_array_equal(x[:3], first)


def test_feedback_before_flush_joins_and_shutdown_flushes(monitor_repo, tmp_path):
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    server = ServerProcess(monitor_repo, "--store", url,
                           env={"FERRY_STORE_FLUSH_INTERVAL_S": "30"})
    try:
        rid = send(server, 2, "early")
        assert server.client.get("/ferry/v1/store").json()["buffered"] >= 1
        r = server.client.post("/ferry/v1/feedback", json={"request_id": "early", "label": 1})
        assert r.status_code == 200, r.text
        for i in range(50):
            send(server, 1, f"late-{i}")
    finally:
        assert server.stop() == 0  # SIGTERM: the buffer is written before exit
    assert rid == "early" and count(url) == 51


def test_store_down_spills_and_catches_up(monitor_repo, tmp_path, postgres_url):
    from tests._services import PostgresServer

    pg = PostgresServer()
    spill = tmp_path / "spill"
    server = ServerProcess(monitor_repo, "--store", pg.url, env={
        "FERRY_STORE_SPILL_DIR": str(spill), "FERRY_STORE_FLUSH_INTERVAL_S": "0.05"})
    try:
        for i in range(10):
            send(server, 1, f"up-{i}")
        assert server.client.post("/ferry/v1/store/flush").status_code == 200
        pg._run("pg_ctl", "-D", str(pg.data), "-m", "fast", "-w", "stop")
        for i in range(30):
            send(server, 2, f"down-{i}")  # inference keeps working
        status = server.client.get("/ferry/v1/store").json()
        for _ in range(100):
            if status["spill_bytes"] and not status["buffered"]:
                break
            time.sleep(0.05)
            status = server.client.get("/ferry/v1/store").json()
        assert status["up"] is False and status["spill_bytes"] > 0, status
        assert list(spill.glob("*.jsonl"))
        # feedback needs the database: 503, not a lost label
        r = server.client.post("/ferry/v1/feedback", json={"request_id": "up-1", "label": 1})
        assert r.status_code == 503
        pg._run("pg_ctl", "-D", str(pg.data), "-l", str(pg.root / "log"), "-w", "-o",
                f"-p {pg.port} -h 127.0.0.1 -k {pg.root} -F", "start")
        for _ in range(150):  # the writer retries every 2 s
            status = server.client.get("/ferry/v1/store").json()
            if status["up"] and not status["spill_bytes"]:
                break
            time.sleep(0.1)
        assert status["up"] and status["spill_bytes"] == 0, status
        r = server.client.post("/ferry/v1/feedback", json={"request_id": "down-3",
                                                           "label": 1})
        assert r.status_code == 200
        metrics = server.client.get("/metrics").text
        assert "ferry_evalstore_spilled_total 30.0" in metrics
    finally:
        assert server.stop() == 0
        count_after = count(pg.url)
        pg.stop()
    assert count_after == 40
    assert not list(spill.glob("*.jsonl"))


def test_full_spill_counts_drops_and_never_fails_inference(monitor_repo, tmp_path):
    server = ServerProcess(monitor_repo, "--store", "postgresql://ferry@127.0.0.1:1/ferry",
                           env={"FERRY_STORE_SPILL_DIR": str(tmp_path / "s"),
                                "FERRY_STORE_SPILL_MAX_BYTES": "3000",
                                "FERRY_STORE_FLUSH_INTERVAL_S": "0.05"})
    try:
        for i in range(40):
            send(server, 4, f"d-{i}")
        server.client.post("/ferry/v1/store/flush")
        metrics = server.client.get("/metrics").text
        dropped = [line for line in metrics.splitlines()
                   if line.startswith('ferry_evalstore_dropped_total{reason="spill_full"}')]
        assert dropped and float(dropped[0].split()[-1]) > 0, metrics
        assert server.client.get("/ferry/v1/store").json()["up"] is False
    finally:
        assert server.stop() == 0
    assert "dropped" in "".join(server.log)


def test_sample_rate_zero_records_nothing_and_store_none(monitor_repo, tmp_path):
    url = f"sqlite:///{tmp_path / 'sampled.db'}"
    server = ServerProcess(monitor_repo, "--store", url, "--store-sample-rate", "0")
    try:
        rid = send(server, 1, "s-1")
        r = server.client.post("/ferry/v1/feedback", json={"request_id": rid, "label": 1})
        assert r.status_code == 404
    finally:
        server.stop()
    assert count(url) == 0
    server = ServerProcess(monitor_repo, "--store", "none")
    try:
        send(server, 1, "n-1")
        assert server.client.post("/ferry/v1/feedback", json={
            "request_id": "n-1", "label": 1}).status_code == 404
    finally:
        server.stop()


def test_schema_is_versioned_and_sqlite_uses_wal(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = open_engine(url)
    engine2 = open_engine(url)  # migrating twice is a no-op
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA page_size")).scalar() == SQLITE_PAGE_SIZE
        assert conn.execute(text("SELECT version FROM ferry_schema")).scalars().all() == list(
            range(1, SCHEMA_VERSION + 1))
        assert {"endpoint_policies", "endpoint_events"} <= set(table_names(engine))
    engine.dispose()
    engine2.dispose()
    assert orjson.loads(b"[1]") == [1]


def test_concurrent_requests_batched_together_are_each_recorded_with_their_rows(
        monitor_repo, tmp_path):
    """Requests the batcher ran as one batch are stored from the batch's arrays: each
    request's id must still get exactly its own rows and outputs."""
    from concurrent.futures import ThreadPoolExecutor

    url = f"sqlite:///{tmp_path / 'store.db'}"
    server = ServerProcess(monitor_repo, "--store", url)
    sent = {f"c-{i}": np.random.default_rng(100 + i).normal(size=(1 + i % 3, 5))
            .astype(np.float32) for i in range(120)}

    def post(item: tuple[str, np.ndarray]) -> None:
        rid, x = item
        body, headers = infer_request(x, ["red"] * len(x))
        r = server.client.post("/v2/models/drifty/infer", content=body,
                               headers={**headers, "ferry-request-id": rid})
        assert r.status_code == 200, r.text

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(post, sent.items()))
        metrics = server.client.get("/metrics").text
    finally:
        assert server.stop() == 0
    counts = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("ferry_batch_size_rows_") and 'model="drifty"' in line}
    # fewer model calls than requests: some batches held several requests
    assert counts["ferry_batch_size_rows_count"] < len(sent)
    engine = open_engine(url)
    data = read_window(engine, "drifty", 0, None)
    engine.dispose()
    assert data.requests == len(sent) and data.rows == sum(len(x) for x in sent.values())
    ids = np.asarray(data.request_ids)
    for rid, x in sent.items():
        mine = ids == rid
        np.testing.assert_array_equal(data.inputs["x"][mine], x)
        np.testing.assert_array_equal(data.outputs["score"][mine],
                                      x.astype(np.float64).mean(axis=1).astype(np.float32))


def test_model_yaml_sample_rate_and_the_server_override(monitor_repo, tmp_path):
    """``monitoring.sample_rate`` in a model's ``model.yaml`` applies to that model only,
    and the server's per-model setting wins over it."""
    import shutil

    from ferry.evalstore.schema import prediction_batches

    repo = tmp_path / "repo"
    shutil.copytree(monitor_repo, repo)
    manifest = repo / "plain" / "model.yaml"
    manifest.write_text(manifest.read_text() + "monitoring:\n  sample_rate: 0.0\n"
                        "  retention_days: 3\n")

    def recorded(url: str) -> dict[str, int]:
        engine = open_engine(url)
        try:
            with engine.connect() as conn:
                b = prediction_batches.c
                return dict(conn.execute(select(b.model, func.sum(b.records))
                                         .group_by(b.model)).all())
        finally:
            engine.dispose()

    def serve_both(url: str, env: dict[str, str] | None = None) -> None:
        server = ServerProcess(repo, "--store", url, env=env)
        try:
            for model in ("drifty", "plain"):
                body, headers = infer_request(np.ones((2, 5), np.float32), ["red"] * 2)
                for _ in range(5):
                    r = server.client.post(f"/v2/models/{model}/infer", content=body,
                                           headers=headers)
                    assert r.status_code == 200, r.text
        finally:
            assert server.stop() == 0

    url = f"sqlite:///{tmp_path / 'a.db'}"
    serve_both(url)
    assert recorded(url) == {"drifty": 5}  # plain's model.yaml samples nothing
    url = f"sqlite:///{tmp_path / 'b.db'}"
    serve_both(url, {"FERRY_STORE_SAMPLE_RATES": '{"plain": 1.0}'})
    assert recorded(url) == {"drifty": 5, "plain": 5}
