"""``ChunkScorer``: one chunk of rows in, the output table and the rejects table out.

The same object scores in the main process (``--workers 1``), in each worker process and in
each Ray actor, so every engine writes identical rows. It holds the loaded runtime; it is
not thread-safe (one chunk at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

from ferry.batch import columns as cols
from ferry.batch.job import BatchJob
from ferry.lifecycle.loader import CheckedVersion, load_runtime
from ferry.runtimes.base import Runtime
from ferry.types import Signature, Tensors

REASON = "reject_reason"
"""The rejects table's column holding why the row was rejected."""


@dataclass
class ChunkResult:
    """One scored chunk. ``output`` and ``rejects`` are None once a sink's chunk writer has
    stored them where they were scored (a worker process); the counts stay."""

    chunk: int
    output: pa.Table | None
    rejects: pa.Table | None
    rows_in: int
    rows_out: int = 0
    rows_rejected: int = 0

    def __post_init__(self) -> None:
        if self.output is not None:
            self.rows_out = self.output.num_rows
        if self.rejects is not None:
            self.rows_rejected = self.rejects.num_rows

    @property
    def stored(self) -> bool:
        return self.output is None

    def counts_only(self) -> ChunkResult:
        return ChunkResult(self.chunk, None, None, self.rows_in, self.rows_out,
                           self.rows_rejected)


@dataclass(frozen=True)
class Layout:
    """What every chunk's tables look like; computed once from the input schema."""

    inputs: list[cols.InputColumns]
    outputs: list[cols.OutputColumns]
    keep: list[str]
    """Key and passthrough columns copied from the input."""
    output_schema: pa.Schema
    rejects_schema: pa.Schema
    read_columns: list[str]
    """Every input column the job reads."""


def make_layout(job: BatchJob, signature: Signature, model: CheckedVersion,
                input_schema: pa.Schema) -> Layout:
    found = list(input_schema.names)
    missing = [c for c in job.keys + job.passthrough if c not in found]
    if missing:
        raise cols.BatchError(f"--key/--passthrough name column(s) {missing} that the input "
                              f"does not have; columns found: {', '.join(found)}")
    inputs = cols.plan_inputs(signature, model.manifest, job.mapping, found)
    outputs = cols.plan_outputs(signature, model.manifest)
    keep = list(dict.fromkeys(job.keys + job.passthrough))
    fields = [input_schema.field(c) for c in keep]
    fields = [f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f
              for f in fields]
    pred = cols.output_fields(outputs)
    clash = sorted({f.name for f in fields} & ({f.name for f in pred} | set(_META)))
    if clash:
        raise cols.BatchError(f"column(s) {clash} would be both copied from the input and "
                              f"written as predictions; drop them from --key/--passthrough")
    meta = [pa.field(n, t) for n, t in _META.items()]
    output_schema = pa.schema(fields + pred + meta)
    feature_cols = [c for c in cols.input_columns(inputs) if c not in keep]
    rejects_schema = pa.schema(fields + [pa.field(c, pa.string()) for c in feature_cols]
                               + [pa.field(REASON, pa.string()), pa.field("run_id", pa.string())])
    read = list(dict.fromkeys(keep + cols.input_columns(inputs)))
    return Layout(inputs, outputs, keep, output_schema, rejects_schema, read)


_META = {"model_version": pa.int64(), "run_id": pa.string(),
         "scored_at": pa.timestamp("us", tz="UTC")}


