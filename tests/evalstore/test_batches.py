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


def test_packed_blobs_equal_the_stacked_encoding_and_parts_merge():
    from ferry.evalstore.batches import assemble, pack

    records = [rec(f"r{i}", 10.0 + i, 1 + i % 3, seed=i) for i in range(40)]
    x = np.zeros((6, 8), np.float32)
    odd = [InferenceRecord("nc", "m", 1, {"x": x[:, ::2], "color": np.array(["a"] * 6,
                                                                             dtype=object)},
                           {"score": x.sum(axis=1)}, "success", None, 0.001, 70.0),
           InferenceRecord("scalar", "m", 2, {"x": np.float32(3.0)},
                           {"score": np.float32(1.0)}, "success", None, 0.001, 71.0)]
    whole = build_batches(records)
    parts = pack(records[:7]) + pack(records[7:31]) + pack(records[31:])
    merged = assemble(parts)
    assert [b.row() for b in merged] == [b.row() for b in whole] and len(whole) == 1
    b = whole[0]
    stacked = {n: np.concatenate([r.inputs[n] for r in records]) for n in ("x", "color")}
    assert b.inputs == codec.encode(stacked)
    assert b.outputs == codec.encode({"score": np.concatenate([r.outputs["score"]
                                                               for r in records])})
    assert b.rows == sum(1 + i % 3 for i in range(40)) and b.records == 40
    assert [x.records for x in assemble(parts, batch_size=16)] == [7, 24, 9]  # not split
    nc, scalar = build_batches(odd)  # a non-contiguous view and 0-d tensors
    np.testing.assert_array_equal(codec.decode(nc.inputs)["x"], x[:, ::2])
    assert codec.decode(scalar.inputs)["x"].tolist() == [3.0] and scalar.rows == 1


def test_writer_bounds_its_buffer_counts_drops_and_flushes_in_chunks(tmp_path):
    from ferry.evalstore.writer import PACK_CHUNK

    w = writer_for(tmp_path, capacity=PACK_CHUNK * 2 + 10)
    for i in range(PACK_CHUNK * 2 + 30):
        w.observe(rec(f"b-{i}", 100.0 + i * 1e-3, seed=i % 5))
    assert w.dropped == 20 and w.buffered == PACK_CHUNK * 2 + 10
    assert w.pending_of(["b-0", "b-1033", "nope"]) == {"b-0", "b-1033"}
    w._cycle()
    assert w.buffered == 0 and w.written == PACK_CHUNK * 2 + 10
    assert not w.pending_of(["b-0"])
    data = read_window(w.engine, "m", 0, 1e6)
    assert data.requests == PACK_CHUNK * 2 + 10
    assert data.request_ids[-1] == f"b-{PACK_CHUNK * 2 + 9}"
    w.engine.dispose()


def test_a_v2_store_upgrades_to_id_ranges_and_keeps_its_index(tmp_path):
    import sqlite3

    path = tmp_path / "v2.db"
    with sqlite3.connect(path) as conn:  # the tables as schema v2 made them
        conn.executescript("""
            CREATE TABLE ferry_schema (version INTEGER PRIMARY KEY, applied FLOAT NOT NULL);
            INSERT INTO ferry_schema VALUES (1, 0), (2, 0);
            CREATE TABLE prediction_batches (id INTEGER PRIMARY KEY, model VARCHAR(128)
              NOT NULL, version INTEGER NOT NULL, ts_min FLOAT NOT NULL, ts_max FLOAT NOT
              NULL, records INTEGER NOT NULL, rows INTEGER NOT NULL, failures INTEGER NOT
              NULL, request_ids TEXT NOT NULL, meta BLOB NOT NULL, extra TEXT, inputs BLOB
              NOT NULL, outputs BLOB);
            CREATE TABLE prediction_index (request_id VARCHAR(128), batch_id INTEGER,
              position INTEGER, PRIMARY KEY (request_id, batch_id, position)) WITHOUT ROWID;
            CREATE TABLE feedback (id INTEGER PRIMARY KEY, request_id VARCHAR(128) NOT NULL,
              ts FLOAT NOT NULL, label TEXT, reward FLOAT);
            CREATE TABLE model_versions (model VARCHAR(128), version INTEGER, layout TEXT
              NOT NULL, updated FLOAT NOT NULL, PRIMARY KEY (model, version));
            CREATE TABLE "references" (model VARCHAR(128), version INTEGER, source TEXT NOT
              NULL, sha256 VARCHAR(64) NOT NULL, created FLOAT NOT NULL, profile BLOB NOT
              NULL, PRIMARY KEY (model, version));
        """)
        (b,) = build_batches([rec("0a1b2c3d-5", 1.0, seed=1), rec("0a1b2c3d-6", 2.0)])
        row = {k: v for k, v in b.row().items() if not k.startswith("id_")}
        conn.execute(f"INSERT INTO prediction_batches ({', '.join(row)}) VALUES "
                     f"({', '.join('?' * len(row))})", list(row.values()))
        conn.executemany("INSERT INTO prediction_index VALUES (?, 1, ?)",
                         [("0a1b2c3d-5", 0), ("0a1b2c3d-6", 1)])
    engine = open_engine(f"sqlite:///{path}")
    try:
        cols = {c["name"] for c in inspect(engine).get_columns("prediction_batches")}
        assert {"id_prefix", "id_lo", "id_hi"} <= cols
        assert feedback.record(engine, None, [feedback.FeedbackItem("0a1b2c3d-6", 1)]) == {
            "accepted": 1, "duplicates": 0}
        data = read_window(engine, "m", 0, 10)
        assert data.labels.tolist() == [None, 1]
    finally:
        engine.dispose()


