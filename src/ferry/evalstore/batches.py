"""Prediction batches: many inference records as one database row, and back.

Contract:

- ``pack(records)`` groups records by model version and outcome kind (success/failure,
  and tensor layout when records of a version differ) into ``Part`` values: per tensor the
  records' arrays joined into one buffer (one ``bytes.join``), the request ids as a list,
  timestamps, latencies and row counts as arrays, and outcomes, errors and endpoints only
  when some record has one that is not the default (``success``/None). The parts hold no
  reference to the records. Per record this is about a dozen C-level ``map`` steps: no
  per-record Python loop on the usual path, no per-record blob, no per-record SQL row.
  ``pack`` also takes ``Slot`` values (``slot_of``): what the writer holds of a request
  that ran in a batch of several, packed from the batch's stacked arrays, one item per
  whole batch.
- ``assemble(parts)`` merges the parts of one flush that share a key (in order, at most
  ``batch_size`` records each) and encodes one ``Batch`` per group: each tensor set is one
  ``codec`` blob built with one copy (``codec.encode_columns``), the per-record columns a
  second blob (``meta``), the ids a JSON list plus their counter range
  (``requestids``). ``build_batches(records)`` is ``assemble(pack(records))``; the blobs
  are byte for byte those of ``codec.encode`` of the stacked tensors.
- ``insert_batches(conn, batches)`` writes the batch rows and the request index rows of
  the ids that are not server-made, in the caller's transaction; the database expands the
  index rows from JSON (``json_each`` on SQLite, ``jsonb_*`` functions on PostgreSQL): one
  statement per batch, whatever its size.
- ``records_of`` turns legacy per-record rows (schema v1 ``predictions``, old spill files)
  into ``InferenceRecord`` values, so the migration and the spill replay reuse the builder.

Pure functions apart from ``insert_batches``; safe from any thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Connection, text

from ferry.evalstore import codec, requestids
from ferry.evalstore.requestids import IdRanges
from ferry.evalstore.schema import prediction_batches
from ferry.scheduler.tensors import BatchOutputs, SharedBatch
from ferry.types import InferenceRecord, Tensors


Slot = tuple[str, int, "str | None", float, float, SharedBatch, int]
"""A successful request that ran in a batch of several, as the writer holds it (``slot_of``):
model, version, request id, timestamp, latency (s), the batch, the request's place in it."""


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
    ranges: IdRanges | None = None
    """Server-made ids as a counter range, and the positions of the ids that need index
    rows (``requestids``); None: computed from ``request_ids`` when inserted."""

    def row(self) -> dict[str, Any]:
        r = self.id_ranges()
        return {"model": self.model, "version": self.version, "ts_min": self.ts_min,
                "ts_max": self.ts_max, "records": self.records, "rows": self.rows,
                "failures": self.failures, "request_ids": self.request_ids,
                "meta": self.meta, "extra": self.extra, "inputs": self.inputs,
                "outputs": self.outputs, "id_prefix": r.prefix, "id_lo": r.lo, "id_hi": r.hi}

    def ids(self) -> list[str]:
        return list(orjson.loads(self.request_ids))

    def id_ranges(self) -> IdRanges:
        if self.ranges is None:
            self.ranges = requestids.ranges(self.ids())
        return self.ranges


_DTYPE = attrgetter("dtype")
_SHAPE = attrgetter("shape")
_TEXT_KINDS = "OSU"
_OBJECT = np.dtype(object)


@dataclass(slots=True)
class Column:
    """One tensor of a ``Part``: its rows stacked along the first axis, kept as pieces."""

    name: str
    dtype: np.dtype
    """The numeric dtype, or ``object`` for text (BYTES) tensors."""
    tail: tuple[int, ...]
    """The shape after the first (rows) axis."""
    pieces: list[Any]
    """Numeric: C-ordered buffers (``bytes``) holding the rows in order. Text: arrays."""
    rows: int

    @property
    def text(self) -> bool:
        return self.dtype.kind in _TEXT_KINDS

    def layout(self) -> tuple[str, str, tuple[int, ...]]:
        return self.name, "json" if self.text else self.dtype.str, self.tail


