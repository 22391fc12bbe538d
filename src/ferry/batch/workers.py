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

A worker lives no longer than its parent wants it, even when the parent dies without a
handler running (SIGKILL, the OOM killer): it closes the parent's ends of every pipe it
inherited at the fork (its own and the workers' forked before it), so the parent's death
ends its pipe, and its receiving thread also checks every second that its parent is still
the process that forked it. Either way it exits at once (``os._exit``), even in the middle
of a chunk: no one is left to take the result, and the sink's staging is what a resume
trusts. Signals: a worker ignores SIGINT (a terminal's Ctrl-C reaches the whole process
group; the parent handles it and stops the workers) and dies of SIGTERM, quietly, which is
how the parent stops them (``terminate``). Both are blocked across the fork, so none
arrives at a worker before its own handlers are set.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_PARENT_CHECK_S = 1.0
"""How often a worker's receiving thread, while no message waits, checks its parent."""
_ORPHANED = 70
"""A worker's exit code when its parent is gone (nobody reads it: for ``ps`` and tracing)."""


def _main(conn: Connection, parent_ends: list[Connection], parent_pid: int,
          cpu: int | None, load: Callable[[], Runtime]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)  # blocked by the parent's fork
    for end in parent_ends:  # else the parent's death would not end this worker's pipe
        end.close()
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            pass
    pa.set_cpu_count(1)  # decoding a row group is this worker's job, on this worker's core
    inbox = _inbox(conn, parent_pid)
    try:
        runtime: Runtime | None = load()
        failed = None
    except Exception as exc:  # noqa: BLE001 - reported once the parent asks
        runtime, failed = None, exc
    try:
        make_scorer = _next(inbox)
        if make_scorer is None:
            return
        if failed is not None:
            raise failed
        scorer, columns, store = make_scorer(runtime)
        reader = SliceReader(columns)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        _reply(conn, ("init-error", None, f"{type(exc).__name__}: {exc}"))
        return
    _reply(conn, ("ready", None, None))
    while True:
        message = _next(inbox)
        if message is None:
            return
        chunk, payload = message
        try:
            result = scorer.score(chunk, reader.read(payload))
            # Store the chunk here when the sink allows it (the parent gets counts only),
            # else send the rows without the run-constant columns.
            reply = store(result) if store else result
            if not reply.stored:
                reply = Meta.strip(reply)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            _reply(conn, ("error", chunk, getattr(exc, "message", None) or
                          f"{type(exc).__name__}: {exc}"))
        else:
            _reply(conn, ("ok", chunk, reply))


def _next(inbox: queue.SimpleQueue[Any]) -> Any:
    message = inbox.get()
    if isinstance(message, BaseException):
        raise message  # as if from conn.recv() here: the worker dies, its chunks retried
    return message


def _reply(conn: Connection, message: tuple[str, int | None, Any]) -> None:
    try:
        conn.send(message)
    except OSError:  # the parent's end is closed: it is gone, or no longer wants this
        os._exit(_ORPHANED)


def _inbox(conn: Connection, parent_pid: int) -> queue.SimpleQueue[Any]:
    """The parent's messages, received on a thread: None at the end (the parent's None),
    an exception if receiving failed. Unbounded, yet it holds at most ``depth`` chunks: the
    parent never has more in flight to one worker (Parquet chunks are slices, read after
    they leave the inbox). When the parent's end of the pipe closes without a None, or the
    parent is no longer ``parent_pid``, the thread ends the process."""
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def receive() -> None:
        while True:
            try:
                while not conn.poll(_PARENT_CHECK_S):
                    if os.getppid() != parent_pid:
                        os._exit(_ORPHANED)
                message = conn.recv()
            except EOFError:
                os._exit(_ORPHANED)
            except BaseException as exc:  # noqa: BLE001 - raised by the scoring thread
                message = exc
            inbox.put(message)
            if message is None or isinstance(message, BaseException):
                return

    threading.Thread(target=receive, name="ferry-batch-inbox", daemon=True).start()
    return inbox


@contextmanager
def _signals_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM held back on this thread (a forked child starts with them held
    back, until ``_main`` has set its own handlers); delivered once the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
        self.workers: list[_Worker] = []
        for i in range(n):
            self.workers.append(self._start(i))

    def _start(self, i: int) -> _Worker:
        parent, child = self._ctx.Pipe()
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        cpu = cpus[i % len(cpus)] if self.pin and cpus else None
        # The parent's ends the child inherits: its own and those of the live workers.
        ends = [parent, *(w.conn for w in self.workers if not w.conn.closed)]
        process = self._ctx.Process(target=_main, args=(child, ends, os.getpid(), cpu,
                                                        self._load),
                                    daemon=True, name=f"ferry-batch-{i}")
        with _signals_blocked():
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