def test_slots_of_whole_server_batches_store_the_same_bytes_as_single_records():
    """Requests that ran in a batch of several are held as slots (``slot_of``: the batch and
    the request's place, nothing of the request) and packed from the batch's stacked arrays
    when all of its requests are there, in order, and one by one otherwise (a missing or
    reordered request): the stored rows are the same bytes as records holding each
    request's own arrays, also when slots and records are mixed in one flush."""
    from ferry.evalstore.batches import _batch_items, pack, record_of, slot_of
    from ferry.scheduler.tensors import split, stack

    rng = np.random.default_rng(0)
    shared: list[InferenceRecord] = []
    plain: list[InferenceRecord] = []
    k = 0
    for b in range(6):
        sizes = [1, 2, 1] if b % 2 else [3, 1]
        items = [{"x": rng.normal(size=(n, 4)).astype(np.float32)} for n in sizes]
        stacked = stack(items)
        out = {"y": stacked["x"].sum(axis=1), "label": np.arange(sum(sizes))}
        for item, a, p in zip(items, split(out, sizes, stacked), split(out, sizes),
                              strict=True):
            k += 1
            assert hasattr(a, "batch") and not hasattr(p, "batch")
            for recs, o in ((shared, a), (plain, p)):
                recs.append(InferenceRecord(f"0000abcd-{k}", "m", 1, item, o, "success",
                                            None, 0.001, 1000.0 + k))
    del shared[5], plain[5]  # one request of the third batch was not recorded
    shared[7], shared[8] = shared[8], shared[7]  # two of another batch in another order
    plain[7], plain[8] = plain[8], plain[7]
    slots = [slot_of(r) for r in shared]
    assert all(type(s) is tuple for s in slots)
    ins, _, rows = _batch_items(slots)  # whole batches as one item each, the rest one by one
    assert len(ins) == len(shared) - 6 and rows.tolist() == [len(r.inputs["x"]) for r in shared]
    for s, r in zip(slots, plain, strict=True):  # a slot's record: the request's own rows
        back = record_of(s)
        np.testing.assert_array_equal(back.inputs["x"], r.inputs["x"])
        np.testing.assert_array_equal(back.outputs["y"], r.outputs["y"])
    [a], [p] = build_batches(slots), build_batches(plain)
    assert a.row() == p.row()
    x = codec.decode(a.inputs)["x"]
    np.testing.assert_array_equal(x, np.concatenate([r.inputs["x"] for r in plain]))
    mixed = pack(slots[:6] + plain[6:])  # a flush holding both kinds: two parts, same rows
    assert [len(part.ids) for part in mixed] == [6, len(plain) - 6]
    [m] = build_batches(slots[:6] + plain[6:])
    assert m.row() == p.row()


