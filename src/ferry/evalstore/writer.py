"""StoreWriter: records every inference off the request path, in batches.

Contract:

- ``observe(record)`` (an ``InferenceObserver``) runs on the event loop inside the request:
  it samples, then appends a reference to the record to a bounded deque. No I/O, no
  copies, no locks. When the deque is full (the database is far behind) the record is
  dropped, counted in ``ferry_evalstore_dropped{reason="buffer_full"}`` and logged.
- One background thread wakes every ``flush_interval_s`` (or when a batch is ready),
  encodes records (``codec``) and inserts them with one ``executemany`` per batch.
- Database down: batches go to the on-disk ``Spill`` and are replayed, oldest first, once a
  retry succeeds (every ``retry_s``). Spill full: rows are dropped, counted
  (``reason="spill_full"``) and logged. Never silent.
- ``stop()`` flushes everything: into the database, or into the spill when it is down.
- SIGKILL loses at most what is buffered and not yet written: about ``flush_interval_s``
  worth of traffic plus one batch in flight (``batch_size`` records), never more than
  ``capacity`` records.

``pending(request_id)`` tells the feedback path whether a record is still on its way
(buffered, being written, or spilled); once it returns False the row is committed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from itertools import chain, repeat
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, delete

from ferry.evalstore import codec
from ferry.evalstore.schema import open_engine, predictions
from ferry.evalstore.spill import Spill
from ferry.monitoring.metrics import Metrics
from ferry.types import InferenceRecord

log = logging.getLogger("ferry.evalstore")


COLUMNS = ("request_id", "ts", "model", "version", "endpoint", "outcome", "error",
           "latency_ms", "rows", "inputs", "outputs")
"""The columns ``record_row`` fills, in the order of ``record_tuple``."""

_CHUNK = 256
"""Rows per multi-row INSERT on SQLite (11 columns x 256 = 2,816 parameters, well under
SQLite's limit of 32,766)."""


def record_tuple(record: InferenceRecord) -> tuple[Any, ...]:
    """The database row of one record as a tuple in ``COLUMNS`` order (the fast path)."""
    inputs = record.inputs
    first = next(iter(inputs.values()), None)
    rows = int(first.shape[0]) if first is not None and first.ndim else 1
    outputs = record.outputs
    return (record.request_id or "", record.timestamp, record.model, record.version,
            record.endpoint, record.outcome, record.error, record.latency_s * 1000.0, rows,
            codec.encode(inputs), None if outputs is None else codec.encode(outputs))


def record_tuples(records: list[InferenceRecord]) -> list[tuple[Any, ...]]:
    """``[record_tuple(r) for r in records]`` (same rows, grouped by model version and
    outcome kind), with each group's inputs and outputs encoded together
    (``codec.encode_many``): this is the writer's per-flush hot path."""
    groups: dict[tuple[str, int, bool], list[InferenceRecord]] = {}
    for r in records:
        key = (r.model, r.version, r.outputs is None)
        group = groups.get(key)
        if group is None:
            groups[key] = [r]
        else:
            group.append(r)
    out: list[tuple[Any, ...]] = []
    for (model, version, failed), group in groups.items():
        inputs = codec.encode_alike([r.inputs for r in group])
        outputs = None if failed else codec.encode_alike(
            [r.outputs for r in group if r.outputs is not None])
        if inputs is None or (outputs is None and not failed):
            out.extend(map(record_tuple, group))
            continue
        first = next(iter(group[0].inputs.values()), None)
        rows = int(first.shape[0]) if first is not None and first.ndim else 1
        out.extend(zip([r.request_id or "" for r in group], [r.timestamp for r in group],
                       repeat(model), repeat(version), [r.endpoint for r in group],
                       [r.outcome for r in group], [r.error for r in group],
                       [r.latency_s * 1000.0 for r in group], repeat(rows), inputs,
                       repeat(None) if failed else outputs))
    return out


def record_row(record: InferenceRecord) -> dict[str, Any]:
    """The database row of one record."""
    first = next(iter(record.inputs.values()), None)
    rows = int(first.shape[0]) if first is not None and getattr(first, "ndim", 0) else 1
    return {
        "request_id": record.request_id or "",
        "ts": record.timestamp,
        "model": record.model,
        "version": record.version,
        "endpoint": record.endpoint,
        "outcome": record.outcome,
        "error": record.error,
        "latency_ms": record.latency_s * 1000.0,
        "rows": rows,
        "inputs": codec.encode(record.inputs),
        "outputs": None if record.outputs is None else codec.encode(record.outputs),
    }


class StoreWriter:
    """The buffered, spilling writer of the ``predictions`` table."""

    def __init__(self, url: str, spill: Spill, metrics: Metrics | None = None, *,
                 capacity: int = 100_000, batch_size: int = 4096,
                 flush_interval_s: float = 0.2, retry_s: float = 2.0,
                 sample_rate: float = 1.0, sample_rates: dict[str, float] | None = None,
                 retention_days: float | None = None,
                 retention: dict[str, float] | None = None,
                 on_connect: Callable[[Engine], None] | None = None,
                 on_new_version: Callable[[set[tuple[str, int]]], None] | None = None
                 ) -> None:
        self.url = url
        self.spill = spill
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_s = retry_s
        self.sample_rate = sample_rate
        self.sample_rates = dict(sample_rates or {})
        self.retention_days = retention_days
        self.retention = dict(retention or {})
        self.on_connect = on_connect
        self.on_new_version = on_new_version
        self._known: set[tuple[str, int]] = set()
        self.engine: Engine | None = None
        self.last_error: str | None = None
        self._buffer: deque[InferenceRecord] = deque()
        self._inflight: list[InferenceRecord] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._next_retry = 0.0
        self._next_retention = 0.0
        self._last_drop_log = 0.0
        self._metrics = metrics
        self.dropped = 0
        self.written = 0
        if metrics is not None:
            metrics.store_buffered.set_function(lambda: len(self._buffer))
            metrics.store_spill_bytes.set_function(lambda: self.spill.size_bytes)
            metrics.store_up.set_function(lambda: 1.0 if self.engine is not None else 0.0)

    # -- request path --------------------------------------------------------------------
    def observe(self, record: InferenceRecord) -> None:
        rate = self.sample_rates.get(record.model, self.sample_rate) if self.sample_rates \
            else self.sample_rate
        if rate < 1.0 and random.random() >= rate:
            return
        buffer = self._buffer
        if len(buffer) >= self.capacity:
            self._drop(1, "buffer_full")
            return
        buffer.append(record)
        if len(buffer) == self.batch_size:
            self._wake.set()

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        if self._metrics is not None:
            self._metrics.store_dropped.labels(reason).inc(count)
        now = time.monotonic()
        if now - self._last_drop_log > 5.0:
            self._last_drop_log = now
            log.error("evaluation store dropped %d record(s) (%s); %d dropped since start",
                      count, reason, self.dropped)

    # -- feedback path -------------------------------------------------------------------
    def pending(self, request_id: str) -> bool:
        """True while the record of ``request_id`` is buffered, being written or spilled."""
        with self._lock:
            if any(r.request_id == request_id for r in self._inflight) or any(
                    r.request_id == request_id for r in list(self._buffer)):
                return True
        return self.spill.contains(request_id)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Connect (once, synchronously, so the store is usable when the server listens;
        a failure only means spilling until a retry succeeds) and start the thread."""
        self._connect()
        self._thread = threading.Thread(target=self._run, name="ferry-evalstore",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Flush everything (to the database, else the spill) and stop the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.engine is not None:
            self.engine.dispose()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the buffer is written (tests, exports); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._buffer and not self._inflight:
                return True
            self._wake.set()
            time.sleep(0.01)
        return False

    # -- writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._cycle(final=stopping)
            except Exception:  # never let the thread die: log and keep going
                log.exception("evaluation store writer failed")
                time.sleep(0.5)
            if stopping and not self._buffer:
                return

    def _connect(self) -> bool:
        if self.engine is not None:
            return True
        if time.monotonic() < self._next_retry:
            return False
        try:
            self.engine = open_engine(self.url)
        except Exception as exc:
            self._down(exc)
            return False
        log.info("evaluation store connected: %s", self.engine.url.render_as_string())
        self.last_error = None
        if self.on_connect is not None:
            try:
                self.on_connect(self.engine)
            except Exception:
                log.exception("evaluation store on_connect hook failed")
        return True

    def _down(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if self.last_error != message:
            log.error("evaluation store unavailable, spilling to %s: %s", self.spill.folder,
                      message)
        self.last_error = message
        self._next_retry = time.monotonic() + self.retry_s
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    def _take(self) -> list[InferenceRecord]:
        with self._lock:
            popleft = self._buffer.popleft
            batch = self._inflight = [popleft() for _ in range(min(self.batch_size,
                                                                   len(self._buffer)))]
        return batch

    def _cycle(self, final: bool = False) -> None:
        up = self._connect()
        if up and self.spill.files():
            up = self._replay()
        while self._buffer:
            batch = self._take()
            rows = record_tuples(batch)
            new = {(r[2], r[3]) for r in rows} - self._known
            if new:
                self._known |= new
                if self.on_new_version is not None and up:
                    try:
                        self.on_new_version(new)
                    except Exception:
                        log.exception("evaluation store could not register %s", new)
            if up:
                try:
                    self._insert(rows)
                except Exception as exc:
                    self._down(exc)
                    up = False
            if not up:
                if self.spill.write(rows):
                    if self._metrics is not None:
                        self._metrics.store_spilled.inc(len(rows))
                else:
                    self._drop(len(rows), "spill_full")
            with self._lock:
                self._inflight = []
            if not up and not final and len(self._buffer) < self.batch_size:
                break
        if up and not final:
            self._retain()

    def _insert(self, rows: list[Any]) -> None:
        engine = self.engine
        if engine is None:
            raise ConnectionError("not connected")
        if rows and isinstance(rows[0], dict):
            rows = [tuple(r[c] for c in COLUMNS) for r in rows]
        sqlite = engine.dialect.name == "sqlite"
        marker = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        one = f"({', '.join([marker] * len(COLUMNS))})"
        sql = f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES "
        # the DBAPI's own executemany: SQLAlchemy's per-row parameter processing would cost
        # about a third of the insert on this hot path. On SQLite, chunks of _CHUNK rows go
        # as one multi-row INSERT: one statement step per chunk instead of per row (each
        # step releases and retakes the GIL, which the serving thread is waiting for)
        with engine.begin() as conn:
            cursor = conn.connection.cursor()
            try:
                done = 0
                if sqlite and len(rows) >= _CHUNK:
                    multi = sql + ",".join([one] * _CHUNK)
                    done = len(rows) - len(rows) % _CHUNK
                    for start in range(0, done, _CHUNK):
                        cursor.execute(multi, list(chain.from_iterable(
                            rows[start:start + _CHUNK])))
                if done < len(rows):
                    cursor.executemany(sql + one, rows[done:] if done else rows)
            finally:
                cursor.close()
        self.written += len(rows)
        if self._metrics is not None:
            self._metrics.store_written.inc(len(rows))

    def _replay(self) -> bool:
        for path in self.spill.files():
            rows = self.spill.read(path)
            try:
                if rows:
                    self._insert(rows)
            except Exception as exc:
                self._down(exc)
                return False
            self.spill.remove(path, rows)
            log.info("evaluation store: replayed %d spilled record(s) from %s", len(rows),
                     path.name)
        return True

    def _retain(self) -> None:
        now = time.monotonic()
        if now < self._next_retention or (self.retention_days is None and not self.retention):
            return
        self._next_retention = now + 3600.0
        if self.engine is None:
            return
        wall = time.time()
        with self.engine.begin() as conn:
            for model, days in self.retention.items():
                conn.execute(delete(predictions).where(predictions.c.model == model,
                                                       predictions.c.ts < wall - days * 86400))
            if self.retention_days is not None:
                where = [predictions.c.ts < wall - self.retention_days * 86400]
                if self.retention:
                    where.append(predictions.c.model.notin_(list(self.retention)))
                conn.execute(delete(predictions).where(*where))