@dataclass(slots=True)
class Part:
    """Records of one model version, outcome kind (success or failure) and tensor layout,
    packed into columns but not yet encoded. ``pack`` makes them (cheap, frees the records'
    objects); ``assemble`` merges the parts of a flush and encodes one ``Batch`` each."""

    model: str
    version: int
    failed: bool
    ids: list[str]
    ts: np.ndarray
    latency_ms: np.ndarray
    rows: np.ndarray
    outcomes: list[str] | None
    """None when every record is ``success`` with no error and no endpoint."""
    errors: list[str | None] | None
    endpoints: list[str | None] | None
    inputs: list[Column]
    outputs: list[Column] | None

    def key(self) -> tuple[Any, ...]:
        return (self.model, self.version, self.failed,
                tuple(c.layout() for c in self.inputs),
                None if self.outputs is None else tuple(c.layout() for c in self.outputs))


def _columns(many: list[Tensors]) -> tuple[list[Column], np.ndarray] | None:
    """The tensors of ``many`` as columns (one copy per numeric tensor, with one
    ``bytes.join`` over the arrays' buffers: 7x cheaper than ``np.concatenate`` on small
    arrays) and the rows of each item (first dimension of its first tensor). None when
    names, dtypes or trailing shapes differ between items, a tensor is 0-d, or an array has
    no flat buffer (not C-contiguous); ``pack`` then splits the records by layout."""
    first = many[0]
    width = len(first)
    if set(map(len, many)) != {width}:
        return None
    out: list[Column] = []
    rows: np.ndarray | None = None
    try:
        for name, a in first.items():
            arrays = list(map(itemgetter(name), many))
            dtype = a.dtype
            dtypes = set(map(_DTYPE, arrays))
            text = dtype.kind in _TEXT_KINDS
            if text:
                if any(d.kind not in _TEXT_KINDS for d in dtypes):
                    return None
            elif dtypes != {dtype} or dtype.kind == "V":
                return None
            shapes = set(map(_SHAPE, arrays))
            shape = a.shape
            if not shape:
                return None
            if len(shapes) == 1:
                counts = None
                total = shape[0] * len(arrays)
            else:
                if () in shapes or len({s[1:] for s in shapes}) != 1:
                    return None
                counts = np.fromiter(map(len, arrays), np.int64, len(arrays))
                total = int(counts.sum())
            if rows is None:
                rows = np.full(len(arrays), shape[0], dtype=np.int64) if counts is None \
                    else counts
            if text:
                piece: Any = np.concatenate(arrays)
                out.append(Column(name, _OBJECT, shape[1:], [piece], total))
            else:
                out.append(Column(name, dtype, shape[1:], [b"".join(arrays)], total))
    except (KeyError, AttributeError, TypeError, ValueError):
        return None  # a missing name, a non-array, a non-contiguous buffer
    if rows is None:  # no tensors at all: one row per record
        rows = np.ones(len(many), dtype=np.int64)
    return out, rows


def _layout_key(t: Tensors | None) -> tuple[Any, ...] | None:
    if t is None:
        return None
    return tuple((n, np.asarray(a).dtype.str, np.shape(a)[1:] if np.ndim(a) else ())
                 for n, a in t.items())


def _as_rows(t: Tensors) -> Tensors:
    """0-d tensors as one row (the codec stores a scalar as a row of one)."""
    return {n: (a if np.ndim(a) else np.reshape(a, (1,))) for n, a in
            ((n, np.asarray(a)) for n, a in t.items())}


def _part(model: str, version: int, failed: bool, group: list[InferenceRecord],
          inputs: list[Column], rows: np.ndarray, outputs: list[Column] | None) -> Part:
    n = len(group)
    outcomes = list(map(attrgetter("outcome"), group))
    errors = list(map(attrgetter("error"), group))
    endpoints = list(map(attrgetter("endpoint"), group))
    plain = outcomes.count("success") == n and errors.count(None) == n and \
        endpoints.count(None) == n
    return _new_part(model, version, failed, list(map(attrgetter("request_id"), group)),
                     list(map(attrgetter("timestamp"), group)),
                     list(map(attrgetter("latency_s"), group)), rows, inputs, outputs,
                     None if plain else (outcomes, errors, endpoints))


def _new_part(model: str, version: int, failed: bool, ids: list[str | None], ts: list[float],
              latency_s: list[float], rows: np.ndarray, inputs: list[Column],
              outputs: list[Column] | None,
              extra: tuple[list[str], list[str | None], list[str | None]] | None = None
              ) -> Part:
    """A ``Part`` from its records' ids (a missing one stored as ""), times and latencies
    (seconds; stored in ms); ``extra``: outcomes, errors and endpoints, None when all are
    the defaults."""
    if None in ids:
        ids = [i or "" for i in ids]
    outcomes, errors, endpoints = extra or (None, None, None)
    return Part(model, version, failed, ids,  # type: ignore[arg-type]
                np.array(ts, dtype=np.float64), np.array(latency_s, dtype=np.float64) * 1e3,
                rows, outcomes, errors, endpoints, inputs, outputs)


