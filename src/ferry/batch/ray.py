"""The Ray engine: the same job as the local engine, scored by an actor pool on Ray Data.

Pipeline: this process (the driver) plans the chunks exactly as the local engine does (so
chunk numbers, progress, resume and outputs are the same), turns them into a Ray Dataset of
Parquet *slices* (one block per chunk, a few bytes each), and runs ``map_batches`` with an
``ActorPoolStrategy`` of actors that each hold one ``ChunkScorer`` (the model loaded through
``ferry.batch.model``, ONNX Runtime with one intra-op thread). Each actor reads its own slice
(local path, or any fsspec URL the workers can reach) and returns the chunk's output and
rejects as Arrow IPC; the driver writes them, in chunk order, through the same sinks as the
local engine (atomic publish, database bulk loads, run records). Identical rows come out of
both engines for the same input; only ``run_id`` and ``scored_at`` differ between runs.

Promises: chunks are written in input order (``preserve_order``); a chunk is written once;
an error inside an actor fails the run with the actor's message, and the run can be resumed
with either engine. The engine reads Parquet inputs only: other formats are streamed by one
reader, which gives Ray nothing to spread.

``ray.init`` is called here unless Ray is already initialised (then the caller's instance is
used and left running): with ``address`` for an existing cluster (``auto``, ``ray://...``),
else a local instance with one CPU per core and no dashboard. Ray costs a fixed few seconds
to start (measured in docs/batch-scoring.md); it pays off on a cluster, not on one machine.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa

from ferry.batch.job import BatchError, BatchJob
from ferry.batch.model import ModelVersion
from ferry.batch.readers import ParquetSlice, Payload, SliceReader
from ferry.batch.scoring import ChunkResult, ChunkScorer, Layout, Meta
from ferry.batch.sinks.base import ChunkWriter

log = logging.getLogger("ferry.batch")


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library ships in the ray[data] extra
    except ImportError:
        raise BatchError("--engine ray needs Ray Data: pip install 'ferry[ray]'") from None
    return ray


def _build(job: BatchJob, model: ModelVersion, layout: Layout, run_id: str,
           scored_at: datetime) -> ChunkScorer:
    return ChunkScorer(job, model, layout, run_id, scored_at)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _unipc(data: bytes) -> pa.Table:
    with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
        return reader.read_all()


class _Actor:
    """One Ray actor: loads the model once, then scores slices."""

    def __init__(self, make: Callable[[], ChunkScorer], store: ChunkWriter | None) -> None:
        self.scorer = make()
        self.store = store
        self.reader = SliceReader(self.scorer.layout.read_columns)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {k: [] for k in (
            "chunk", "rows_in", "rows_out", "rows_rejected", "output", "rejects")}
        for chunk, path, group, offset, length in zip(
                batch["chunk"], batch["path"], batch["row_group"], batch["offset"],
                batch["length"], strict=True):
            piece = ParquetSlice(str(path), int(group), int(offset), int(length))
            result = self.scorer.score(int(chunk), self.reader.read(piece))
            if self.store is not None:  # written here; the driver gets counts only
                result = self.store(result)
            out["chunk"].append(result.chunk)
            out["rows_in"].append(result.rows_in)
            out["rows_out"].append(result.rows_out)
            out["rows_rejected"].append(result.rows_rejected)
            stored = result.stored
            out["output"].append(b"" if stored else _ipc(Meta.strip(result).output))
            out["rejects"].append(b"" if stored else _ipc(result.rejects))
        return out


def start(address: str | None, cpus: int | None = None) -> tuple[Any, bool]:
    """Ray, initialised; and whether this call started it (and should shut it down)."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray, False
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=cpus or os.cpu_count() or 1, include_dashboard=False,
                 logging_level=logging.WARNING)
    return ray, True


def run_on_ray(chunks: Iterator[tuple[int, Payload]], job: BatchJob, model: ModelVersion,
               layout: Layout, run_id: str, scored_at: datetime,
               written: Callable[[ChunkResult], None], address: str | None,
               store: ChunkWriter | None = None) -> float:
    """Score ``chunks`` (Parquet slices) on Ray and call ``written`` for each, in order.
    With ``store`` (a sink's chunk writer: folder outputs) the actors write the chunks
    themselves, so on a cluster the output folder must be on storage every node can write.
    Returns the seconds spent starting and stopping Ray (0 when it was already running)."""
    items = []
    for chunk, piece in chunks:
        if not isinstance(piece, ParquetSlice):
            raise BatchError("--engine ray reads Parquet inputs (files, folders, globs); "
                             "use --engine local for CSV, JSON Lines and database inputs")
        items.append({"chunk": chunk, "path": piece.path, "row_group": piece.row_group,
                      "offset": piece.offset, "length": piece.length})
    if not items:
        return 0.0
    clock = time.monotonic()
    ray, started = start(address, job.workers or None)
    fixed = time.monotonic() - clock
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = max(1, min(job.workers or cpus, len(items)))
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            _Actor, fn_constructor_args=(functools.partial(_build, job, model, layout, run_id,
                                                           scored_at), store),
            batch_size=1, batch_format="numpy", zero_copy_batch=True,
            compute=ray.data.ActorPoolStrategy(size=actors),
            # Less than a whole CPU each, so a pool as large as the cluster still leaves
            # Ray room for its own tasks (with 1.0 each a 2-CPU box was seen to hang).
            num_cpus=min(1.0, max(0.25, (cpus - 0.5) / actors)))
        meta = Meta(model.version, run_id, scored_at)
        expected = [item["chunk"] for item in items]
        pending: dict[int, ChunkResult] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow",
                                     prefetch_batches=2):
            for row in batch.to_pylist():
                pending[row["chunk"]] = meta.restore(ChunkResult(
                    row["chunk"], None, None, row["rows_in"], row["rows_out"],
                    row["rows_rejected"]) if store is not None else ChunkResult(
                    row["chunk"], _unipc(row["output"]), _unipc(row["rejects"]), row["rows_in"]))
            while expected and expected[0] in pending:
                written(pending.pop(expected.pop(0)))
        if expected:
            raise BatchError(f"Ray returned no result for chunk(s) {expected[:5]}")
    except BatchError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith("ray"):
            raise BatchError(f"the Ray job failed: {_ray_message(exc)}") from exc
        raise
    finally:
        if started:
            clock = time.monotonic()
            ray.shutdown()
            fixed += time.monotonic() - clock
    return fixed


def _ray_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
