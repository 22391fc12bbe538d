"""DynamicBatcher: one queue per live version in front of an ``InstancePool``.

Promises:
- A request is never split across batches and its rows keep their order; outputs are cut
  back by row counts, so no request's outputs hold another's rows. For a batch of several
  requests each request's outputs are a ``BatchOutputs`` that also names the batch (its
  stacked inputs and outputs), for observers that keep whole batches (the evaluation
  store); response encoders read only the request's own arrays.
- Requests leave the queue in arrival order. A batch holds only requests whose non-batch
  dimensions are equal; the first that differs starts the next batch.
- With ``max_queue_delay_ms == 0`` (the default) a request runs at once when an instance is
  idle; what queues while every instance is busy is batched when one frees up. With a
  delay, a batch waits for more rows until ``max_batch_size`` (or a preferred size) is
  reached or the delay after its first request has passed, whichever comes first.
- A request with more rows than ``max_batch_size`` runs on its own, never merged with
  other requests: as one call, or, when the version needs it (``split``), as calls of
  ``max_batch_size`` rows whose outputs are joined back in order (``sizes.placement``).
  Requests within ``max_batch_size`` take exactly the path they took before.
- More than ``max_queue_size`` waiting rows: ``ServerBusy`` (503, Retry-After); a request
  larger than ``max_queue_size`` itself could never fit: ``BatchTooLarge`` (400).
- A request whose deadline passes while queued fails with ``DeadlineExceeded`` and never
  runs; one whose client went away (future cancelled) is dropped before it runs.
- An exception from the model fails every request of that batch with ``ModelError`` and
  nothing else.

Everything here runs on the event loop thread: no locks.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ferry.errors import BatchTooLarge, DeadlineExceeded, FerryError, ModelError, ServerBusy
from ferry.manifest import DynamicBatching
from ferry.scheduler.instances import InstancePool
from ferry.scheduler.sizes import Placement, chunk_sizes, placement
from ferry.scheduler.tensors import shape_key, split, stack
from ferry.types import Tensors


@dataclass(slots=True)
class _Item:
    inputs: Tensors
    rows: int
    span: int
    """Rows it counts for against ``max_batch_size`` when batches are merged: ``rows``, or
    ``max_batch_size`` for a chunk of a large request, which must run alone."""
    future: asyncio.Future[Tensors]
    enqueued: float
    deadline: float | None


BatchObserver = Callable[[int, list[float], float, bool], None]
"""Called after each batch: (rows, queue seconds per request, compute seconds, False when
the model raised)."""


def _ignore(rows: int, waits: list[float], compute: float, ok: bool) -> None:
    return None


class DynamicBatcher:
    """Queues requests for one version and feeds batches to its instance pool."""

    def __init__(self, pool: InstancePool, max_batch_size: int, config: DynamicBatching,
                 observe: BatchObserver = _ignore, fixed_shapes: bool = False,
                 split: bool = False) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self._batching = max_batch_size > 0
        self._fixed_shapes = fixed_shapes
        """Every input's non-batch dimensions are fixed (checked before queueing), so any
        two requests can share a batch without comparing shapes."""
        self._max_rows = max(max_batch_size, 1)
        self._split = split
        """A request of more than ``max_batch_size`` rows runs in chunks of that size."""
        self._delay = config.max_queue_delay_ms / 1000.0
        self._preferred = frozenset(config.preferred_batch_sizes)
        self._max_queue = config.max_queue_size
        self._observe = observe
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._running = 0
        self._drained: asyncio.Future[None] | None = None

    @property
    def queued_rows(self) -> int:
        """Rows waiting for an instance."""
        return self._queued_rows

    def submit(self, inputs: Tensors, rows: int, deadline: float | None = None
               ) -> asyncio.Future[Tensors]:
        """Queue one checked request; the future gets its outputs or a ``FerryError``."""
        if self._queued_rows + rows > self._max_queue:
            raise self._refusal(rows)
        if rows > self._max_rows:
            return self._submit_large(inputs, rows, deadline)
        future: asyncio.Future[Tensors] = self._loop.create_future()
        self._queue.append(_Item(inputs, rows, rows, future, time.monotonic(), deadline))
        self._queued_rows += rows
        if self._pool.idle and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._dispatch)
        return future

    def _refusal(self, rows: int) -> FerryError:
        if rows > self._max_queue:
            return BatchTooLarge(f"request of {rows} rows is over max_queue_size "
                                 f"{self._max_queue}, the most rows that may wait for this "
                                 f"model; split it, or raise dynamic_batching.max_queue_size "
                                 f"in model.yaml")
        return ServerBusy(f"queue full ({self._queued_rows} rows waiting, max_queue_size "
                          f"{self._max_queue}); retry later", retry_after=1.0)

    def _submit_large(self, inputs: Tensors, rows: int, deadline: float | None
                      ) -> asyncio.Future[Tensors]:
        """More rows than ``max_batch_size``: one item that runs alone (its span is over
        the limit, so nothing joins it), or chunks of ``max_batch_size`` rows that each run
        alone, joined back in order."""
        now = time.monotonic()
        if placement(rows, self._max_rows, self._split) is Placement.ALONE:
            future: asyncio.Future[Tensors] = self._loop.create_future()
            self._queue.append(_Item(inputs, rows, rows, future, now, deadline))
        else:
            parts: list[asyncio.Future[Tensors]] = []
            start = 0
            for n in chunk_sizes(rows, self._max_rows):
                part: asyncio.Future[Tensors] = self._loop.create_future()
                chunk = {name: array[start:start + n] for name, array in inputs.items()}
                self._queue.append(_Item(chunk, n, self._max_rows, part, now, deadline))
                parts.append(part)
                start += n
            future = self._joined(parts, rows)
        self._queued_rows += rows
        if self._pool.idle and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._dispatch)
        return future

    def _joined(self, parts: list[asyncio.Future[Tensors]], rows: int
                ) -> asyncio.Future[Tensors]:
        """A future for the outputs of all ``parts``, concatenated in order. The first
        failure fails it and cancels the chunks not yet run (they are dropped from the
        queue); cancelling it (the client went away) cancels them all."""
        whole: asyncio.Future[Tensors] = self._loop.create_future()
        left = [len(parts)]

        def cancel_rest() -> None:
            for part in parts:
                part.cancel()

        def part_done(part: asyncio.Future[Tensors]) -> None:
            if part.cancelled():
                if not whole.done():
                    whole.cancel()
                return
            error = part.exception()  # retrieved even when the request already failed
            if whole.done():
                return
            if error is not None:
                whole.set_exception(error)
                cancel_rest()
                return
            left[0] -= 1
            if left[0]:
                return
            outputs = [p.result() for p in parts]
            try:
                joined = {name: np.concatenate([o[name] for o in outputs])
                          for name in outputs[0]}
            except ValueError as exc:  # a 0-d output, or columns that differ per chunk
                whole.set_exception(ModelError(f"the model's outputs cannot be joined across "
                                               f"chunks of {self._max_rows} rows: {exc}"))
                return
            wrong = [n for n, a in joined.items() if a.shape[0] != rows]
            if wrong:
                whole.set_exception(ModelError(
                    f"output(s) {wrong} have {joined[wrong[0]].shape[0]} rows for a request "
                    f"of {rows} rows run in chunks; a model must return one row per input row"))
                return
            whole.set_result(joined)

        for part in parts:
            part.add_done_callback(part_done)
        whole.add_done_callback(lambda f: cancel_rest() if f.cancelled() else None)
        return whole

    def _dispatch(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue and self._pool.idle:
            if self._delay and self._should_wait():
                return
            batch = self._take()
            if batch:
                self._start(batch)

    def _should_wait(self) -> bool:
        """With a queue delay: wait while the batch is short and the oldest is young."""
        rows = self._queued_rows
        if rows >= self._max_rows or rows in self._preferred or (
                self._preferred and rows >= max(self._preferred)):
            return False
        fire_at = self._queue[0].enqueued + self._delay
        if time.monotonic() >= fire_at:
            return False
        self._timer = self._loop.call_at(fire_at - time.monotonic() + self._loop.time(),
                                         self._dispatch)
        return True

    def _take(self) -> list[_Item]:
        """Pop the next batch: queue order, same non-batch shape, at most max rows."""
        queue, rows, key = self._queue, 0, None
        batch: list[_Item] = []
        now = time.monotonic()
        while queue:
            item = queue[0]
            if item.future.done():  # cancelled: the client went away
                queue.popleft()
                self._queued_rows -= item.rows
                continue
            if item.deadline is not None and now > item.deadline:
                queue.popleft()
                self._queued_rows -= item.rows
                item.future.set_exception(DeadlineExceeded(
                    f"deadline passed after {1000 * (now - item.enqueued):.1f} ms in the queue"))
                continue
            if batch:
                if not self._batching or rows + item.span > self._max_rows:
                    break
            if batch and not self._fixed_shapes:
                item_key = shape_key(item.inputs)
                if key is None:
                    key = shape_key(batch[0].inputs)
                if item_key != key:
                    break
            queue.popleft()
            self._queued_rows -= item.rows
            batch.append(item)
            rows += item.span
        return batch

    def _start(self, batch: list[_Item]) -> None:
        started = time.monotonic()
        try:
            inputs = stack([item.inputs for item in batch])
        except Exception as exc:  # cannot happen for checked inputs; fail the batch, not the loop
            self._fail(batch, exc)
            return

        def done(outputs: Tensors | None, error: BaseException | None) -> None:
            finished = time.monotonic()
            if error is not None or outputs is None:
                self._fail(batch, error)
            else:
                self._deliver(batch, outputs, inputs)
            self._observe(sum(i.rows for i in batch), [started - i.enqueued for i in batch],
                          finished - started, error is None)
            self._running -= 1
            if self._queue and not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self._dispatch)
            elif not self._queue and not self._running and self._drained is not None:
                if not self._drained.done():
                    self._drained.set_result(None)

        self._running += 1
        self._pool.run(inputs, done)

    def _deliver(self, batch: list[_Item], outputs: Tensors, inputs: Tensors) -> None:
        try:
            parts = split(outputs, [item.rows for item in batch], inputs) \
                if self._batching else [outputs]
        except ValueError as exc:
            self._fail(batch, exc)
            return
        for item, part in zip(batch, parts, strict=True):
            if not item.future.done():
                item.future.set_result(part)

    def _fail(self, batch: list[_Item], error: BaseException | None) -> None:
        if not isinstance(error, FerryError):
            error = ModelError(f"the model failed: {type(error).__name__}: {error}")
        for item in batch:
            if not item.future.done():
                item.future.set_exception(error)

    async def drain(self, timeout: float) -> bool:
        """Wait until nothing is queued or running (callers stop submitting first).
        Returns False if ``timeout`` seconds passed first."""
        if not self._queue and not self._running:
            return True
        self._drained = self._loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._drained), timeout)
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        """Fail whatever is still queued (the version is going away)."""
        if self._timer is not None:
            self._timer.cancel()
        from ferry.errors import ModelNotReady

        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(ModelNotReady("the version was unloaded"))
        self._queued_rows = 0
