"""DynamicBatcher + InstancePool with real fake runtimes (tiny ``Runtime`` subclasses), and
the tensor checks / stack / split of ``scheduler.tensors``.

The instance is kept busy deterministically with a gate: the fake runtime blocks in
``predict`` until the test opens the gate, so whatever the test submits meanwhile queues.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from ferry.errors import (BatchTooLarge, DatatypeMismatch, DeadlineExceeded, InvalidInput,
                          InvalidValue, MissingInput, ModelError, ModelNotReady, ServerBusy,
                          ShapeMismatch, UnknownInput, Unavailable)
from ferry.manifest import DynamicBatching, ModelManifest
from ferry.runtimes.base import Runtime
from ferry.scheduler.batcher import DynamicBatcher
from ferry.scheduler.instances import InstancePool
from ferry.scheduler.tensors import check_inputs, shape_key, split, stack
from ferry.types import Signature, TensorSpec, Tensors

TIMEOUT = 10.0


class Doubler(Runtime):
    """``y = 2 * x`` and ``rows = arange(len(x))``; records every batch it sees.

    Blocks on ``gate`` in ``predict`` (open by default). Raises ``ValueError`` when any
    input value is negative.
    """

    name = "doubler"

    def __init__(self, sleep: float = 0.0, barrier: threading.Barrier | None = None) -> None:
        super().__init__(ModelManifest())
        self.gate = threading.Event()
        self.gate.set()
        self.sleep = sleep
        self.barrier = barrier
        self.calls: list[Tensors] = []
        self.threads: list[str] = []
        self._lock = threading.Lock()

    def load(self, version_dir: Path) -> None:
        pass

    def signature(self) -> Signature:
        return Signature((TensorSpec("x", "FP32", (-1, -1)),),
                         (TensorSpec("y", "FP32", (-1, -1)), TensorSpec("rows", "INT64", (-1,))))

    def predict(self, inputs: Tensors) -> Tensors:
        with self._lock:
            self.calls.append({k: v.copy() for k, v in inputs.items()})
            self.threads.append(threading.current_thread().name)
        if self.barrier is not None:
            self.barrier.wait()
        assert self.gate.wait(TIMEOUT)
        if self.sleep:
            time.sleep(self.sleep)
        x = inputs["x"]
        if (x < 0).any():
            raise ValueError("negative values are not allowed")
        return {"y": x * 2, "rows": np.arange(len(x), dtype=np.int64)}

    @property
    def batch_rows(self) -> list[int]:
        return [len(c["x"]) for c in self.calls]


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


def x_of(request_id: int, rows: int, cols: int = 2) -> np.ndarray:
    """Rows tagged with their request id (column 0) and their row index (column 1)."""
    x = np.zeros((rows, cols), dtype=np.float32)
    x[:, 0] = request_id
    if cols > 1:
        x[:, 1] = np.arange(rows)
    return x


class Setup:
    """A pool of the given runtimes and a batcher over it, inside a running loop."""

    def __init__(self, runtimes: list[Runtime], max_batch_size: int,
                 config: DynamicBatching | None = None, split: bool = False) -> None:
        self.observed: list[tuple[int, list[float], float]] = []
        self.pool = InstancePool(runtimes, "test")
        self.batcher = DynamicBatcher(self.pool, max_batch_size, config or DynamicBatching(),
                                      lambda r, w, c, ok: self.observed.append((r, w, c)),
                                      split=split)

    def submit(self, x: np.ndarray, deadline: float | None = None
               ) -> asyncio.Future[Tensors]:
        rows = len(x) if self.batcher._batching else 1
        return self.batcher.submit({"x": x}, rows, deadline)

    def close(self) -> None:
        self.batcher.close()
        self.pool.close(5)


async def until(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.001)


async def make_busy(s: Setup, rt: Doubler, request_id: int = 0) -> asyncio.Future[Tensors]:
    """Close the gate and start one 1-row batch that blocks until the gate opens."""
    rt.gate.clear()
    n = len(rt.calls)
    future = s.submit(x_of(request_id, 1))
    await until(lambda: len(rt.calls) > n)
    return future


# -- correctness of batching ------------------------------------------------------------

def test_idle_instance_runs_a_request_at_once() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 8)
        out = await s.submit(x_of(1, 3))
        np.testing.assert_array_equal(out["y"], 2 * x_of(1, 3))
        np.testing.assert_array_equal(out["rows"], [0, 1, 2])
        assert rt.batch_rows == [3]
        assert s.batcher.queued_rows == 0
        assert len(s.observed) == 1 and s.observed[0][0] == 3
        s.close()

    run(main)


def test_each_request_gets_exactly_its_own_rows_in_order() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 16)
        first = await make_busy(s, rt, request_id=0)
        rng = np.random.default_rng(0)
        sizes = {i: int(rng.integers(1, 6)) for i in range(1, 41)}
        inputs = {i: x_of(i, n) for i, n in sizes.items()}
        futures = {i: s.submit(x) for i, x in inputs.items()}
        assert s.batcher.queued_rows == sum(sizes.values())
        assert rt.batch_rows == [1]  # nothing else ran while the instance was busy
        rt.gate.set()
        results = dict(zip(futures, await asyncio.gather(*futures.values()), strict=True))
        await first
        for i, out in results.items():
            np.testing.assert_array_equal(out["y"], 2 * inputs[i])
            assert out["y"].shape == (sizes[i], 2)
            # the request's rows sat next to each other in its batch, in order
            np.testing.assert_array_equal(np.diff(out["rows"]), np.ones(sizes[i] - 1))
        # batches never exceed max_batch_size, batching happened, no request was split
        assert all(r <= 16 for r in rt.batch_rows)
        assert len(rt.calls) < 1 + len(sizes)
        seen_order = []
        for call in rt.calls[1:]:
            ids = call["x"][:, 0].astype(int)
            for rid in dict.fromkeys(ids.tolist()):
                rows_of_request = call["x"][ids == rid]
                assert len(rows_of_request) == sizes[rid], "a request was split"
                np.testing.assert_array_equal(rows_of_request[:, 1], np.arange(sizes[rid]))
                seen_order.append(rid)
        assert seen_order == sorted(sizes)  # requests left the queue in arrival order
        assert s.batcher.queued_rows == 0
        s.close()

    run(main)


def test_batches_fill_up_to_max_batch_size() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 4)
        first = await make_busy(s, rt)
        futures = [s.submit(x_of(i, 1)) for i in range(1, 11)]
        rt.gate.set()
        await asyncio.gather(first, *futures)
        assert rt.batch_rows == [1, 4, 4, 2]
        assert [o[0] for o in s.observed] == [1, 4, 4, 2]
        s.close()

    run(main)


def test_a_request_is_never_split_to_fill_a_batch() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 5)
        first = await make_busy(s, rt)
        sizes = [3, 3, 2, 5, 1]
        futures = [s.submit(x_of(i + 1, n)) for i, n in enumerate(sizes)]
        rt.gate.set()
        outs = await asyncio.gather(first, *futures)
        # 3 (+3 would be 6 > 5) | 3+2 | 5 | 1
        assert rt.batch_rows == [1, 3, 5, 5, 1]
        for n, out in zip(sizes, outs[1:], strict=True):
            assert len(out["y"]) == n
        s.close()

    run(main)


def test_different_non_batch_shapes_do_not_batch_together() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 16)
        first = await make_busy(s, rt)
        a, b, c, d = x_of(1, 1, cols=2), x_of(2, 2, cols=3), x_of(3, 1, cols=3), x_of(4, 1, 2)
        futures = [s.submit(v) for v in (a, b, c, d)]
        rt.gate.set()
        outs = await asyncio.gather(*futures)
        await first
        assert [c["x"].shape for c in rt.calls[1:]] == [(1, 2), (3, 3), (1, 2)]
        for x, out in zip((a, b, c, d), outs, strict=True):
            np.testing.assert_array_equal(out["y"], 2 * x)
        s.close()

    run(main)


def test_inputs_in_a_different_order_are_not_mixed_up() -> None:
    class TwoInputs(Doubler):
        def predict(self, inputs: Tensors) -> Tensors:
            self.calls.append(dict(inputs))
            assert self.gate.wait(TIMEOUT)
            return {"a2": inputs["a"] * 2, "b2": inputs["b"] * 2}

    async def main() -> None:
        rt = TwoInputs()
        s = Setup([rt], 8)
        rt.gate.clear()
        busy = s.batcher.submit({"a": np.ones((1, 1), np.float32),
                                 "b": np.ones((1, 1), np.float32)}, 1)
        await until(lambda: len(rt.calls) == 1)
        r1 = {"a": np.full((1, 3), 1, np.float32), "b": np.full((1, 5), 2, np.float32)}
        r2 = {"b": np.full((1, 3), 3, np.float32), "a": np.full((1, 5), 4, np.float32)}
        f1, f2 = s.batcher.submit(r1, 1), s.batcher.submit(r2, 1)
        rt.gate.set()
        await busy
        try:
            out1, out2 = await asyncio.gather(f1, f2)
        finally:
            s.close()
        np.testing.assert_array_equal(out1["a2"], r1["a"] * 2)
        np.testing.assert_array_equal(out2["a2"], r2["a"] * 2)

    run(main)


# -- queue limits, deadlines, cancellation -----------------------------------------------

def test_queue_full_raises_server_busy_with_retry_after() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 8, DynamicBatching(max_queue_size=3))
        first = await make_busy(s, rt)
        ok = [s.submit(x_of(1, 2)), s.submit(x_of(2, 1))]
        assert s.batcher.queued_rows == 3
        with pytest.raises(ServerBusy) as info:
            s.submit(x_of(3, 1))
        assert isinstance(info.value, Unavailable)
        assert info.value.http_status == 503
        assert info.value.retry_after is not None and info.value.retry_after > 0
        assert "queue full" in info.value.message
        assert s.batcher.queued_rows == 3  # the refused request was not queued
        rt.gate.set()
        await asyncio.gather(first, *ok)
        # once the queue drained, requests are accepted again
        out = await s.submit(x_of(4, 3))
        np.testing.assert_array_equal(out["y"], 2 * x_of(4, 3))
        assert 3 not in {int(v) for c in rt.calls for v in c["x"][:, 0]}
        s.close()

    run(main)


def test_deadline_passed_while_queued_fails_and_never_runs() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 8)
        first = await make_busy(s, rt)
        late = s.submit(x_of(7, 2), deadline=time.monotonic() + 0.02)
        fine = s.submit(x_of(8, 1), deadline=time.monotonic() + 60)
        no_deadline = s.submit(x_of(9, 1))
        await asyncio.sleep(0.06)
        rt.gate.set()
        await first
        with pytest.raises(DeadlineExceeded) as info:
            await late
        assert info.value.http_status == 504
        assert "deadline passed" in info.value.message
        np.testing.assert_array_equal((await fine)["y"], 2 * x_of(8, 1))
        np.testing.assert_array_equal((await no_deadline)["y"], 2 * x_of(9, 1))
        assert 7 not in {int(v) for c in rt.calls for v in c["x"][:, 0]}
        assert s.batcher.queued_rows == 0
        s.close()

    run(main)


def test_cancelled_request_is_dropped_before_it_runs() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 8)
        first = await make_busy(s, rt)
        gone = s.submit(x_of(5, 3))
        kept = s.submit(x_of(6, 2))
        gone.cancel()
        rt.gate.set()
        await first
        np.testing.assert_array_equal((await kept)["y"], 2 * x_of(6, 2))
        assert gone.cancelled()
        assert 5 not in {int(v) for c in rt.calls for v in c["x"][:, 0]}
        assert rt.batch_rows == [1, 2]
        assert s.batcher.queued_rows == 0
        s.close()

    run(main)


# -- requests larger than max_batch_size ------------------------------------------------

def calls_by_request(rt: Doubler) -> list[list[int]]:
    """For each model call, the request ids (column 0) it held, in order, once each."""
    return [list(dict.fromkeys(c["x"][:, 0].astype(int).tolist())) for c in rt.calls]


@pytest.mark.parametrize("split", [False, True])
def test_large_request_runs_alone_and_is_never_merged(split: bool) -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 8, split=split)
        first = await make_busy(s, rt, request_id=0)
        before = s.submit(x_of(1, 3))
        large = s.submit(x_of(2, 20))  # 20 rows at max_batch_size 8
        after = [s.submit(x_of(i, 1)) for i in range(3, 6)]
        assert s.batcher.queued_rows == 3 + 20 + 3
        rt.gate.set()
        await first
        out = await large
        np.testing.assert_array_equal(out["y"], 2 * x_of(2, 20))
        np.testing.assert_array_equal((await before)["y"], 2 * x_of(1, 3))
        for i, f in zip(range(3, 6), after, strict=True):
            np.testing.assert_array_equal((await f)["y"], 2 * x_of(i, 1))
        # no call holds the large request's rows together with another request's
        assert all(ids == [2] or 2 not in ids for ids in calls_by_request(rt))
        large_calls = [len(c["x"]) for c in rt.calls if int(c["x"][0, 0]) == 2]
        assert large_calls == ([8, 8, 4] if split else [20])
        # requests within max_batch_size still batch: the three 1-row ones share one call
        assert calls_by_request(rt)[-1] == [3, 4, 5]
        assert s.batcher.queued_rows == 0
        s.close()

    run(main)


def test_chunks_keep_row_order_and_run_on_several_instances() -> None:
    async def main() -> None:
        barrier = threading.Barrier(2, timeout=5)
        rts = [Doubler(barrier=barrier), Doubler(barrier=barrier)]
        s = Setup(list(rts), 5, split=True)
        out = await s.submit(x_of(1, 10))  # two chunks of 5, both inside predict at once
        np.testing.assert_array_equal(out["y"], 2 * x_of(1, 10))
        np.testing.assert_array_equal(out["rows"], [0, 1, 2, 3, 4] * 2)
        assert sorted(len(rt.calls) for rt in rts) == [1, 1]
        s.close()

    run(main)


def test_a_failing_chunk_fails_the_request_and_drops_its_other_chunks() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 4, split=True)
        first = await make_busy(s, rt)
        x = x_of(1, 12)
        x[5, 1] = -1  # in the second chunk
        large = s.submit(x)
        other = s.submit(x_of(2, 2))
        rt.gate.set()
        await first
        with pytest.raises(ModelError, match="negative values"):
            await large
        np.testing.assert_array_equal((await other)["y"], 2 * x_of(2, 2))
        # chunk 1 ran, chunk 2 failed, chunk 3 was dropped; the next request still ran
        assert rt.batch_rows == [1, 4, 4, 2]
        assert s.batcher.queued_rows == 0
        s.close()

    run(main)


def test_a_cancelled_large_request_drops_its_chunks() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 4, split=True)
        first = await make_busy(s, rt)
        large = s.submit(x_of(1, 12))
        large.cancel()
        kept = s.submit(x_of(2, 1))
        rt.gate.set()
        await first
        np.testing.assert_array_equal((await kept)["y"], 2 * x_of(2, 1))
        assert rt.batch_rows == [1, 1]
        assert s.batcher.queued_rows == 0
        s.close()

    run(main)


def test_chunked_outputs_with_wrong_rows_are_a_model_error() -> None:
    class Summer(Doubler):
        def predict(self, inputs: Tensors) -> Tensors:
            super().predict(inputs)
            return {"total": inputs["x"].sum(axis=1)[:1]}

    async def main() -> None:
        s = Setup([Summer()], 4, split=True)
        with pytest.raises(ModelError, match="'total'.*one row per input row"):
            await s.submit(x_of(1, 10))
        s.close()

    run(main)


def test_request_larger_than_the_queue_is_a_400_naming_max_queue_size() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 8, DynamicBatching(max_queue_size=16), split=True)
        with pytest.raises(BatchTooLarge, match="17 rows is over max_queue_size 16") as info:
            s.submit(x_of(1, 17))
        assert info.value.http_status == 400
        out = await s.submit(x_of(2, 16))  # as large as the queue: served
        np.testing.assert_array_equal(out["y"], 2 * x_of(2, 16))
        s.close()

    run(main)


# -- failures --------------------------------------------------------------------------

def test_model_exception_fails_only_its_batch() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 8)
        first = await make_busy(s, rt)
        bad1 = s.submit(-x_of(1, 1, cols=3) - 1)
        bad2 = s.submit(x_of(2, 2, cols=3))  # innocent, but in the same batch as bad1
        good = s.submit(x_of(3, 1, cols=2))  # other shape: the next batch
        rt.gate.set()
        await first
        for f in (bad1, bad2):
            with pytest.raises(ModelError) as info:
                await f
            assert "ValueError" in info.value.message
            assert "negative values are not allowed" in info.value.message
        np.testing.assert_array_equal((await good)["y"], 2 * x_of(3, 1, cols=2))
        # and the instance keeps serving afterwards
        np.testing.assert_array_equal((await s.submit(x_of(4, 2)))["y"], 2 * x_of(4, 2))
        assert rt.batch_rows == [1, 3, 1, 2]
        s.close()

    run(main)


def test_wrong_row_count_from_model_is_a_model_error() -> None:
    class Summer(Doubler):
        def predict(self, inputs: Tensors) -> Tensors:
            super().predict(inputs)
            return {"total": inputs["x"].sum(keepdims=True)}

    async def main() -> None:
        rt = Summer()
        s = Setup([rt], 8)
        first = await make_busy(s, rt)
        f1, f2 = s.submit(x_of(1, 2)), s.submit(x_of(2, 2))
        rt.gate.set()
        await first  # alone in its batch: nothing to split
        for f in (f1, f2):
            with pytest.raises(ModelError, match="'total'.*one row per input row"):
                await f
        s.close()

    run(main)


def test_ferry_errors_from_the_model_pass_through() -> None:
    class Refuser(Doubler):
        def predict(self, inputs: Tensors) -> Tensors:
            raise InvalidValue("this model refuses")

    async def main() -> None:
        s = Setup([Refuser()], 8)
        with pytest.raises(InvalidValue, match="this model refuses"):
            await s.submit(x_of(1, 1))
        s.close()

    run(main)


# -- queue delay -----------------------------------------------------------------------

def test_queue_delay_waits_to_fill_a_batch() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 8, DynamicBatching(max_queue_delay_ms=600))
        started = time.monotonic()
        futures = []
        for i in range(3):
            futures.append(s.submit(x_of(i, 1)))
            await asyncio.sleep(0.01)
        assert rt.calls == []  # still waiting for more rows
        outs = await asyncio.gather(*futures)
        elapsed = time.monotonic() - started
        assert rt.batch_rows == [3]  # one batch
        assert elapsed >= 0.6
        for i, out in enumerate(outs):
            np.testing.assert_array_equal(out["y"], 2 * x_of(i, 1))
        s.close()

    run(main)


def test_queue_delay_fires_after_the_delay_when_not_full() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 8, DynamicBatching(max_queue_delay_ms=100))
        started = time.monotonic()
        out = await s.submit(x_of(1, 2))
        elapsed = time.monotonic() - started
        assert 0.095 <= elapsed < 3
        assert rt.batch_rows == [2]
        np.testing.assert_array_equal(out["y"], 2 * x_of(1, 2))
        s.close()

    run(main)


def test_queue_delay_stops_waiting_when_the_batch_is_full() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 4, DynamicBatching(max_queue_delay_ms=20_000))
        started = time.monotonic()
        futures = [s.submit(x_of(1, 1))]
        await asyncio.sleep(0.01)
        futures.append(s.submit(x_of(2, 3)))
        await asyncio.gather(*futures)
        assert time.monotonic() - started < 5
        assert rt.batch_rows == [4]
        s.close()

    run(main)


def test_queue_delay_stops_waiting_at_a_preferred_size() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 16, DynamicBatching(max_queue_delay_ms=20_000,
                                            preferred_batch_sizes=[3]))
        started = time.monotonic()
        futures = [s.submit(x_of(1, 1))]
        await asyncio.sleep(0.01)
        futures.append(s.submit(x_of(2, 2)))
        await asyncio.gather(*futures)
        assert time.monotonic() - started < 5
        assert rt.batch_rows == [3]
        s.close()

    run(main)


def test_queue_delay_stops_waiting_beyond_the_largest_preferred_size() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 16, DynamicBatching(max_queue_delay_ms=20_000,
                                            preferred_batch_sizes=[2]))
        started = time.monotonic()
        await s.submit(x_of(1, 3))  # 3 rows: not a preferred size, but past the largest
        assert time.monotonic() - started < 5
        assert rt.batch_rows == [3]
        s.close()

    run(main)


# -- unbatched models and several instances -------------------------------------------------

def test_unbatched_model_runs_one_request_per_call() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 0)
        first = await make_busy(s, rt)
        xs = [x_of(i, 2) for i in range(1, 4)]  # 2 "rows" but no batch axis: never merged
        futures = [s.submit(x) for x in xs]
        assert s.batcher.queued_rows == 3  # one per request
        rt.gate.set()
        outs = await asyncio.gather(*futures)
        await first
        assert rt.batch_rows == [1, 2, 2, 2]
        for x, call, out in zip(xs, rt.calls[1:], outs, strict=True):
            np.testing.assert_array_equal(call["x"], x)
            np.testing.assert_array_equal(out["y"], 2 * x)
            np.testing.assert_array_equal(out["rows"], [0, 1])
        s.close()

    run(main)


def test_two_instances_run_two_batches_concurrently() -> None:
    async def main() -> None:
        # both calls must be inside predict at the same time to pass the barrier
        barrier = threading.Barrier(2, timeout=5)
        rts = [Doubler(barrier=barrier), Doubler(barrier=barrier)]
        s = Setup(list(rts), 8)
        assert s.pool.size == 2 and s.pool.idle == 2
        f1 = s.submit(x_of(1, 2, cols=2))
        f2 = s.submit(x_of(2, 1, cols=3))  # another shape: a second batch
        o1, o2 = await asyncio.gather(f1, f2)
        np.testing.assert_array_equal(o1["y"], 2 * x_of(1, 2, cols=2))
        np.testing.assert_array_equal(o2["y"], 2 * x_of(2, 1, cols=3))
        assert sorted(len(rt.calls) for rt in rts) == [1, 1]
        assert rts[0].threads != rts[1].threads
        assert s.pool.idle == 2
        s.close()

    run(main)


def test_shared_thread_safe_runtime_on_two_instances() -> None:
    async def main() -> None:
        rt = Doubler(barrier=threading.Barrier(2, timeout=5))
        s = Setup([rt, rt], 8)
        f1 = s.submit(x_of(1, 1))
        await asyncio.sleep(0)  # let the first start alone
        f2 = s.submit(x_of(2, 1))
        await asyncio.gather(f1, f2)
        assert len(set(rt.threads)) == 2
        s.close()

    run(main)


def test_close_fails_queued_requests_with_model_not_ready() -> None:
    async def main() -> None:
        rt = Doubler()
        s = Setup([rt], 8)
        first = await make_busy(s, rt)
        queued = [s.submit(x_of(1, 1)), s.submit(x_of(2, 2))]
        s.batcher.close()
        assert s.batcher.queued_rows == 0
        for f in queued:
            with pytest.raises(ModelNotReady, match="unloaded"):
                await f
        rt.gate.set()
        # the batch that had started still finishes
        np.testing.assert_array_equal((await first)["y"], 2 * x_of(0, 1))
        assert rt.batch_rows == [1]
        s.pool.close(5)

    run(main)


def test_observer_sees_rows_waits_and_compute_time() -> None:
    async def main() -> None:
        rt = Doubler(sleep=0.02)
        s = Setup([rt], 8)
        first = await make_busy(s, rt)
        futures = [s.submit(x_of(1, 2)), s.submit(x_of(2, 1))]
        await asyncio.sleep(0.03)
        rt.gate.set()
        await asyncio.gather(first, *futures)
        assert [o[0] for o in s.observed] == [1, 3]
        _, waits, compute = s.observed[1]
        assert len(waits) == 2 and all(w >= 0.025 for w in waits)
        assert compute >= 0.015
        s.close()

    run(main)


# -- scheduler.tensors ------------------------------------------------------------------

SIG = Signature((TensorSpec("a", "FP32", (-1, 3)), TensorSpec("b", "INT64", (-1,))),
                (TensorSpec("y", "FP32", (-1,)),))


def good(rows: int = 2) -> dict[str, np.ndarray]:
    return {"a": np.zeros((rows, 3), np.float32), "b": np.zeros(rows, np.int64)}


def test_check_inputs_returns_rows() -> None:
    assert check_inputs(SIG, good(5), 8) == 5
    assert check_inputs(SIG, good(8), 8) == 8


def test_check_inputs_without_batching_returns_one() -> None:
    sig = Signature((TensorSpec("m", "FP64", (2, 2)),), ())
    assert check_inputs(sig, {"m": np.zeros((2, 2))}, 0) == 1
    with pytest.raises(ShapeMismatch, match=r"input 'm': shape \[3, 2\]"):
        check_inputs(sig, {"m": np.zeros((3, 2))}, 0)


def test_check_inputs_unknown_input() -> None:
    inputs = {**good(), "c": np.zeros(2, np.int64)}
    with pytest.raises(UnknownInput, match=r"unknown input 'c'.*\['a', 'b'\]"):
        check_inputs(SIG, inputs, 8)
    renamed = {"a": good()["a"], "B": good()["b"]}
    with pytest.raises(UnknownInput, match="'B'"):
        check_inputs(SIG, renamed, 8)


def test_check_inputs_missing_input() -> None:
    with pytest.raises(MissingInput, match=r"missing input\(s\) \['b'\]"):
        check_inputs(SIG, {"a": good()["a"]}, 8)
    with pytest.raises(MissingInput, match=r"\['a', 'b'\]"):
        check_inputs(SIG, {}, 8)


def test_check_inputs_datatype_mismatch() -> None:
    inputs = {**good(), "a": np.zeros((2, 3), np.float64)}
    with pytest.raises(DatatypeMismatch, match="input 'a': datatype FP64 but the model "
                                               "expects FP32"):
        check_inputs(SIG, inputs, 8)


@pytest.mark.parametrize("shape", [(2, 4), (2,), (2, 3, 1)])
def test_check_inputs_shape_mismatch(shape: tuple[int, ...]) -> None:
    inputs = {**good(), "a": np.zeros(shape, np.float32)}
    with pytest.raises(ShapeMismatch, match="input 'a': shape"):
        check_inputs(SIG, inputs, 8)


def test_check_inputs_rows_mismatch() -> None:
    inputs = {"a": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.int64)}
    with pytest.raises(ShapeMismatch, match="input 'b' has 3 rows but other inputs have 2"):
        check_inputs(SIG, inputs, 8)


def test_check_inputs_empty_batch() -> None:
    with pytest.raises(InvalidValue, match="empty batch") as info:
        check_inputs(SIG, good(0), 8)
    assert info.value.http_status == 422


def test_check_inputs_accepts_more_rows_than_max_batch_size() -> None:
    # the batcher runs such a request on its own (tests below); it used to be a 400
    assert check_inputs(SIG, good(9), 8) == 9
    assert check_inputs(SIG, good(200), 64) == 200


def test_check_inputs_nan() -> None:
    sig = Signature((TensorSpec("x", "FP32", (-1, 2), allow_nan=False),), ())
    x = np.zeros((2, 2), np.float32)
    assert check_inputs(sig, {"x": x}, 4) == 2
    x[1, 0] = np.nan
    with pytest.raises(InvalidValue, match="input 'x' holds NaN"):
        check_inputs(sig, {"x": x}, 4)
    allowing = Signature((TensorSpec("x", "FP32", (-1, 2)),), ())
    assert check_inputs(allowing, {"x": x}, 4) == 2
    # infinities are not NaN
    x[1, 0] = np.inf
    assert check_inputs(sig, {"x": x}, 4) == 2


def test_check_inputs_bytes() -> None:
    sig = Signature((TensorSpec("s", "BYTES", (-1,)),), ())
    assert check_inputs(sig, {"s": np.array([b"a", b"bc"], dtype=object)}, 4) == 2


def test_all_check_errors_are_invalid_input() -> None:
    for cls in (UnknownInput, MissingInput, DatatypeMismatch, ShapeMismatch, InvalidValue,
                BatchTooLarge):
        assert issubclass(cls, InvalidInput)


def test_stack_concatenates_in_order() -> None:
    p1 = {"a": np.array([[1, 2]]), "b": np.array([1])}
    p2 = {"a": np.array([[3, 4], [5, 6]]), "b": np.array([2, 3])}
    out = stack([p1, p2])
    np.testing.assert_array_equal(out["a"], [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(out["b"], [1, 2, 3])
    assert stack([p1]) is p1


def test_split_cuts_back_by_counts() -> None:
    outputs = {"y": np.arange(6) * 10, "z": np.arange(12).reshape(6, 2)}
    parts = split(outputs, [1, 3, 2])
    assert [len(p["y"]) for p in parts] == [1, 3, 2]
    np.testing.assert_array_equal(parts[1]["y"], [10, 20, 30])
    np.testing.assert_array_equal(parts[2]["z"], [[8, 9], [10, 11]])
    assert split(outputs, [6])[0] is outputs


@pytest.mark.parametrize("bad", [np.arange(5), np.float32(1.0).reshape(())])
def test_split_rejects_wrong_row_counts(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="one row per input row"):
        split({"y": bad}, [2, 4])


def test_stack_split_round_trip() -> None:
    rng = np.random.default_rng(1)
    parts = [{"x": rng.random((n, 3)).astype(np.float32)} for n in (1, 4, 2, 7)]
    back = split(stack(parts), [1, 4, 2, 7])
    for p, b in zip(parts, back, strict=True):
        np.testing.assert_array_equal(p["x"], b["x"])


def test_shape_key_ignores_batch_axis() -> None:
    assert shape_key({"a": np.zeros((1, 3)), "b": np.zeros(1)}) == \
        shape_key({"a": np.zeros((9, 3)), "b": np.zeros(9)})
    assert shape_key({"a": np.zeros((1, 3))}) != shape_key({"a": np.zeros((1, 4))})
