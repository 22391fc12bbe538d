"""The Ray engine: the same job as the local engine, scored by a pool of Ray actors.

The driver (this process) plans the chunks exactly as the local engine does (so chunk
numbers, progress, resume and outputs are the same). Each actor holds one ``ChunkScorer``
(the model loaded through ``ferry.lifecycle.loader``, ONNX Runtime with one intra-op thread) and
returns each chunk's output and rejects as Arrow IPC; the driver writes them, in chunk
order, through the same sinks as the local engine (atomic publish, database bulk loads, run
records). Identical rows come out of both engines for the same input; only ``run_id`` and
``scored_at`` differ between runs. Chunks reach the actors in one of two ways:

- **Parquet** (files, folders, globs, fsspec URLs): a Ray Dataset of Parquet *slices* (one
  block per chunk, a few bytes each) goes through ``map_batches`` with an
  ``ActorPoolStrategy``; each actor reads its own slices, so reading is spread too.
- **Streams** (CSV, JSON Lines, SQL tables): these have one reader, Ferry's own, in the
  driver (the chunks, their types and the rejects are the local engine's). Each chunk's
  record batch goes to an actor as Arrow IPC bytes (through Ray's object store), so Ray
  spreads the scoring only. The driver keeps at most ``_DEPTH`` chunks per actor in flight
  and at most twice that read but not yet written, so memory stays bounded however large
  the input. Actors are created directly (``ray.remote``) and fed from a loop around
  ``ray.wait``: Ray Data has no clean way to stream a driver-side iterator into a Dataset
  (``from_items`` and ``from_arrow`` need every chunk up front; a ``Datasource`` reads in
  the workers, not here), and ``ray.util.ActorPool.map`` submits every value at once (the
  whole file would be read before the first result is written) with one task per actor.
  An actor that dies (native crash, OOM kill) is restarted once and its chunks retried.

Promises: chunks are written in input order; a chunk is written once; an error inside an
actor fails the run with the actor's message, and the run can be resumed with either engine.

``ray.init`` is called here unless Ray is already initialised (then the caller's instance is
used and left running): with ``address`` for an existing cluster (``auto``, ``ray://...``),
else a local instance with one CPU per core and no dashboard. Ray costs a fixed few seconds
to start (measured in docs/batch-scoring.md); it pays off on a cluster, not on one machine.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa

from ferry.batch.job import BatchError, BatchJob
from ferry._extras import require
from ferry.lifecycle.loader import CheckedVersion
from ferry.batch.readers import ParquetSlice, Payload, SliceReader
from ferry.batch.scoring import ChunkResult, ChunkScorer, Layout, Meta
from ferry.batch.sinks.base import ChunkWriter

log = logging.getLogger("ferry.batch")

_DEPTH = 2
"""Stream inputs: chunks in flight per actor (one scoring, one queued behind it, so an
actor does not wait while the driver reads the next chunk or writes a result)."""

Reply = tuple[int, int, int, int, bytes, bytes]
"""What an actor returns per chunk: ``(chunk, rows_in, rows_out, rows_rejected, output,
rejects)``, the tables as Arrow IPC (empty bytes when the actor stored the chunk itself)."""


def _import_ray() -> Any:
    require("ray.data", "--engine ray")  # the Data library ships in the ray[data] extra
    import ray

    return ray


def _build(job: BatchJob, model: CheckedVersion, layout: Layout, run_id: str,
           scored_at: datetime) -> ChunkScorer:
    return ChunkScorer(job, model, layout, run_id, scored_at)


def _ipc(data: pa.Table | pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write(data)
    return sink.getvalue().to_pybytes()


def _unipc(data: bytes) -> pa.Table:
    with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
        return reader.read_all()


def _unipc_batch(data: bytes) -> pa.RecordBatch:
    with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
        return reader.read_next_batch()


class _Actor:
    """One Ray actor: loads the model once, then scores chunks (Parquet slices it reads
    itself through ``__call__``, or record batches sent by the driver through ``score``)."""

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
            reply = self._score(int(chunk), self.reader.read(piece))
            for key, value in zip(out, reply, strict=True):
                out[key].append(value)
        return out

    def score(self, chunk: int, data: bytes) -> Reply:
        """Score one chunk sent by the driver as an Arrow IPC stream of one record batch."""
        return self._score(chunk, _unipc_batch(data))

    def _score(self, chunk: int, batch: pa.RecordBatch) -> Reply:
        result = self.scorer.score(chunk, batch)
        if self.store is not None:  # written here; the driver gets counts only
            result = self.store(result)
        if result.stored:
            return (result.chunk, result.rows_in, result.rows_out, result.rows_rejected,
                    b"", b"")
        assert result.rejects is not None  # noqa: S101 - not stored, so both tables are here
        return (result.chunk, result.rows_in, result.rows_out, result.rows_rejected,
                _ipc(Meta.strip(result).output), _ipc(result.rejects))


def _result(meta: Meta, reply: Reply) -> ChunkResult:
    """A chunk's result in the driver, with the run-constant columns put back."""
    chunk, rows_in, rows_out, rows_rejected, output, rejects = reply
    if not output:  # stored by the actor
        return ChunkResult(chunk, None, None, rows_in, rows_out, rows_rejected)
    return meta.restore(ChunkResult(chunk, _unipc(output), _unipc(rejects), rows_in))


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


