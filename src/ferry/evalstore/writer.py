"""StoreWriter: records every inference off the request path, in batches.

Contract:

- ``observe(record)`` (an ``InferenceObserver``) runs on the event loop inside the request:
  it samples, then appends to a deque either the record or, for a request that ran in a
  batch of several, a ``Slot`` naming that batch and the request's place in it
  (``batches.slot_of``), so the request's own dicts and arrays are freed with the request.
  No I/O, no copies, no locks, no thread wake-up (~0.25 µs). When ``capacity`` records are
  held (the database is far behind) the record is dropped, counted in
  ``ferry_evalstore_dropped{reason="buffer_full"}`` and logged.
- One background thread wakes every ``flush_interval_s``. It packs what the deque holds
  (``batches.pack``: per tensor, the records' arrays joined into one buffer; ids, times
  and latencies as arrays), in chunks of ``PACK_CHUNK`` records with the GIL let go
  between chunks, then writes one ``prediction_batches`` row per model version (at most
  ``batch_size`` records each) and the request index of ids that need one, in one
  transaction.
- Database down: batches go to the on-disk ``Spill`` and are replayed, oldest first, once a
  retry succeeds (every ``retry_s``). Spill full: records are dropped, counted
  (``reason="spill_full"``) and logged. Never silent.
- ``stop()`` flushes everything: into the database, or into the spill when it is down.
- SIGKILL loses at most what is held and not yet written: the records of the last
  ``flush_interval_s`` plus the flush in progress, never more than ``capacity`` records.

``pending_of(ids)`` tells the feedback path which records are still on their way
(buffered, packed, being written, or spilled); once an id is not pending its row is
committed. Thread-safety: ``observe`` appends to a deque (atomic under the GIL);
everything that moves records between the deque, the packed parts and the flush in
progress holds ``_lock``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable

from sqlalchemy import Engine, delete, select

from ferry.evalstore.batches import (
    Batch,
    Part,
    Slot,
    assemble,
    insert_batches,
    pack,
    request_id_of,
    slot_of,
)
from ferry.evalstore.schema import open_engine, prediction_batches, prediction_index
from ferry.evalstore.spill import Spill
from ferry.monitoring.metrics import Metrics
from ferry.types import InferenceRecord

log = logging.getLogger("ferry.evalstore")

PACK_CHUNK = 512
"""Records packed per step of a flush; the writer lets go of the GIL between steps, so a
flush of thousands of records never holds up requests for more than ~1 ms at a time."""


class StoreWriter:
    """The buffered, spilling writer of the ``prediction_batches`` table."""

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
        self.sample_rates: dict[str, float] = {}
        self._sampling = False
        self.retention_days = retention_days
        self.retention: dict[str, float] = {}
        self.set_model_policies(sample_rates or {}, retention or {})
        self.on_connect = on_connect
        self.on_new_version = on_new_version
        self._known: set[tuple[str, int]] = set()
        self.engine: Engine | None = None
        self.last_error: str | None = None
        self._buffer: deque[InferenceRecord | Slot] = deque()
        """Observed, not yet packed (appended by ``observe`` without a lock); a request
        that ran in a batch of several is held as a ``Slot`` (``batches.slot_of``)."""
        self._parts: list[Part] = []
        """Packed, waiting for the next flush."""
        self._inflight: list[Part] = []
        """Being written (or spilled) by the writer thread."""
        self._held = 0
        """Records in ``_parts`` and ``_inflight``; counted before they leave the deque, so
        ``len(_buffer) + _held`` never undercounts (the ``capacity`` check)."""
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
            metrics.store_buffered.set_function(lambda: self.buffered)
            metrics.store_spill_bytes.set_function(lambda: self.spill.size_bytes)
            metrics.store_up.set_function(lambda: 1.0 if self.engine is not None else 0.0)

    def set_model_policies(self, sample_rates: dict[str, float],
                           retention: dict[str, float]) -> None:
        """Per-model sample rates and retention days (models not named use the server's
        ``sample_rate`` / ``retention_days``). The request path reads the new dicts from
        the next request on; retention applies at its next hourly pass."""
        rates = dict(sample_rates)
        self._sampling = self.sample_rate < 1.0 or any(r < 1.0 for r in rates.values())
        self.sample_rates = rates
        if dict(retention) != self.retention:
            self._next_retention = 0.0
        self.retention = dict(retention)

    @property
    def buffered(self) -> int:
        """Records held in memory (observed and not yet written or spilled)."""
        return len(self._buffer) + self._held

    # -- request path --------------------------------------------------------------------
    def observe(self, record: InferenceRecord) -> None:
        if self._sampling and random.random() >= self.sample_rates.get(record.model,
                                                                       self.sample_rate):
            return
        buffer = self._buffer
        if len(buffer) + self._held >= self.capacity:
            self._drop(1, "buffer_full")
            return
        buffer.append(slot_of(record))

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        if self._metrics is not None:
            self._metrics.store_dropped.labels(reason).inc(count)
        now = time.monotonic()
        if now - self._last_drop_log > 5.0:
            self._last_drop_log = now
            log.error("evaluation store dropped %d record(s) (%s); %d dropped since start",
                      count, reason, self.dropped)

    def _pack(self) -> None:
        """Move the deque's records into packed parts, ``PACK_CHUNK`` at a time."""
        while self._buffer:
            with self._lock:
                buffer = self._buffer
                count = min(len(buffer), PACK_CHUNK)
                self._held += count
                popleft = buffer.popleft
                records = [popleft() for _ in range(count)]
                try:
                    self._parts.extend(pack(records))
                except Exception:  # a bug must not lose records silently: count and log
                    self._held -= count
                    log.exception("evaluation store could not pack %d record(s)", count)
                    self._drop(count, "error")
            del records
            time.sleep(0)  # let the event loop run between chunks

    # -- feedback path -------------------------------------------------------------------
    def pending_of(self, request_ids: list[str]) -> set[str]:
        """The ids among ``request_ids`` whose records are buffered, packed, being written
        or spilled (one pass over what is held, whatever the number of ids)."""
        wanted = set(request_ids)
        with self._lock:
            held = set(map(request_id_of, list(self._buffer)))
            for part in self._parts + self._inflight:
                held.update(part.ids)
        return (wanted & held) | {i for i in wanted if self.spill.contains(i)}

    def pending(self, request_id: str) -> bool:
        return bool(self.pending_of([request_id]))

    def wait_written(self, request_ids: list[str], timeout: float = 10.0) -> set[str]:
        """Flush now and wait until none of ``request_ids`` is pending; returns those still
        pending at the timeout (the database is down: they are spilled)."""
        deadline = time.monotonic() + timeout
        waiting = self.pending_of(request_ids)
        while waiting and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.005)
            waiting = self.pending_of(list(waiting))
        return waiting

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
        """Wait until what is held now is written (tests, exports); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.buffered:
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
            if stopping and not self.buffered:
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

    def _cycle(self, final: bool = False) -> None:
        up = self._connect()
        if up and self.spill.files():
            up = self._replay()
        self._pack()
        up = self._write_parts(up, final)
        if up and not final:
            self._retain()

    def _write_parts(self, up: bool, final: bool) -> bool:
        """Write the packed parts (or spill them); returns whether the store is up."""
        with self._lock:
            parts = self._parts
            count = sum(len(p.ids) for p in parts)
            if not parts:
                return up
            self._inflight = parts
            self._parts = []
        batches = assemble(parts, self.batch_size)
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
                    self._metrics.store_spilled.inc(count)
            else:
                self._drop(count, "spill_full")
        with self._lock:
            self._inflight = []
            self._held -= count
        return up

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
