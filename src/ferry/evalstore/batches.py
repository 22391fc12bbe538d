"""Prediction batches: many inference records as one database row, and back.

Contract:

- ``build_batches(records)`` groups records by model version (and success/failure, and
  tensor layout when one flush mixes layouts) and returns one ``Batch`` per group: the
  group's inputs and outputs stacked along the first axis, each one ``codec`` blob, the
  per-record timestamps, latencies and row counts as a second blob (``meta``), the request
  ids as a JSON list, and outcomes, errors and endpoints as JSON only when some record has
  one that is not the default (``success``/None). Per record this is a list append and a
  share of one ``np.concatenate`` per tensor: no per-record blob, no per-record SQL row.
- ``insert_batches(conn, batches)`` writes the batch rows and the per-request index
  (``request_id`` → batch id, position) in the caller's transaction. The index rows are
  expanded by the database from the JSON list (``json_each`` on SQLite,
  ``jsonb_array_elements_text`` on PostgreSQL): one statement per batch, whatever its size.
- ``records_of`` turns legacy per-record rows (schema v1 ``predictions``, old spill files)
  into ``InferenceRecord`` values, so the migration and the spill replay reuse the builder.

Pure functions apart from ``insert_batches``; safe from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Connection, text

from ferry.evalstore import codec
from ferry.evalstore.schema import prediction_batches
from ferry.types import InferenceRecord, Tensors


@dataclass(slots=True)
class Batch:
    """One ``prediction_batches`` row (see the module docstring)."""

    model: str
    version: int
    ts_min: float
    ts_max: float
    records: int
    rows: int
    failures: int
    request_ids: str
    """JSON list, one id per record, in record order."""
    meta: bytes
    """``codec`` blob of ``ts`` (float64), ``latency_ms`` (float64), ``rows`` (int64)."""
    extra: str | None
    """JSON ``{"outcome": [...], "error": [...], "endpoint": [...]}`` or None (all
    ``success``, no errors, no endpoints)."""
    inputs: bytes
    outputs: bytes | None

    def row(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "ts_min": self.ts_min,
                "ts_max": self.ts_max, "records": self.records, "rows": self.rows,
                "failures": self.failures, "request_ids": self.request_ids,
                "meta": self.meta, "extra": self.extra, "inputs": self.inputs,
                "outputs": self.outputs}

    def ids(self) -> list[str]:
        return list(orjson.loads(self.request_ids))



def _stack(many: list[Tensors]) -> Tensors | None:
    """Each tensor of ``many`` concatenated along axis 0; None when names, dtypes (beyond
    string widths) or trailing shapes differ, or a tensor is 0-d."""
    first = many[0]
    out: Tensors = {}
    try:
        for name, a in first.items():
            stacked = np.concatenate([t[name] for t in many])
            if stacked.dtype != a.dtype and a.dtype.kind not in "OSU":
                return None
            out[name] = stacked
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
    width = len(first)
    if any(len(t) != width for t in many):
        return None
    return out


def _layout_key(t: Tensors | None) -> tuple[Any, ...] | None:
    if t is None:
        return None
    return tuple((n, np.asarray(a).dtype.str, np.shape(a)[1:] if np.ndim(a) else ())
                 for n, a in t.items())


def _as_rows(t: Tensors) -> Tensors:
    """0-d tensors as one row (the codec stores a scalar as a row of one)."""
    return {n: (a if np.ndim(a) else np.reshape(a, (1,))) for n, a in
            ((n, np.asarray(a)) for n, a in t.items())}


def _batch(model: str, version: int, group: list[InferenceRecord], inputs: Tensors,
           outputs: Tensors | None) -> Batch:
    n = len(group)
    first = next(iter(inputs), None)
    if first is None:
        rows = np.ones(n, dtype=np.int64)
    else:
        try:
            rows = np.array([r.inputs[first].shape[0] for r in group], dtype=np.int64)
        except (IndexError, AttributeError):  # 0-d tensors: one row
            rows = np.array([np.shape(r.inputs[first])[0] if np.ndim(r.inputs[first]) else 1
                             for r in group], dtype=np.int64)
    ts = np.array([r.timestamp for r in group], dtype=np.float64)
    latency = np.array([r.latency_s for r in group], dtype=np.float64) * 1000.0
    outcomes = [r.outcome for r in group]
    failures = n - outcomes.count("success")
    extra = None
    if failures or any(r.error is not None or r.endpoint is not None for r in group):
        extra = orjson.dumps({"outcome": outcomes, "error": [r.error for r in group],
                              "endpoint": [r.endpoint for r in group]}).decode()
    return Batch(model, version, float(ts.min()), float(ts.max()), n, int(rows.sum()),
                 failures, orjson.dumps([r.request_id or "" for r in group]).decode(),
                 codec.encode({"ts": ts, "latency_ms": latency, "rows": rows}), extra,
                 codec.encode(inputs), None if outputs is None else codec.encode(outputs))


def build_batches(records: list[InferenceRecord]) -> list[Batch]:
    """The batches of ``records`` (see the module docstring); record order is kept within
    each batch."""
    groups: dict[tuple[str, int, bool], list[InferenceRecord]] = {}
    for r in records:
        key = (r.model, r.version, r.outputs is None)
        group = groups.get(key)
        if group is None:
            groups[key] = [r]
        else:
            group.append(r)
    out: list[Batch] = []
    for (model, version, failed), group in groups.items():
        inputs = _stack([r.inputs for r in group])
        outputs = None if failed else _stack([r.outputs for r in group  # type: ignore[misc]
                                              if r.outputs is not None])
        if inputs is not None and (failed or outputs is not None):
            out.append(_batch(model, version, group, inputs, outputs))
            continue
        # mixed layouts in one flush (rare): one batch per layout
        layouts: dict[tuple[Any, ...], list[InferenceRecord]] = {}
        for r in group:
            layouts.setdefault((_layout_key(r.inputs), _layout_key(r.outputs)), []).append(r)
        for members in layouts.values():
            ins = _stack([_as_rows(r.inputs) for r in members]) or {}
            outs = None if failed else _stack([_as_rows(r.outputs)  # type: ignore[arg-type]
                                               for r in members])
            out.append(_batch(model, version, members, ins, None if failed else outs or {}))
    return out


# -- database ------------------------------------------------------------------------------
_INDEX_SQL = {
    "sqlite": "INSERT INTO prediction_index (batch_id, position, request_id) "
              "SELECT :batch, key, value FROM json_each(:ids)",
    "postgresql": "INSERT INTO prediction_index (batch_id, position, request_id) "
                  "SELECT :batch, t.ord - 1, t.value FROM jsonb_array_elements_text("
                  "CAST(:ids AS jsonb)) WITH ORDINALITY AS t(value, ord)",
}


def insert_batches(conn: Connection, batches: list[Batch]) -> None:
    """Write ``batches`` and their request index in ``conn``'s transaction."""
    index_sql = _INDEX_SQL.get(conn.dialect.name)
    for b in batches:
        key = conn.execute(prediction_batches.insert(), b.row()).inserted_primary_key
        batch_id = key[0] if key is not None else None
        if index_sql is not None:
            conn.execute(text(index_sql), {"batch": batch_id, "ids": b.request_ids})
        else:  # any other SQLAlchemy dialect: one parameter set per record
            from ferry.evalstore.schema import prediction_index

            conn.execute(prediction_index.insert(), [
                {"batch_id": batch_id, "position": i, "request_id": rid}
                for i, rid in enumerate(b.ids())])


# -- documents (the spill) and legacy rows -------------------------------------------------
def from_doc(doc: dict[str, Any]) -> Batch:
    return Batch(**{k: doc[k] for k in Batch.__slots__})  # type: ignore[attr-defined]


def decode_meta(b_meta: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ts, latency_ms, rows)`` of a batch's ``meta`` blob."""
    meta = codec.decode(b_meta)
    return meta["ts"], meta["latency_ms"], meta["rows"]


def records_of(rows: list[dict[str, Any]]) -> list[InferenceRecord]:
    """Legacy per-record rows (``predictions`` v1 columns, blobs as bytes) as records."""
    out = []
    for r in rows:
        outputs = r.get("outputs")
        out.append(InferenceRecord(
            r["request_id"], r["model"], int(r["version"]), codec.decode(bytes(r["inputs"])),
            None if outputs is None else codec.decode(bytes(outputs)), r["outcome"],
            r.get("error"), float(r["latency_ms"]) / 1000.0, float(r["ts"]),
            endpoint=r.get("endpoint")))
    return out
