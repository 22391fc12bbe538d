"""``WorkerPool``: N scoring processes, each holding one ``ChunkScorer``.

Promises: chunks are handed to the least-loaded worker, at most ``depth`` in flight per
worker; Parquet chunks travel as slices (the worker reads them), other chunks as Arrow
record batches. When a worker dies (a crash in native code, the OOM killer) its chunks are
given to a new worker once; a chunk whose second attempt also kills its worker raises
``WorkerCrashed``. An exception inside a worker's scoring is not a crash: it is returned
and fails the run with the worker's message.

Workers are forked before the parent loads the model or reads data (a library's threads
must not be live at fork time: OpenMP, Arrow's pools) and each loads the model at once, while
the parent sets the run up, then waits for the rest of its scorer (``start``). Each runs
the runtime with one intra-op thread and sizes Arrow's CPU pool to one thread, so N workers
use N cores without oversubscription.

A worker takes the parent's messages on a thread of its own (``_inbox``), so it keeps
receiving while it is blocked sending a result: CSV, JSON Lines and database chunks travel
as rows, megabytes each way, and a worker that only read between chunks left the parent
blocked sending it the next chunk while the worker was blocked sending its result, which
the parent drains only between sends (a deadlock once both exceeded the pipe's buffer:
~200 KiB each way).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import pyarrow as pa

from ferry.batch.job import BatchError
from ferry.batch.readers import Payload, SliceReader
from ferry.batch.scoring import ChunkResult, Meta
from ferry.runtimes.base import Runtime


class WorkerCrashed(BatchError):
    """A worker process died twice on the same chunk."""

    http_status = 500


class WorkerError(BatchError):
    """Scoring raised inside a worker."""

    http_status = 500


@dataclass
class _Worker:
    process: Any
    conn: Connection
    inflight: deque[tuple[int, Payload]]


def _main(conn: Connection, cpu: int | None, load: Callable[[], Runtime]) -> None:
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            pass
    pa.set_cpu_count(1)  # decoding a row group is this worker's job, on this worker's core
    try:
        runtime: Runtime | None = load()
        failed = None
    except Exception as exc:  # noqa: BLE001 - reported once the parent asks
        runtime, failed = None, exc
    try:
        make_scorer = conn.recv()
        if failed is not None:
            raise failed
        scorer, columns, store = make_scorer(runtime)
        reader = SliceReader(columns)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("init-error", None, f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None, None))
    inbox = _inbox(conn)
    while True:
        message = inbox.get()
        if message is None:
            return
        if isinstance(message, BaseException):
            raise message  # as if from conn.recv() here: the worker dies, its chunks retried
        chunk, payload = message
        try:
            result = scorer.score(chunk, reader.read(payload))
            # Store the chunk here when the sink allows it (the parent gets counts only),
            # else send the rows without the run-constant columns.
            reply = store(result) if store else result
            if not reply.stored:
                reply = Meta.strip(reply)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            conn.send(("error", chunk, getattr(exc, "message", None) or
                       f"{type(exc).__name__}: {exc}"))
        else:
            conn.send(("ok", chunk, reply))


def _inbox(conn: Connection) -> queue.SimpleQueue[Any]:
    """The parent's messages, received on a thread: None at the end (the parent's None, or
    its end of the pipe closed), an exception if receiving failed. Unbounded, yet it holds
    at most ``depth`` chunks: the parent never has more in flight to one worker (Parquet
    chunks are slices, read after they leave the inbox)."""
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def receive() -> None:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                message = None
            except BaseException as exc:  # noqa: BLE001 - raised by the scoring thread
                message = exc
            inbox.put(message)
            if message is None or isinstance(message, BaseException):
                return

    threading.Thread(target=receive, name="ferry-batch-inbox", daemon=True).start()
    return inbox


class WorkerPool:
    """Forks ``n`` workers that each call ``load()`` for their runtime at once; ``start``
    then hands them the rest of their scorer."""

    def __init__(self, n: int, load: Callable[[], Runtime], depth: int = 2,
                 pin: bool = False) -> None:
        self.n, self.depth, self.pin = n, depth, pin
        self._ctx = mp.get_context("fork")
        self._load = load
        self._make_scorer: Callable[[Runtime], Any] | None = None
        self._attempts: dict[int, int] = {}
        self._stopped = False
        self._failure: BatchError | None = None
        self.restarts = 0
        self.workers = [self._start(i) for i in range(n)]

    def _start(self, i: int) -> _Worker:
        parent, child = self._ctx.Pipe()
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        cpu = cpus[i % len(cpus)] if self.pin and cpus else None
        process = self._ctx.Process(target=_main, args=(child, cpu, self._load), daemon=True,
                                    name=f"ferry-batch-{i}")
        process.start()
        child.close()
        worker = _Worker(process, parent, deque())
        if self._make_scorer is not None:
            self._init(worker)
        return worker

    def _init(self, worker: _Worker) -> None:
        worker.conn.send(self._make_scorer)

    def start(self, make_scorer: Callable[[Runtime], Any]) -> None:
        """Send each worker the picklable ``make_scorer`` (called with the worker's runtime;
        returns ``(scorer, columns, chunk_writer or None)``) and wait until every worker
        has its scorer."""
        self._make_scorer = make_scorer
        for w in self.workers:
            self._init(w)
        for w in self.workers:
            kind, _, error = self._recv(w)
            if kind != "ready":
                raise WorkerError(f"a worker could not load the model: {error}")

    def _recv(self, w: _Worker) -> Any:
        try:
            return w.conn.recv()
        except (EOFError, OSError):
            raise WorkerCrashed(f"worker {w.process.name} died while loading the model "
                                f"(exit code {w.process.exitcode})") from None

    @property
    def inflight(self) -> int:
        return sum(len(w.inflight) for w in self.workers)

    def has_room(self) -> bool:
        return self.inflight < self.n * self.depth

    def submit(self, chunk: int, payload: Payload) -> None:
        self._send(min(self.workers, key=lambda w: len(w.inflight)), chunk, payload)

    @staticmethod
    def _send(worker: _Worker, chunk: int, payload: Payload) -> None:
        worker.inflight.append((chunk, payload))
        try:
            worker.conn.send((chunk, payload))
        except OSError:  # it just died: results() sees it and retries what it had in flight
            pass

    def results(self, timeout: float | None = None) -> list[ChunkResult]:
        """Wait for finished chunks (any order); handles dead workers as promised above.
        A failure (``WorkerError``, ``WorkerCrashed``) is raised once the results that
        arrived with it have been returned, so the chunks finished before it are saved."""
        if self._failure is not None:
            raise self._failure
        ready = wait([w.conn for w in self.workers if w.inflight]
                     + [w.process.sentinel for w in self.workers if w.inflight], timeout)
        out: list[ChunkResult] = []
        for i, w in enumerate(list(self.workers)):
            try:
                self._collect(i, w, ready, out)
            except BatchError as exc:
                self._failure = self._failure or exc
        if self._failure is not None and not out:
            raise self._failure
        return out

    def _collect(self, i: int, w: _Worker, ready: list[Any], out: list[ChunkResult]) -> None:
        dead = w.process.sentinel in ready
        if w.conn in ready or dead:
            try:
                while w.conn.poll():
                    kind, chunk, value = w.conn.recv()
                    w.inflight.popleft()
                    if kind == "error":
                        raise WorkerError(f"chunk {chunk}: {value}")
                    out.append(value)
            except (EOFError, OSError):
                dead = True  # it died; what it had in flight is handled below
        if dead or not w.process.is_alive():
            self._replace(i, w)

    def _replace(self, i: int, dead: _Worker) -> None:
        dead.process.join(1)
        code = dead.process.exitcode
        lost = list(dead.inflight)
        for chunk, _ in lost:
            self._attempts[chunk] = self._attempts.get(chunk, 1) + 1
            if self._attempts[chunk] > 2:
                raise WorkerCrashed(f"a worker died twice scoring chunk {chunk} (exit code "
                                    f"{code}); the run stops here and can be resumed")
        self.restarts += 1
        dead.conn.close()
        fresh = self._start(i)
        kind, _, error = self._recv(fresh)
        if kind != "ready":
            raise WorkerError(f"a restarted worker could not load the model: {error}")
        self.workers[i] = fresh
        for chunk, payload in lost:  # if one kills it at once, the next results() sees it
            self._send(fresh, chunk, payload)

    def stop(self) -> None:
        """Tell every worker to exit once its queue is done (no waiting): called when the
        last result is in, so workers exit while the run publishes."""
        if self._stopped:
            return
        self._stopped = True
        for w in self.workers:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        self.stop()
        for w in self.workers:
            w.process.join(2)
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(2)
            w.conn.close()

    def terminate(self) -> None:
        for w in self.workers:
            if w.process.is_alive():
                w.process.terminate()
        for w in self.workers:
            w.process.join(2)
            w.conn.close()