def run_on_ray(chunks: Iterator[tuple[int, Payload]], job: BatchJob, model: CheckedVersion,
               layout: Layout, run_id: str, scored_at: datetime,
               written: Callable[[ChunkResult], None], address: str | None,
               store: ChunkWriter | None = None) -> float:
    """Score ``chunks`` on Ray and call ``written`` for each, in order: Parquet slices
    through Ray Data, record batches (stream inputs) through actors fed by this process.
    With ``store`` (a sink's chunk writer: folder outputs) the actors write the chunks
    themselves, so on a cluster the output folder must be on storage every node can write.
    Returns the seconds spent starting and stopping Ray (0 when it was already running)."""
    first = next(chunks, None)
    if first is None:
        return 0.0
    chunks = itertools.chain([first], chunks)
    items = _slices(chunks) if isinstance(first[1], ParquetSlice) else None
    clock = time.monotonic()
    ray, started = start(address, job.workers or None)
    fixed = time.monotonic() - clock
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = max(1, min(job.workers or cpus, len(items) if items is not None else cpus))
        # Less than a whole CPU each, so a pool as large as the cluster still leaves
        # Ray room for its own tasks (with 1.0 each a 2-CPU box was seen to hang).
        num_cpus = min(1.0, max(0.25, (cpus - 0.5) / actors))
        make = functools.partial(_build, job, model, layout, run_id, scored_at)
        meta = Meta(model.version, run_id, scored_at)
        if items is not None:
            _run_slices(ray, items, make, store, actors, num_cpus, meta, written)
        else:
            _run_stream(ray, chunks, make, store, actors, num_cpus, meta, written)
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


def _slices(chunks: Iterator[tuple[int, Payload]]) -> list[dict[str, Any]]:
    """The Parquet chunks as Ray Dataset items (a few bytes each)."""
    items = []
    for chunk, piece in chunks:
        if not isinstance(piece, ParquetSlice):
            raise BatchError(f"chunk {chunk} of a Parquet input is not a Parquet slice")
        items.append({"chunk": chunk, "path": piece.path, "row_group": piece.row_group,
                      "offset": piece.offset, "length": piece.length})
    return items


def _run_slices(ray: Any, items: list[dict[str, Any]], make: Callable[[], ChunkScorer],
                store: ChunkWriter | None, actors: int, num_cpus: float, meta: Meta,
                written: Callable[[ChunkResult], None]) -> None:
    """Parquet: Ray Data, one block per slice, an actor pool reading its own slices."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        _Actor, fn_constructor_args=(make, store),
        batch_size=1, batch_format="numpy", zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=num_cpus)
    expected = deque(item["chunk"] for item in items)
    pending: dict[int, ChunkResult] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow",
                                 prefetch_batches=2):
        for row in batch.to_pylist():
            pending[row["chunk"]] = _result(meta, (
                row["chunk"], row["rows_in"], row["rows_out"], row["rows_rejected"],
                row["output"], row["rejects"]))
        while expected and expected[0] in pending:
            written(pending.pop(expected.popleft()))
    if expected:
        raise BatchError(f"Ray returned no result for chunk(s) {list(expected)[:5]}")


def _run_stream(ray: Any, chunks: Iterator[tuple[int, Payload]],
                make: Callable[[], ChunkScorer], store: ChunkWriter | None, actors: int,
                num_cpus: float, meta: Meta, written: Callable[[ChunkResult], None]) -> None:
    """Stream inputs: this process reads the chunks and feeds them to ``actors`` actors,
    at most ``_DEPTH`` each in flight and ``2 * _DEPTH`` each read but not yet written."""
    cls = ray.remote(_Actor).options(num_cpus=num_cpus, max_restarts=1, max_task_retries=1)
    pool = [cls.remote(make, store) for _ in range(actors)]
    busy = [0] * actors  # chunks in flight per actor
    inflight: dict[Any, tuple[int, int]] = {}  # ObjectRef -> (chunk, actor)
    order: deque[int] = deque()  # chunks sent and not yet written, in input order
    done: dict[int, ChunkResult] = {}
    exhausted = False
    try:
        while True:
            while (not exhausted and len(inflight) < actors * _DEPTH
                   and len(order) < actors * _DEPTH * 2):
                item = next(chunks, None)
                if item is None:
                    exhausted = True
                    break
                chunk, batch = item
                if not isinstance(batch, pa.RecordBatch):
                    raise BatchError(f"chunk {chunk} of a stream input is not a record batch")
                i = min(range(actors), key=busy.__getitem__)
                inflight[pool[i].score.remote(chunk, _ipc(batch))] = (chunk, i)
                busy[i] += 1
                order.append(chunk)
            if not order:
                return
            if inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    chunk, i = inflight.pop(ref)
                    busy[i] -= 1
                    try:
                        reply = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # raised by the scoring
                        raise BatchError(f"the Ray job failed on chunk {chunk}: "
                                         f"{_ray_message(exc)}") from exc
                    done[chunk] = _result(meta, reply)
            while order and order[0] in done:
                written(done.pop(order.popleft()))
    finally:
        for actor in pool:
            ray.kill(actor)


def _ray_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
