"""The physical limit: ONNX Runtime ``session.run`` in-process, no HTTP, no JSON.

Usage: taskset -c 1 python bench/inproc.py WORK [--models tabular,mlp] [--batches 1,64]
                          [--runs 7] [--seconds 1.0] [--idle-wait 0] [--out FILE]

Loads ``WORK/repo/<model>/1/model.onnx`` (built by ``bench/models.py``) with 1 intra-op
thread and sequential execution, and for each model and batch size times ``--runs`` runs of
about ``--seconds`` each (after a warm-up), back to back. rows/s is the median over the runs
of ``batch * calls / elapsed``. Run it pinned to the core the server gets (``taskset -c 1``)
so the number is the ceiling for one core. Prints one JSON document (and writes it to
``--out`` if given): ``{"points": [{model, batch, rows_s, calls_s, ms_per_call, runs}, ...]}``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import busy_seconds, wait_quiet  # noqa: E402
from models import FEATURES, ort_session  # noqa: E402

WARMUP_CALLS = 50
MAX_CALLS_PER_RUN = 10_000_000  # a bound on the timing loop, far above what a second allows


def time_runs(fn: Callable[[], Any], runs: int, seconds: float) -> list[float]:
    """Call ``fn`` repeatedly for ``runs`` runs of ~``seconds``; return calls/s per run."""
    for _ in range(WARMUP_CALLS):
        fn()
    rates = []
    for _ in range(runs):
        calls = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        now = t0
        while now < deadline and calls < MAX_CALLS_PER_RUN:
            fn()
            calls += 1
            now = time.perf_counter()
        rates.append(calls / (now - t0))
    return rates


def measure(work: Path, models: list[str], batches: list[int], runs: int,
            seconds: float, idle_wait_s: float = 0.0) -> list[dict[str, Any]]:
    """Time ``session.run`` for every model and batch size; one dict per point.

    With ``idle_wait_s`` > 0, each point first waits (at most that long) for the machine to
    be idle. Every point records ``foreign_cpu_s``: CPU time the rest of the machine used
    while it ran (other jobs on a shared box; near 0 means undisturbed).
    """
    rng = np.random.default_rng(1)
    points = []
    for model in models:
        sess = ort_session(work / "repo" / model / "1" / "model.onnx")
        scale = 3.0 if model == "tabular" else 1.0  # tabular inputs are X * 3 + 1.5
        for batch in batches:
            x = (rng.standard_normal((batch, FEATURES[model])) * scale).astype(np.float32)
            run = functools.partial(sess.run, None, {"input": x})
            waited = wait_quiet(idle_wait_s)[0] if idle_wait_s > 0 else 0.0
            b0, c0 = busy_seconds(), sum(os.times()[:2])
            rates = time_runs(run, runs, seconds)
            foreign = busy_seconds() - b0 - (sum(os.times()[:2]) - c0)
            calls_s = float(np.median(rates))
            points.append({"model": model, "batch": batch, "rows_s": calls_s * batch,
                           "calls_s": calls_s, "ms_per_call": 1e3 / calls_s,
                           "runs": [round(r * batch, 1) for r in rates],
                           "foreign_cpu_s": round(foreign, 2), "waited_quiet_s": waited})
    return points


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point: measure, print the JSON document, return it."""
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path, help="work directory built by bench/models.py")
    ap.add_argument("--models", default="tabular,mlp")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--idle-wait", type=float, default=0.0,
                    help="before each point wait up to this many s for an idle machine")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    points = measure(args.work.resolve(), args.models.split(","),
                     [int(b) for b in args.batches.split(",")], args.runs, args.seconds,
                     args.idle_wait)
    doc = {"what": "in-process onnxruntime session.run, 1 intra-op thread, sequential",
           "onnxruntime": ort.__version__, "affinity": sorted(os.sched_getaffinity(0)),
           "points": points}
    text = json.dumps(doc)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return doc


if __name__ == "__main__":
    main()
