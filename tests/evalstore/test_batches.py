"""Batched prediction rows without a server: mixed layouts, failures and out-of-order
timestamps read back like per-record rows; the v1 ``predictions`` table and v1 spill files
are converted; retention deletes whole batches with their index; feedback joins."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import orjson
import pytest
from sqlalchemy import create_engine, func, inspect, select

from ferry.evalstore import codec, feedback
from ferry.evalstore.batches import build_batches
from ferry.evalstore.schema import (
    _v1,
    feedback as feedback_table,
    open_engine,
    prediction_batches,
    prediction_index,
    predictions,
    schema_versions,
)
from ferry.evalstore.spill import Spill
from ferry.evalstore.windows import read_window, versions_in
from ferry.evalstore.writer import StoreWriter
from ferry.types import InferenceRecord


def rec(rid: str, ts: float, rows: int = 1, version: int = 1, width: int = 3,
        failed: bool = False, seed: int = 0) -> InferenceRecord:
    x = np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)
    color = np.array([f"c{seed}"] * rows, dtype=object)
    outputs = None if failed else {"score": x.sum(axis=1)}
    return InferenceRecord(rid, "m", version, {"x": x, "color": color}, outputs,
                           "model_error" if failed else "success",
                           "boom" if failed else None, 0.002, ts)


def writer_for(tmp_path: Path, **kwargs) -> StoreWriter:
    w = StoreWriter(f"sqlite:///{tmp_path / 's.db'}", Spill(tmp_path / "spill", 1 << 24),
                    **kwargs)
    assert w._connect()
    return w


def test_mixed_batches_read_back_in_time_order(tmp_path):
    w = writer_for(tmp_path)
    records = [rec("a", 10.0, 2, seed=1), rec("b", 12.0, 1, seed=2),
               rec("c", 11.0, 3, seed=3), rec("f", 11.5, 1, failed=True, seed=4),
               rec("w", 10.5, 1, width=4, seed=5),  # another layout: its own batch
               rec("v2", 10.2, 1, version=2, seed=6)]
    batches = build_batches(records)
    assert sorted((b.version, b.records) for b in batches) == [(1, 1), (1, 1), (1, 3), (2, 1)]
    w._insert(batches)
    data = read_window(w.engine, "m", 0, 100, version=1)
    assert data.requests == 4 and data.errors == 1 and len(data.latency_ms) == 5
    # width-3 and width-4 "x" cannot stack: x is left out, color is kept
    assert "x" not in data.inputs and data.inputs["color"].tolist() == [
        "c1", "c1", "c5", "c3", "c3", "c3", "c2"]
    assert data.request_ids.tolist() == ["a", "a", "w", "c", "c", "c", "b"]
    assert data.ts.tolist() == [10.0, 10.0, 10.5, 11.0, 11.0, 11.0, 12.0]
    only = read_window(w.engine, "m", 10.9, 11.9, version=1)  # cuts inside one batch
    assert only.request_ids.tolist() == ["c"] * 3 and only.errors == 1
    np.testing.assert_array_equal(only.inputs["x"], records[2].inputs["x"])
    np.testing.assert_array_equal(only.outputs["score"], records[2].outputs["score"])
    assert versions_in(w.engine, "m", 0, 100) == [1, 2]
    w.engine.dispose()


def test_feedback_joins_through_the_index(tmp_path):
    w = writer_for(tmp_path)
    w._insert(build_batches([rec(f"r{i}", 100.0 + i, 2, seed=i) for i in range(10)]))
    result = feedback.record(w.engine, w, [feedback.FeedbackItem("r3", [1, 0]),
                                           feedback.FeedbackItem("r5", reward=0.5)])
    assert result == {"accepted": 2, "duplicates": 0}
    with pytest.raises(Exception, match="nope"):
        feedback.record(w.engine, w, [feedback.FeedbackItem("nope", 1)])
    data = read_window(w.engine, "m", 0, 1000)
    assert data.labels.tolist()[6:8] == [1, 0] and np.nansum(data.rewards) == 1.0
    w.engine.dispose()


def test_v1_rows_are_migrated(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = create_engine(url)
    with old.begin() as conn:  # a store written by schema v1
        schema_versions.create(conn)
        _v1(conn)
        conn.execute(schema_versions.insert(), {"version": 1, "applied": 0.0})
        rows = []
        for i in range(5000):
            r = rec(f"old-{i}", 50.0 + i * 0.01, 1 + i % 2, seed=i % 7, failed=i % 100 == 7)
            rows.append({"request_id": r.request_id, "ts": r.timestamp, "model": "m",
                         "version": 1, "endpoint": None, "outcome": r.outcome,
                         "error": r.error, "latency_ms": 2.0, "rows": 1 + i % 2,
                         "inputs": codec.encode(r.inputs),
                         "outputs": None if r.outputs is None else codec.encode(r.outputs)})
        conn.execute(predictions.insert(), rows)
        conn.execute(feedback_table.insert(), {"request_id": "old-2", "ts": 1.0,
                                               "label": "1", "reward": None})
    old.dispose()
    engine = open_engine(url)
    try:
        assert not inspect(engine).has_table("predictions")
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(prediction_index)
                                ).scalar() == 5000
            assert conn.execute(select(func.sum(prediction_batches.c.records))).scalar() == 5000
        data = read_window(engine, "m", 0, 1000)
        assert data.requests == 5000 - 50 and data.errors == 50
        assert data.rows == sum(1 + i % 2 for i in range(5000) if i % 100 != 7)
        assert data.request_ids[0] == "old-0" and data.labels[data.request_ids == "old-2"
                                                             ].tolist() == [1]
        first = rec("old-0", 50.0, 1, seed=0).inputs["x"]
        np.testing.assert_array_equal(data.inputs["x"][:1], first)
    finally:
        engine.dispose()


def test_v1_spill_files_replay_and_retention_deletes_batches(tmp_path):
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    lines = []
    for i in range(3):  # a spill file written by the per-record writer
        r = rec(f"s-{i}", 1000.0 + i, seed=i)
        doc = {"request_id": r.request_id, "ts": r.timestamp, "model": "m", "version": 1,
               "endpoint": None, "outcome": "success", "error": None, "latency_ms": 2.0,
               "rows": 1, "inputs": base64.b64encode(codec.encode(r.inputs)).decode(),
               "outputs": base64.b64encode(codec.encode(r.outputs)).decode()}
        lines.append(orjson.dumps(doc))
    (spill_dir / "00000000000000000001-000000.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    w = writer_for(tmp_path, retention_days=1.0)
    assert w.spill.contains("s-1")
    w._cycle()  # replays the spill, then applies retention (the old rows go)
    assert not w.spill.files() and not w.spill.contains("s-1")
    with w.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(prediction_batches)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(prediction_index)).scalar() == 0
    w.engine.dispose()