def test_slots_whose_batches_differ_in_layout_take_the_general_path():
    """Two batches of one version with different trailing shapes cannot be joined into one
    column: their slots are packed as records, one part per layout."""
    from ferry.evalstore.batches import pack, slot_of
    from ferry.scheduler.tensors import split, stack

    slots = []
    for width in (3, 5):
        items = [{"x": np.full((1, width), float(width), np.float32)} for _ in range(2)]
        stacked = stack(items)
        for i, o in enumerate(split({"y": stacked["x"].sum(axis=1)}, [1, 1], stacked)):
            slots.append(slot_of(InferenceRecord(f"w{width}-{i}", "m", 1, items[i], o,
                                                 "success", None, 0.001, 10.0 + i)))
    parts = pack(slots)
    assert sorted(len(p.ids) for p in parts) == [2, 2]
    batches = build_batches(slots)
    widths = sorted(codec.decode(b.inputs)["x"].shape[1] for b in batches)
    assert widths == [3, 5]


def test_per_model_retention_set_after_start_applies_at_the_next_cycle(tmp_path):
    import time

    w = writer_for(tmp_path, retention_days=100.0)
    old = time.time() - 5 * 86400
    records = [rec(f"m-{i}", old + i, seed=i) for i in range(3)]
    others = [InferenceRecord(f"n-{i}", "n", 1, r.inputs, r.outputs, "success", None,
                              0.002, old + i) for i, r in enumerate(records)]
    for r in records + others:
        w.observe(r)
    w._cycle()  # written; five days old is within the server's 100 days

    def models() -> list[str]:
        with w.engine.connect() as conn:
            return sorted(conn.execute(select(prediction_batches.c.model)).scalars().all())

    assert models() == ["m", "n"]
    w.set_model_policies({}, {"m": 1.0})  # e.g. model.yaml: monitoring.retention_days: 1
    w._cycle()
    assert models() == ["n"]
    w.engine.dispose()


def test_writer_holds_batched_requests_as_slots_and_finds_their_ids_pending(tmp_path):
    """``observe`` keeps a slot (not the record) for a request that ran with others; the
    feedback path still sees its id as pending until the flush writes it, with its rows."""
    from ferry.scheduler.tensors import split, stack

    w = writer_for(tmp_path)
    items = [{"x": np.full((n, 3), float(n), np.float32)} for n in (1, 2)]
    stacked = stack(items)
    outs = split({"score": stacked["x"].sum(axis=1)}, [1, 2], stacked)
    for i, (item, o) in enumerate(zip(items, outs, strict=True)):
        w.observe(InferenceRecord(f"s-{i}", "m", 1, item, o, "success", None, 0.002,
                                  50.0 + i))
    w.observe(rec("plain", 52.0))
    assert [type(r).__name__ for r in w._buffer] == ["tuple", "tuple", "InferenceRecord"]
    assert w.pending_of(["s-0", "s-1", "plain", "nope"]) == {"s-0", "s-1", "plain"}
    w._cycle()
    assert not w.pending_of(["s-0", "s-1", "plain"]) and w.written == 3
    data = read_window(w.engine, "m", 0, 100)
    ids = np.asarray(data.request_ids)
    np.testing.assert_array_equal(data.inputs["x"][ids == "s-1"], items[1]["x"])
    np.testing.assert_array_equal(data.outputs["score"][ids == "s-0"], [3.0])
    w.engine.dispose()


def test_slots_of_two_versions_in_one_flush_make_one_part_each():
    from ferry.evalstore.batches import pack, slot_of
    from ferry.scheduler.tensors import split, stack

    slots = []
    for k, version in enumerate((1, 2, 1, 2)):
        items = [{"x": np.full((1, 3), float(k), np.float32)} for _ in range(2)]
        stacked = stack(items)
        for i, o in enumerate(split({"y": stacked["x"].sum(axis=1)}, [1, 1], stacked)):
            slots.append(slot_of(InferenceRecord(f"v{k}-{i}", "m", version, items[i], o,
                                                 "success", None, 0.001, 10.0 + k)))
    parts = pack(slots)
    assert [(p.version, p.ids) for p in parts] == [
        (1, ["v0-0", "v0-1", "v2-0", "v2-1"]), (2, ["v1-0", "v1-1", "v3-0", "v3-1"])]
    assert [p.rows.tolist() for p in parts] == [[1, 1, 1, 1], [1, 1, 1, 1]]