def _groups(records: list[InferenceRecord]) -> dict[tuple[str, int, bool],
                                                     list[InferenceRecord]]:
    """Records by (model, version, failed), in order; one flush of one model's successful
    traffic (the usual case) is checked with three C-level counts, no per-record loop."""
    first = records[0]
    n = len(records)
    if (first.outputs is not None
            and list(map(attrgetter("model"), records)).count(first.model) == n
            and list(map(attrgetter("version"), records)).count(first.version) == n
            and list(map(attrgetter("outputs"), records)).count(None) == 0):
        return {(first.model, first.version, False): records}
    groups: dict[tuple[str, int, bool], list[InferenceRecord]] = {}
    for r in records:
        groups.setdefault((r.model, r.version, r.outputs is None), []).append(r)
    return groups


def pack(records: Sequence[InferenceRecord | Slot]) -> list[Part]:
    """``records`` (and ``Slot`` values) as parts: one per model version and outcome kind,
    or one per tensor layout when records of a version differ (other trailing shapes or
    dtypes, 0-d tensors). Order is kept among the slots and among the records (a version's
    slots and records make separate parts; readers order requests by time). The parts
    hold copies of the tensors' bytes, not the records' arrays."""
    out: list[Part] = []
    plain: list[InferenceRecord] = records  # type: ignore[assignment]
    slots = list(map(type, records)).count(tuple)
    if slots == len(records) and slots:  # a busy server's flush: slots only
        out, plain = _slot_parts(records)  # type: ignore[arg-type]
    elif slots:
        out, plain = _slot_parts([r for r in records if type(r) is tuple])  # type: ignore
        plain.extend(r for r in records if type(r) is not tuple)  # type: ignore[misc]
    for (model, version, failed), group in _groups(plain).items() if plain else ():
        ins = _columns(list(map(attrgetter("inputs"), group)))
        outs = None if failed or ins is None else _columns(
            list(map(attrgetter("outputs"), group)))
        if ins is not None and (failed or outs is not None):
            out.append(_part(model, version, failed, group, ins[0], ins[1],
                             None if outs is None else outs[0]))
            continue
        layouts: dict[tuple[Any, ...], list[InferenceRecord]] = {}
        for r in group:
            layouts.setdefault((_layout_key(r.inputs), _layout_key(r.outputs)), []).append(r)
        for members in layouts.values():
            ins = _columns([_as_rows(r.inputs) for r in members])
            outs = None if failed else _columns([_as_rows(r.outputs)  # type: ignore[arg-type]
                                                 for r in members])
            if ins is None or (not failed and outs is None):  # non-contiguous arrays
                members = [_contiguous(r) for r in members]
                ins = _columns([_as_rows(r.inputs) for r in members])
                outs = None if failed else _columns([_as_rows(r.outputs)  # type: ignore
                                                     for r in members])
            assert ins is not None and (failed or outs is not None)
            out.append(_part(model, version, failed, members, ins[0], ins[1],
                             None if outs is None else outs[0]))
    return out


_MODEL, _VERSION, _ID, _TS, _LATENCY, _BATCH, _INDEX = map(itemgetter, range(7))


def slot_of(record: InferenceRecord) -> InferenceRecord | Slot:
    """What the writer holds of ``record``: a ``Slot`` when it is a successful request that
    ran in a batch of several (its outputs a ``BatchOutputs``) and has no endpoint, else
    the record itself. A slot keeps none of the request's own objects (its input dict and
    arrays, its output views), only the batch they came from, which the batch's other
    requests share: a busy server holds a few objects per batch instead of ~8 per request
    until the next flush (``StoreWriter.observe`` holds what this returns)."""
    outputs = record.outputs
    if type(outputs) is BatchOutputs and record.endpoint is None:
        return (record.model, record.version, record.request_id, record.timestamp,
                record.latency_s, outputs.batch, outputs.index)
    return record


def request_id_of(held: InferenceRecord | Slot) -> str | None:
    """The request id of what the writer holds: a record or a slot."""
    return _ID(held) if type(held) is tuple else held.request_id  # type: ignore[union-attr]


