"""N runtime instances, each on its own thread, fed one batch at a time.

Runtimes that are ``thread_safe`` (ONNX Runtime releases the GIL while it runs) share one
loaded copy across instance threads; others get one copy per instance. Results come back
to the event loop through ``call_soon_threadsafe``.

Execution (``model.yaml`` ``execution``): ``thread`` always hands batches to the instance
threads; ``inline`` runs them on the event loop thread; ``auto`` (the default) runs a
single-instance model inline while its batches take less than ``INLINE_BELOW_S`` (a moving
average), and on its thread otherwise. For a model that answers in microseconds the two
thread switches per batch cost more than the model, and there is nothing to overlap; a
slow model moves to its thread so the loop keeps reading requests meanwhile.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable

from ferry.runtimes.base import Runtime
from ferry.types import Tensors

Done = Callable[[Tensors | None, BaseException | None], None]
_STOP = None
INLINE_BELOW_S = 0.0005
"""With ``execution: auto``: batches faster than this (moving average) run inline."""


class InstancePool:
    """Runs ``predict`` on ``len(runtimes)`` threads. Use from the event loop thread only."""

    def __init__(self, runtimes: list[Runtime], name: str, execution: str = "thread") -> None:
        self._loop = asyncio.get_running_loop()
        self._execution = execution
        self._inline_runtime = runtimes[0]
        self._average = 0.0 if execution != "thread" else float("inf")
        """Moving average of batch time, seconds (decides ``auto``)."""
        self._work: queue.SimpleQueue[tuple[Tensors, Done] | None] = queue.SimpleQueue()
        self.size = len(runtimes)
        self.idle = len(runtimes)
        self._threads = [threading.Thread(target=self._serve, args=(rt,), daemon=True,
                                          name=f"ferry-{name}-{i}")
                         for i, rt in enumerate(runtimes)]
        for t in self._threads:
            t.start()

    def run(self, inputs: Tensors, done: Done) -> None:
        """Start one batch on a free instance; ``done(outputs, error)`` runs on the loop
        (before ``run`` returns when the batch ran inline)."""
        self.idle -= 1
        if self._execution == "inline" or (
                self._execution == "auto" and self.size == 1 and self._average < INLINE_BELOW_S):
            started = time.perf_counter()
            try:
                result = self._inline_runtime.predict(inputs)
            except BaseException as exc:  # the model's error goes to the requests
                self._time(time.perf_counter() - started)
                self._finished(done, None, exc)
            else:
                self._time(time.perf_counter() - started)
                self._finished(done, result, None)
            return
        self._work.put((inputs, done))

    def _time(self, seconds: float) -> None:
        self._average += 0.1 * (seconds - self._average)

    def _serve(self, runtime: Runtime) -> None:
        call_soon = self._loop.call_soon_threadsafe
        finished = self._finished
        predict = runtime.predict
        while True:
            job = self._work.get()
            if job is _STOP:
                return
            inputs, done = job
            started = time.perf_counter()
            try:
                result = predict(inputs)
            except BaseException as exc:  # the model's error goes to the requests, not here
                call_soon(finished, done, None, exc, time.perf_counter() - started)
            else:
                call_soon(finished, done, result, None, time.perf_counter() - started)

    def _finished(self, done: Done, result: Tensors | None, error: BaseException | None,
                  seconds: float | None = None) -> None:
        if seconds is not None and self._execution == "auto":
            self._time(seconds)
        self.idle += 1
        done(result, error)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the threads after the batches already started have finished."""
        for _ in self._threads:
            self._work.put(_STOP)
        for t in self._threads:
            t.join(timeout)
