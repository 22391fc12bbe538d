"""Drift over logged rows, read from the store: how long ``build_report`` takes for N rows x
20 features (one row per logged request, as served traffic logs them), against a plain
``scipy.stats.ks_2samp`` loop over the same columns.

Usage (repository root):

    .venv/bin/python bench/evalstore_drift.py [--rows 1000000] [--reference 100000]

Steps: a SQLite store in a temp folder; a reference profile of ``--reference`` normal rows;
``--rows`` logged records written through the writer's insert path in batches of 4,096 (3
features shifted by 0.2 sigma); then the report timed end to end (read + decode + profile +
tests) and the scipy loop on the same arrays. Prints seconds and rows/s.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ferry.evalstore.features import feature_layout
from ferry.evalstore.spill import Spill
from ferry.evalstore.batches import build_batches
from ferry.evalstore.writer import StoreWriter
from ferry.types import InferenceRecord, Signature, TensorSpec

FEATURES = 20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reference", type=int, default=100_000)
    args = ap.parse_args()
    import orjson
    from scipy import stats

    from ferry.evalstore.schema import model_versions, references
    from ferry.monitoring.reference import reference_profile
    from ferry.monitoring.report import build_report

    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-drift-"))
    try:
        writer = StoreWriter(f"sqlite:///{tmp / 'b.db'}", Spill(tmp / "spill", 1 << 20))
        writer._connect()
        engine = writer.engine
        assert engine is not None
        sig = Signature((TensorSpec("x", "FP32", (-1, FEATURES)),),
                        (TensorSpec("y", "FP32", (-1,)),))
        layout = feature_layout(sig)
        rng = np.random.default_rng(0)
        ref = rng.normal(size=(args.reference, FEATURES)).astype(np.float32)
        profile = reference_profile({f"x[{i}]": ref[:, i] for i in range(FEATURES)}, layout)
        now = time.time()
        with engine.begin() as conn:
            conn.execute(model_versions.insert(), {"model": "m", "version": 1, "updated": now,
                                                   "layout": orjson.dumps(layout.to_json())})
            conn.execute(references.insert(), {"model": "m", "version": 1, "source": "bench",
                                               "sha256": "0", "created": now,
                                               "profile": profile.to_bytes()})
        live = rng.normal(size=(args.rows, FEATURES)).astype(np.float32)
        live[:, :3] += 0.2
        started = time.perf_counter()
        chunk = 4096  # the writer's batch size: one batch row per flush of 4,096 requests
        for lo in range(0, args.rows, chunk):
            records = [InferenceRecord(f"r{i}", "m", 1, {"x": live[i:i + 1]},
                                       {"y": live[i:i + 1, 0]}, "success", None, 0.001,
                                       now - 60 + i * 1e-6)
                       for i in range(lo, min(args.rows, lo + chunk))]
            writer._insert(build_batches(records))
        write_s = time.perf_counter() - started
        print(f"logged {args.rows} rows x {FEATURES} features in {write_s:.1f} s "
              f"({args.rows / write_s:,.0f} rows/s)")
        stats.ks_2samp([0.0, 1.0], [0.0, 2.0])  # a server has scipy imported already
        started = time.perf_counter()
        report = build_report(engine, "m", 3600, 1)
        report_s = time.perf_counter() - started
        print(f"monitor report: {report_s:.2f} s ({args.rows / report_s:,.0f} rows/s), "
              f"rows {report['window']['rows']}, drifted {report['drift']['drifted_features']}")
        started = time.perf_counter()
        for i in range(FEATURES):
            stats.ks_2samp(ref[:, i], live[:, i])
        scipy_s = time.perf_counter() - started
        print(f"scipy ks_2samp loop on the in-memory arrays: {scipy_s:.2f} s; "
              f"report / scipy = {report_s / scipy_s:.1f}x")
        engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