def record_of(slot: Slot) -> InferenceRecord:
    """The record a slot stands for (its rows of the batch's arrays, as views)."""
    model, version, request_id, ts, latency, shared, index = slot
    inputs, outputs = _rows_of(shared, index)
    return InferenceRecord(request_id, model, version, inputs, outputs, "success", None,
                           latency, ts)


def _rows_of(shared: SharedBatch, index: int) -> tuple[Tensors, Tensors]:
    start = sum(shared.counts[:index])
    stop = start + shared.counts[index]
    return ({n: a[start:stop] for n, a in shared.inputs.items()},
            {n: a[start:stop] for n, a in shared.outputs.items()})


def _slot_parts(slots: Sequence[Slot]) -> tuple[list[Part], list[InferenceRecord]]:
    """Parts of ``slots``, one per model version: every run of slots that makes up a whole
    batch (all its requests, in order) contributes the batch's stacked arrays, other slots
    their rows. The slots of a version whose batches differ in layout come back as
    records, for the general path."""
    parts: list[Part] = []
    records: list[InferenceRecord] = []
    first = slots[0]
    n = len(slots)
    groups: dict[tuple[str, int], Sequence[Slot]] = {(first[0], first[1]): slots}
    if (list(map(_MODEL, slots)).count(first[0]) != n
            or list(map(_VERSION, slots)).count(first[1]) != n):
        by_version: dict[tuple[str, int], list[Slot]] = {}
        for s in slots:
            by_version.setdefault((s[0], s[1]), []).append(s)
        groups = {**by_version}
    for (model, version), group in groups.items():
        ins, outs, rows = _batch_items(group)
        in_columns = _columns(ins)
        out_columns = None if in_columns is None else _columns(outs)
        if in_columns is None or out_columns is None:
            records.extend(map(record_of, group))
            continue
        parts.append(_new_part(model, version, False, list(map(_ID, group)),
                               list(map(_TS, group)), list(map(_LATENCY, group)), rows,
                               in_columns[0], out_columns[0]))
    return parts, records


def _batch_items(group: Sequence[Slot]) -> tuple[list[Tensors], list[Tensors], np.ndarray]:
    """The inputs and outputs of ``group`` as items for ``_columns`` (a whole batch's
    stacked arrays as one item, a lone slot's rows as one), and the rows of each slot.
    Joining one array per batch instead of one per request is most of the writer's work
    per record when the server is busy (batches of ~5-10 requests)."""
    batches = list(map(_BATCH, group))
    indexes = list(map(_INDEX, group))
    ins: list[Tensors] = []
    outs: list[Tensors] = []
    rows: list[int] = []
    n = len(group)
    i = 0
    while i < n:
        shared = batches[i]
        size = len(shared.counts)
        if indexes[i] == 0 and batches[i:i + size].count(shared) == size and \
                indexes[i:i + size] == list(range(size)):
            ins.append(shared.inputs)
            outs.append(shared.outputs)
            rows.extend(shared.counts)
            i += size
            continue
        one_in, one_out = _rows_of(shared, indexes[i])
        ins.append(one_in)
        outs.append(one_out)
        rows.append(shared.counts[indexes[i]])
        i += 1
    return ins, outs, np.array(rows, dtype=np.int64)


def _contiguous(r: InferenceRecord) -> InferenceRecord:
    def fix(t: Tensors) -> Tensors:
        return {n: np.ascontiguousarray(a) for n, a in t.items()}

    return InferenceRecord(r.request_id, r.model, r.version, fix(r.inputs),
                           None if r.outputs is None else fix(r.outputs), r.outcome, r.error,
                           r.latency_s, r.timestamp, r.parameters, r.endpoint)


def _merge_columns(groups: list[list[Column]]) -> list[Column]:
    return [Column(c.name, c.dtype, c.tail, [p for g in groups for p in g[i].pieces],
                   sum(g[i].rows for g in groups)) for i, c in enumerate(groups[0])]


def _encode(columns: list[Column]) -> bytes:
    return codec.encode_columns([(c.name, c.dtype, (c.rows, *c.tail), c.pieces)
                                 for c in columns])


