"""N runtime instances, each on its own thread, fed one batch at a time.

Runtimes that are ``thread_safe`` (ONNX Runtime releases the GIL while it runs) share one
loaded copy across instance threads; others get one copy per instance. Results come back
to the event loop through ``call_soon_threadsafe``: the loop never blocks on a model.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable

from ferry.runtimes.base import Runtime
from ferry.types import Tensors

Done = Callable[[Tensors | None, BaseException | None], None]
_STOP = None


class InstancePool:
    """Runs ``predict`` on ``len(runtimes)`` threads. Use from the event loop thread only."""

    def __init__(self, runtimes: list[Runtime], name: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._work: queue.SimpleQueue[tuple[Tensors, Done] | None] = queue.SimpleQueue()
        self.size = len(runtimes)
        self.idle = len(runtimes)
        self._threads = [threading.Thread(target=self._serve, args=(rt,), daemon=True,
                                          name=f"ferry-{name}-{i}")
                         for i, rt in enumerate(runtimes)]
        for t in self._threads:
            t.start()

    def run(self, inputs: Tensors, done: Done) -> None:
        """Start one batch on a free instance; ``done(outputs, error)`` runs on the loop."""
        self.idle -= 1
        self._work.put((inputs, done))

    def _serve(self, runtime: Runtime) -> None:
        call_soon = self._loop.call_soon_threadsafe
        finished = self._finished
        predict = runtime.predict
        while True:
            job = self._work.get()
            if job is _STOP:
                return
            inputs, done = job
            try:
                result = predict(inputs)
            except BaseException as exc:  # the model's error goes to the requests, not here
                call_soon(finished, done, None, exc)
            else:
                call_soon(finished, done, result, None)

    def _finished(self, done: Done, result: Tensors | None, error: BaseException | None) -> None:
        self.idle += 1
        done(result, error)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the threads after the batches already started have finished."""
        for _ in self._threads:
            self._work.put(_STOP)
        for t in self._threads:
            t.join(timeout)
