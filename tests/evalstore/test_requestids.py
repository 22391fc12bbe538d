"""Server-made request ids need no index row per request: they are unique (per process and
across restarts), stored as counter ranges per batch, and feedback still finds them: while
they are buffered, after a restart (another process prefix), and never invents one."""

from __future__ import annotations

import time

import numpy as np
from sqlalchemy import func, select

from ferry.evalstore import feedback, requestids
from ferry.evalstore.batches import build_batches
from ferry.evalstore.schema import open_engine, prediction_batches, prediction_index
from ferry.evalstore.windows import read_window
from ferry.protocols import identity
from tests.conftest import ServerProcess
from tests.evalstore.test_batches import rec, writer_for
from tests.evalstore.test_store import send


def test_ranges_cover_server_made_ids_and_list_the_others():
    ids = [f"0a1b2c3d-{n}" for n in (17, 9, 4096, 12)]
    r = requestids.ranges(ids)
    assert (r.prefix, r.lo, r.hi, r.rest) == ("0a1b2c3d", 9, 4096, [])
    mixed = ids + ["r-17", "ffffffff-3", "0a1b2c3d-0a1b2c3d-5", "0a1b2c3d-", "0a1b2c3d-x"]
    r = requestids.ranges(mixed)
    assert (r.prefix, r.lo, r.hi, r.rest) == ("0a1b2c3d", 9, 4096, [4, 5, 6, 7, 8])
    r = requestids.ranges(["0a1b2c3d-" + "9" * 19])  # beyond int64: indexed instead
    assert r.prefix is None and r.rest == [0]
    assert requestids.parse("0a1b2c3d-7") == ("0a1b2c3d", 7)
    assert requestids.parse("0A1B2C3D-7") is None and requestids.parse("r-7") is None


def test_generated_ids_have_the_server_made_form_and_are_unique():
    made = [identity.new_request_id() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(requestids.parse(i) is not None for i in made)
    assert len({requestids.parse(i)[0] for i in made}) == 1  # one prefix per process


def test_only_client_ids_get_index_rows_and_feedback_adds_the_others(tmp_path):
    w = writer_for(tmp_path)
    made = [f"0a1b2c3d-{n}" for n in range(100, 110)]
    w._insert(build_batches([rec(i, 10.0 + k, seed=k) for k, i in enumerate(made)]
                            + [rec("client-1", 20.0, seed=3)]))
    with w.engine.connect() as conn:
        assert conn.execute(select(prediction_index.c.request_id)).scalars().all() == [
            "client-1"]
        assert conn.execute(select(prediction_batches.c.id_prefix, prediction_batches.c.id_lo,
                                   prediction_batches.c.id_hi)).one() == ("0a1b2c3d", 100, 109)
    result = feedback.record(w.engine, w, [feedback.FeedbackItem("0a1b2c3d-103", 1),
                                           feedback.FeedbackItem("0a1b2c3d-103", 0),
                                           feedback.FeedbackItem("client-1", reward=2.0)])
    assert result == {"accepted": 3, "duplicates": 1}
    again = feedback.record(w.engine, w, [feedback.FeedbackItem("0a1b2c3d-103", 1)])
    assert again == {"accepted": 1, "duplicates": 1}
    for unknown in ("0a1b2c3d-111", "0a1b2c3d-99", "ffffffff-103"):  # in no batch's list
        try:
            feedback.record(w.engine, w, [feedback.FeedbackItem(unknown, 1)])
        except Exception as exc:
            assert unknown in str(exc)
        else:
            raise AssertionError(f"{unknown} was accepted")
    with w.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(prediction_index)).scalar() == 2
    data = read_window(w.engine, "m", 0, 100)
    assert data.labels[data.request_ids == "0a1b2c3d-103"].tolist() == [1]  # newest wins
    assert np.nansum(data.rewards) == 2.0
    w.engine.dispose()


def test_feedback_for_a_buffered_generated_id_and_after_a_restart(monitor_repo, tmp_path):
    url = f"sqlite:///{tmp_path / 'ids.db'}"
    server = ServerProcess(monitor_repo, "--store", url,
                           env={"FERRY_STORE_FLUSH_INTERVAL_S": "30"})
    try:
        first = [send(server, 1, seed=i) for i in range(3)]
        assert server.client.get("/ferry/v1/store").json()["buffered"] == 3
        started = time.monotonic()
        r = server.client.post("/ferry/v1/feedback", json={"request_id": first[1],
                                                           "label": 1})
        assert r.status_code == 200, r.text
        assert time.monotonic() - started < 10  # the writer flushed at once, not in 30 s
    finally:
        assert server.stop() == 0
    again = ServerProcess(monitor_repo, "--store", url)
    try:
        later = send(again, 1, seed=9)
        assert requestids.parse(later)[0] != requestids.parse(first[0])[0]  # new prefix
        r = again.client.post("/ferry/v1/feedback", json={"feedback": [
            {"request_id": first[2], "label": 0}, {"request_id": later, "reward": 1.5}]})
        assert r.status_code == 200 and r.json() == {"accepted": 2, "duplicates": 0}, r.text
        prefix, counter = requestids.parse(first[2])
        r = again.client.post("/ferry/v1/feedback", json={
            "request_id": f"{prefix}-{counter + 1000}", "label": 0})
        assert r.status_code == 404
    finally:
        assert again.stop() == 0
    engine = open_engine(url)
    try:
        data = read_window(engine, "drifty", 0, None)
    finally:
        engine.dispose()
    labels = dict(zip(data.request_ids.tolist(), data.labels.tolist(), strict=True))
    assert data.requests == 4 and labels[first[1]] == 1 and labels[first[2]] == 0
    assert labels[first[0]] is None and np.nansum(data.rewards) == 1.5


def test_migration_3_adds_the_id_ranges_to_an_older_store(store_url):
    from sqlalchemy import inspect, text

    engine = open_engine(store_url)
    w_batches = build_batches([rec("0a1b2c3d-5", 1.0, seed=1), rec("client-9", 2.0)])
    with engine.begin() as conn:  # back to schema 2: no range columns
        conn.execute(text("DROP INDEX ix_prediction_batches_id_range"))
        for col in ("id_prefix", "id_lo", "id_hi"):
            conn.execute(text(f"ALTER TABLE prediction_batches DROP COLUMN {col}"))
        conn.execute(text("DELETE FROM ferry_schema WHERE version = 3"))
        row = {k: v for k, v in w_batches[0].row().items() if not k.startswith("id_")}
        conn.execute(text(f"INSERT INTO prediction_batches ({', '.join(row)}) VALUES "
                          f"({', '.join(':' + k for k in row)})"), row)
        conn.execute(prediction_index.insert(), [
            {"request_id": "0a1b2c3d-5", "batch_id": 1, "position": 0},
            {"request_id": "client-9", "batch_id": 1, "position": 1}])
    engine.dispose()
    engine = open_engine(store_url)  # applies migration 3 again
    try:
        cols = {c["name"] for c in inspect(engine).get_columns("prediction_batches")}
        assert {"id_prefix", "id_lo", "id_hi"} <= cols
        result = feedback.record(engine, None, [feedback.FeedbackItem("0a1b2c3d-5", 1),
                                                feedback.FeedbackItem("client-9", 0)])
        assert result == {"accepted": 2, "duplicates": 0}
        assert read_window(engine, "m", 0, 10).labels.tolist() == [1, 0]
    finally:
        engine.dispose()
