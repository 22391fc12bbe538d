"""InstancePool execution modes: inline on the loop thread, on instance threads, and auto."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np

from ferry.errors import ModelError
from ferry.manifest import DynamicBatching, ModelManifest
from ferry.runtimes.base import Runtime
from ferry.scheduler.batcher import DynamicBatcher
from ferry.scheduler.instances import INLINE_BELOW_S, InstancePool
from ferry.types import Signature, Tensors


class Recorder(Runtime):
    """Doubles x; records the thread of each call; sleeps ``delay`` seconds per call."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        super().__init__(ModelManifest())
        self.delay = delay
        self.fail = fail
        self.threads: list[int] = []

    def load(self, version_dir: Path) -> None:
        return None

    def predict(self, inputs: Tensors) -> Tensors:
        self.threads.append(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise ValueError("broken")
        return {"y": inputs["x"] * 2}

    def signature(self) -> Signature:
        return Signature((), ())


async def _run(pool: InstancePool, n: int) -> list[Tensors]:
    batcher = DynamicBatcher(pool, 8, DynamicBatching())
    futures = [batcher.submit({"x": np.full((1, 2), i, dtype=np.float32)}, 1) for i in range(n)]
    return list(await asyncio.gather(*futures))


def test_inline_runs_on_the_loop_thread_and_batches_what_queued():
    runtime = Recorder()

    async def main() -> list[Tensors]:
        pool = InstancePool([runtime], "t", "inline")
        try:
            return await _run(pool, 20)
        finally:
            pool.close()

    results = asyncio.run(main())
    assert [float(r["y"][0, 0]) for r in results] == [2.0 * i for i in range(20)]
    assert set(runtime.threads) == {threading.get_ident()}
    assert len(runtime.threads) < 20  # requests submitted together shared batches


def test_thread_mode_never_runs_on_the_loop_thread():
    runtime = Recorder()

    async def main() -> None:
        pool = InstancePool([runtime], "t", "thread")
        try:
            await _run(pool, 5)
        finally:
            pool.close()

    asyncio.run(main())
    assert threading.get_ident() not in set(runtime.threads)


def test_auto_moves_a_slow_model_to_its_thread():
    runtime = Recorder(delay=INLINE_BELOW_S * 4)

    async def main() -> None:
        pool = InstancePool([runtime], "t", "auto")
        try:
            for _ in range(30):  # one request at a time: each is its own batch
                await _run(pool, 1)
        finally:
            pool.close()

    asyncio.run(main())
    loop_thread = threading.get_ident()
    assert runtime.threads[0] == loop_thread  # starts inline
    assert runtime.threads[-1] != loop_thread  # the moving average pushed it to its thread


def test_inline_model_errors_fail_only_that_batch():
    runtime = Recorder(fail=True)

    async def main() -> BaseException | None:
        pool = InstancePool([runtime], "t", "inline")
        try:
            await _run(pool, 3)
        except ModelError as exc:
            return exc
        finally:
            pool.close()
        return None

    error = asyncio.run(main())
    assert isinstance(error, ModelError) and "broken" in error.message