def _batch(parts: list[Part]) -> Batch:
    """One ``Batch`` from parts sharing one key, in order."""
    first = parts[0]
    ids = parts[0].ids if len(parts) == 1 else [i for p in parts for i in p.ids]
    ts = np.concatenate([p.ts for p in parts])
    latency = np.concatenate([p.latency_ms for p in parts])
    rows = np.concatenate([p.rows for p in parts])
    n = len(ids)
    extra = None
    failures = 0
    if any(p.outcomes is not None for p in parts):
        outcomes = [o for p in parts for o in (p.outcomes or ["success"] * len(p.ids))]
        failures = n - outcomes.count("success")
        extra = orjson.dumps({
            "outcome": outcomes,
            "error": [e for p in parts for e in (p.errors or [None] * len(p.ids))],
            "endpoint": [e for p in parts for e in (p.endpoints or [None] * len(p.ids))],
        }).decode()
    inputs = _encode(_merge_columns([p.inputs for p in parts]))
    outputs = None if first.outputs is None else _encode(
        _merge_columns([p.outputs for p in parts]))  # type: ignore[misc]
    return Batch(first.model, first.version, float(ts.min()), float(ts.max()), n,
                 int(rows.sum()), failures, orjson.dumps(ids).decode(),
                 codec.encode({"ts": ts, "latency_ms": latency, "rows": rows}), extra,
                 inputs, outputs, requestids.ranges(ids))


def assemble(parts: list[Part], batch_size: int = 1 << 62) -> list[Batch]:
    """The batches of ``parts``: parts with the same key (model, version, outcome kind,
    layout) are merged in order, at most ``batch_size`` records per batch (a part is never
    split)."""
    groups: dict[tuple[Any, ...], list[list[Part]]] = {}
    for p in parts:
        runs = groups.setdefault(p.key(), [[]])
        if runs[-1] and sum(len(x.ids) for x in runs[-1]) + len(p.ids) > batch_size:
            runs.append([])
        runs[-1].append(p)
    return [_batch(run) for runs in groups.values() for run in runs]


def build_batches(records: list[InferenceRecord]) -> list[Batch]:
    """The batches of ``records`` (see the module docstring): ``assemble(pack(records))``;
    record order is kept within each batch."""
    return assemble(pack(records))


# -- database ------------------------------------------------------------------------------
_INDEX_SQL = {  # index rows for a JSON list of ids (all positions)
    "sqlite": "INSERT INTO prediction_index (batch_id, position, request_id) "
              "SELECT :batch, key, value FROM json_each(:ids)",
    "postgresql": "INSERT INTO prediction_index (batch_id, position, request_id) "
                  "SELECT :batch, t.ord - 1, t.value FROM jsonb_array_elements_text("
                  "CAST(:ids AS jsonb)) WITH ORDINALITY AS t(value, ord)",
}
_SOME_SQL = {  # index rows for a JSON object {position: id}
    "sqlite": "INSERT INTO prediction_index (batch_id, position, request_id) "
              "SELECT :batch, CAST(key AS INTEGER), value FROM json_each(:ids)",
    "postgresql": "INSERT INTO prediction_index (batch_id, position, request_id) "
                  "SELECT :batch, CAST(t.key AS INTEGER), t.value FROM jsonb_each_text("
                  "CAST(:ids AS jsonb)) AS t",
}


def insert_batches(conn: Connection, batches: list[Batch], index_all: bool = False) -> None:
    """Write ``batches`` and their request index in ``conn``'s transaction: index rows for
    the ids that are not server-made (``requestids``), or for every id with ``index_all``
    (the v1 migration, whose feedback rows may point at any id)."""
    for b in batches:
        key = conn.execute(prediction_batches.insert(), b.row()).inserted_primary_key
        batch_id = key[0] if key is not None else None
        rest = list(range(b.records)) if index_all else b.id_ranges().rest
        if not rest:
            continue
        dialect = conn.dialect.name
        if len(rest) == b.records and dialect in _INDEX_SQL:
            conn.execute(text(_INDEX_SQL[dialect]), {"batch": batch_id, "ids": b.request_ids})
            continue
        ids = b.ids()
        if dialect in _SOME_SQL:
            conn.execute(text(_SOME_SQL[dialect]), {"batch": batch_id, "ids": orjson.dumps(
                {str(i): ids[i] for i in rest}).decode()})
        else:  # any other SQLAlchemy dialect: one parameter set per record
            from ferry.evalstore.schema import prediction_index

            conn.execute(prediction_index.insert(), [
                {"batch_id": batch_id, "position": i, "request_id": ids[i]} for i in rest])


# -- documents (the spill) and legacy rows -------------------------------------------------
def from_doc(doc: dict[str, Any]) -> Batch:
    """A batch from its spill document (``Batch.row()``; the id ranges are recomputed, so
    spill files written before they existed read the same way)."""
    return Batch(**{k: doc[k] for k in Batch.__slots__ if k != "ranges"})  # type: ignore


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
