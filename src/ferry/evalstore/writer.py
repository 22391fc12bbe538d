"""StoreWriter: records every inference off the request path, in batches.

Contract:

- ``observe(record)`` (an ``InferenceObserver``) runs on the event loop inside the request:
  it samples, then appends a reference to the record to a bounded deque. No I/O, no
  copies, no locks. When the deque is full (the database is far behind) the record is
  dropped, counted in ``ferry_evalstore_dropped{reason="buffer_full"}`` and logged.
- One background thread wakes every ``flush_interval_s`` (or when a batch is ready) and
  writes what is buffered as one ``prediction_batches`` row per model version
  (``evalstore.batches``) plus the per-request index, in one transaction.
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
from collections.abc import Callable

from sqlalchemy import Engine, delete, select

from ferry.evalstore.batches import Batch, build_batches, insert_batches
from ferry.evalstore.schema import open_engine, prediction_batches, prediction_index
from ferry.evalstore.spill import Spill
from ferry.monitoring.metrics import Metrics
from ferry.types import InferenceRecord

log = logging.getLogger("ferry.evalstore")


class StoreWriter:
    """The buffered, spilling writer of the ``prediction_batches`` table."""

    def __init__(self, url: str, spill: Spill, metrics: Metrics | None = None, *,
                 capacity: int = 100_000, batch_size: int = 4096, wake_at: int = 256,
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
        self.wake_at = min(wake_at, batch_size)
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
        if len(buffer) == self.wake_at:
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
            records = self._take()
            batches = build_batches(records)
            new = {(b.model, b.version) for b in batches} - self._known
            if new:
                self._known |= new
                if self.on_new_version is not None and up:
                    try:
                        self.on_new_version(new)
                    except Exception:
                        log.exception("evaluation store could not register %s", new)
            if up:
                try:
                    self._insert(batches)
                except Exception as exc:
                    self._down(exc)
                    up = False
            if not up:
                if self.spill.write(batches):
                    if self._metrics is not None:
                        self._metrics.store_spilled.inc(len(records))
                else:
                    self._drop(len(records), "spill_full")
            with self._lock:
                self._inflight = []
            if not up and not final and len(self._buffer) < self.batch_size:
                break
        if up and not final:
            self._retain()

    def _insert(self, batches: list[Batch]) -> None:
        """One transaction: the batch rows and their request index."""
        engine = self.engine
        if engine is None:
            raise ConnectionError("not connected")
        with engine.begin() as conn:
            insert_batches(conn, batches)
        records = sum(b.records for b in batches)
        self.written += records
        if self._metrics is not None:
            self._metrics.store_written.inc(records)

    def _replay(self) -> bool:
        for path in self.spill.files():
            batches = self.spill.read(path)
            try:
                if batches:
                    self._insert(batches)
            except Exception as exc:
                self._down(exc)
                return False
            self.spill.remove(path, batches)
            log.info("evaluation store: replayed %d spilled record(s) from %s",
                     sum(b.records for b in batches), path.name)
        return True

    def _retain(self) -> None:
        """Delete batches whose newest record is past retention (whole batches only: a
        batch straddling the cut-off stays until its last record is old enough)."""
        now = time.monotonic()
        if now < self._next_retention or (self.retention_days is None and not self.retention):
            return
        self._next_retention = now + 3600.0
        if self.engine is None:
            return
        wall = time.time()
        b = prediction_batches.c
        conditions = [[b.model == model, b.ts_max < wall - days * 86400]
                      for model, days in self.retention.items()]
        if self.retention_days is not None:
            where = [b.ts_max < wall - self.retention_days * 86400]
            if self.retention:
                where.append(b.model.notin_(list(self.retention)))
            conditions.append(where)
        with self.engine.begin() as conn:
            for where in conditions:
                old = select(b.id).where(*where)
                conn.execute(delete(prediction_index).where(
                    prediction_index.c.batch_id.in_(old)))
                conn.execute(delete(prediction_batches).where(*where))
