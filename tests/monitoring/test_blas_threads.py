"""The monitor computes on one BLAS thread and puts the setting back afterwards, also when
reports nest or several threads ask for one at once (``monitoring/blas.py``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ferry.monitoring.blas import one_blas_thread

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads() -> set[int]:
    np.dot(np.ones(3), np.ones(3))  # numpy's BLAS is loaded
    return {i["num_threads"] for i in threadpoolctl.threadpool_info()
            if i["user_api"] == "blas"}


def test_one_thread_inside_and_the_setting_restored():
    before = _blas_threads()
    with one_blas_thread():
        assert _blas_threads() == {1}
        with one_blas_thread():
            assert _blas_threads() == {1}
        assert _blas_threads() == {1}  # the outer block still holds it
    assert _blas_threads() == before


def test_reports_in_threads_run_one_at_a_time_and_restore_the_setting():
    before = _blas_threads()
    seen: list[set[int]] = []
    running = [0]
    overlapped = threading.Event()
    start = threading.Barrier(3)

    @one_blas_thread()
    def report() -> None:
        running[0] += 1
        if running[0] > 1:
            overlapped.set()
        seen.append(_blas_threads())
        threading.Event().wait(0.05)
        running[0] -= 1

    def worker() -> None:
        start.wait(timeout=10)
        report()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    start.wait(timeout=10)
    for t in threads:
        t.join(timeout=10)
    assert not overlapped.is_set()
    assert seen == [{1}, {1}]
    assert _blas_threads() == before
    later = threading.Thread(target=report)  # no thread kept control of the setting
    later.start()
    later.join(timeout=10)
    assert seen[-1] == {1} and _blas_threads() == before