def default_batch_rows(signature: Signature) -> int:
    """Rows per model call: ~256k values, between 256 and 8192 rows. Measured on the bench
    models: 8k is best for 32 features, 1k for 256 (bigger batches only add memory)."""
    width = sum(max(1, int(np.prod(s.shape[1:]))) for s in signature.inputs)
    return int(min(8192, max(256, 262144 // max(1, width))))


class ChunkScorer:
    """Loads the model once and scores chunks with it."""

    def __init__(self, job: BatchJob, model: CheckedVersion, layout: Layout, run_id: str,
                 scored_at: datetime, runtime: Runtime | None = None) -> None:
        self.layout = layout
        self.runtime = runtime or load_runtime(model, threads=1)
        self.batch_rows = job.batch_rows or default_batch_rows(self.runtime.signature())
        self.version = model.version
        self.run_id = run_id
        self.scored_at = scored_at
        self._buffers: dict[str, np.ndarray] = {}
        self._meta = Meta(self.version, run_id, scored_at)

    def score(self, chunk: int, batch: pa.RecordBatch) -> ChunkResult:
        n = batch.num_rows
        rejects = cols.Rejects(n)
        values = cols.convert(self.layout.inputs, batch, rejects)
        rows = np.flatnonzero(rejects.ok)  # the rows the model sees
        outputs = self._predict(values, rows, len(rows) == n, rejects)
        good = np.flatnonzero(rejects.ok)  # minus rows the model itself failed on
        kept = batch if len(good) == n else batch.take(pa.array(good))
        return ChunkResult(chunk, self._output(kept, outputs), self._rejects(batch, rejects), n)

    def _predict(self, values: list[cols.InputValues], rows: np.ndarray, every_row: bool,
                 rejects: cols.Rejects) -> Tensors:
        """Model outputs for the rows that score, in slices of ``batch_rows``, each packed
        into tensors just before the model runs on it (packing the whole chunk first left
        a 64 MB matrix for the mlp bench model to be read back from memory). A slice the
        model raises on is retried row by row; rows that still raise are rejected."""
        parts: list[Tensors] = []
        for start in range(0, len(rows), self.batch_rows):
            stop = min(start + self.batch_rows, len(rows))
            piece = cols.gather(values, slice(start, stop) if every_row else rows[start:stop],
                                self._buffers)
            try:
                parts.append(self._owned(self.runtime.predict(piece)))
            except Exception:  # noqa: BLE001 - find the offending rows below
                parts.extend(self._row_by_row(piece, rows[start:stop], rejects))
        if not parts:
            return {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _owned(self, outputs: Tensors) -> Tensors:
        """``outputs``, copying any that shares memory with the input buffers the next
        slice overwrites (a model may hand back its input)."""
        buffers = list(self._buffers.values())
        return {k: v.copy() if isinstance(v, np.ndarray) and
                any(np.may_share_memory(v, b) for b in buffers) else v
                for k, v in outputs.items()}

    def _row_by_row(self, piece: Tensors, rows: np.ndarray, rejects: cols.Rejects) -> list[Tensors]:
        parts = []
        failures = 0
        for i, row in enumerate(rows.tolist()):
            try:
                parts.append(self._owned(self.runtime.predict(
                    {k: v[i:i + 1] for k, v in piece.items()})))
            except Exception as exc:  # noqa: BLE001 - the reason goes to the rejects output
                failures += 1
                rejects.add([row], f"model error: {type(exc).__name__}: {exc}")
                if failures == len(rows) and failures >= 8:
                    raise  # every row fails: the model is broken, not the data
        return parts

    def _output(self, kept: pa.RecordBatch, outputs: Tensors) -> pa.Table:
        n = kept.num_rows
        schema = self.layout.output_schema
        arrays: list[pa.Array] = []
        for name in self.layout.keep:
            col = kept.column(name)
            if pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            want = schema.field(name).type
            if col.type != want:  # a chunk typed differently (SQLite's dynamic types)
                col = col.cast(want) if not pa.types.is_string(want) else _as_string(col)
            arrays.append(col)
        if n:
            arrays += cols.output_arrays(self.layout.outputs, outputs, n)
        else:
            arrays += [pa.array([], f.type) for f in cols.output_fields(self.layout.outputs)]
        arrays += self._meta.arrays(n)
        return pa.Table.from_arrays(arrays, schema=schema)

    def _rejects(self, batch: pa.RecordBatch, rejects: cols.Rejects) -> pa.Table:
        schema = self.layout.rejects_schema
        if rejects.ok.all():
            # Not schema.empty_table(): it imports pandas (~0.2 s in every worker process).
            return pa.Table.from_batches([], schema=schema)
        bad = np.flatnonzero(~rejects.ok)
        taken = batch.take(pa.array(bad))
        arrays = []
        for f in schema:
            if f.name == REASON:
                arrays.append(pa.array([rejects.reasons[i] for i in bad.tolist()], pa.string()))
            elif f.name == "run_id":
                arrays.append(pa.repeat(pa.scalar(self.run_id, pa.string()), len(bad)))
            else:
                col = taken.column(f.name)
                if pa.types.is_dictionary(col.type):
                    col = col.dictionary_decode()
                arrays.append(col if col.type == f.type else _as_string(col))
        return pa.Table.from_arrays(arrays, schema=schema)


class Meta:
    """The constant columns of a run (``model_version``, ``run_id``, ``scored_at``), built
    once and sliced per chunk (zero-copy). Results cross process boundaries without them
    (``strip``) and get them back on arrival (``restore``): they were over half the bytes
    a tabular chunk sent to the writer."""

    def __init__(self, version: int, run_id: str, scored_at: datetime) -> None:
        self.version, self.run_id = version, run_id
        self.micros = round(scored_at.timestamp() * 1_000_000)
        self._cache: list[pa.Array] = []

    def arrays(self, n: int) -> list[pa.Array]:
        if not self._cache or len(self._cache[0]) < n:
            self._cache = self._build(max(n, 65536))
        return [a.slice(0, n) for a in self._cache]

    def _build(self, n: int) -> list[pa.Array]:
        # From buffers, not pa.scalar/pa.repeat: any conversion from Python objects makes
        # pyarrow import pandas (~0.2 s in every worker process).
        text = self.run_id.encode()
        offsets = np.arange(n + 1, dtype=np.int32) * len(text)
        return [
            pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(
                np.full(n, self.version, np.int64))]),
            pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets),
                                                   pa.py_buffer(text * n)]),
            pa.Array.from_buffers(_META["scored_at"], n, [None, pa.py_buffer(
                np.full(n, self.micros, np.int64))]),
        ]

    @staticmethod
    def strip(result: ChunkResult) -> ChunkResult:
        assert result.output is not None  # noqa: S101 - stripped before it is stored
        result.output = result.output.drop_columns(list(_META))
        return result

    def restore(self, result: ChunkResult) -> ChunkResult:
        table = result.output
        if table is None:  # stored where it was scored, with its columns
            return result
        for name, array in zip(_META, self.arrays(table.num_rows), strict=True):
            table = table.append_column(pa.field(name, _META[name]), array)
        result.output = table
        return result


def _as_string(col: pa.Array) -> pa.Array:
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())
