"""Drift over logged rows, read from the store: how long ``build_report`` takes for N rows x
20 features (one row per logged request, as served traffic logs them), against a plain
``scipy.stats.ks_2samp`` loop over the same columns.

Usage (repository root; benchmarks take the shared lock):

    flock /tmp/ferry-bench.lock .venv/bin/python bench/evalstore_drift.py --rows 1000000

Steps: a SQLite store in a temp folder; a reference profile of ``--reference`` normal rows;
``--rows`` logged records written through the writer's insert path in batches of 4,096
(drift planted in a few features, see ``PLANTED``); then ``--rounds`` rounds of the report
timed end to end (read + decode + profile + tests + quality + multivariate) and of the
scipy loop on the same arrays. Prints each round, the medians and rows/s.

``bench/drift_vs_evidently.py`` reuses ``planted_data`` and ``Store`` to compare with
Evidently on the same rows.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferry.evalstore.batches import build_batches
from ferry.evalstore.features import feature_layout
from ferry.evalstore.spill import Spill
from ferry.evalstore.writer import StoreWriter
from ferry.types import InferenceRecord, Signature, TensorSpec

FEATURES = 20
PLANTED: dict[int, tuple[str, float]] = {
    0: ("mean", 0.5),   # clear shift
    1: ("mean", 0.2),   # the old bench's shift
    2: ("scale", 1.5),  # same mean, wider
    3: ("mean", 0.15),  # above the 0.1 sigma threshold, not by much
    4: ("mean", 0.03),  # harmless: a KS p-value flags it at 100k rows, the distance does not
}
"""Feature index -> (kind, size): ``mean`` adds size sigmas, ``scale`` multiplies the
spread. Every other feature is drawn from the reference's distribution."""


def planted_data(rows: int, features: int = FEATURES, reference: int | None = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(reference, current) float32 matrices of standard normal columns, with
    ``PLANTED`` applied to the current one."""
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(reference or rows, features)).astype(np.float32)
    cur = rng.normal(size=(rows, features)).astype(np.float32)
    for i, (kind, size) in PLANTED.items():
        if i < features:
            cur[:, i] = cur[:, i] * size if kind == "scale" else cur[:, i] + size
    return ref, cur


def planted_name(i: int) -> str:
    kind, size = PLANTED.get(i, ("none", 0.0))
    return {"mean": f"+{size} sigma mean", "scale": f"x{size} spread"}.get(kind, "-")


@dataclass
class Store:
    """A SQLite evaluation store in ``folder`` with model ``m`` version 1: input ``x``
    (FP32 [-1, features]) and output ``y`` (FP32 [-1])."""

    folder: Path
    features: int = FEATURES

    def __post_init__(self) -> None:
        self.writer = StoreWriter(f"sqlite:///{self.folder / 'bench.db'}",
                                  Spill(self.folder / "spill", 1 << 20))
        self.writer._connect()
        assert self.writer.engine is not None
        self.engine = self.writer.engine
        sig = Signature((TensorSpec("x", "FP32", (-1, self.features)),),
                        (TensorSpec("y", "FP32", (-1,)),))
        self.layout = feature_layout(sig)

    def register_reference(self, ref: np.ndarray) -> float:
        """Profile ``ref`` and store it as version 1's reference; returns the seconds the
        profile took (a one-off cost, paid when a reference is registered)."""
        import orjson

        from ferry.evalstore.schema import model_versions, references
        from ferry.monitoring.reference import reference_profile

        started = time.perf_counter()
        profile = reference_profile({f"x[{i}]": ref[:, i] for i in range(self.features)},
                                    self.layout)
        seconds = time.perf_counter() - started
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(model_versions.insert(), {
                "model": "m", "version": 1, "updated": now,
                "layout": orjson.dumps(self.layout.to_json())})
            conn.execute(references.insert(), {
                "model": "m", "version": 1, "source": "bench", "sha256": "0",
                "created": now, "profile": profile.to_bytes()})
        return seconds

    def log(self, live: np.ndarray) -> float:
        """Write one record per row through the writer's insert path, 4,096 records per
        batch (the writer's flush size), timestamped within the last minute; seconds."""
        now = time.time()
        started = time.perf_counter()
        chunk = 4096
        for lo in range(0, len(live), chunk):
            records = [InferenceRecord(f"r{i}", "m", 1, {"x": live[i:i + 1]},
                                       {"y": live[i:i + 1, 0]}, "success", None, 0.001,
                                       now - 60 + i * 1e-6)
                       for i in range(lo, min(len(live), lo + chunk))]
            self.writer._insert(build_batches(records))
        return time.perf_counter() - started

    def report(self) -> dict[str, Any]:
        from ferry.monitoring.report import build_report

        return build_report(self.engine, "m", 3600, 1)

    def close(self) -> None:
        self.engine.dispose()


def scipy_loop(ref: np.ndarray, cur: np.ndarray) -> list[float]:
    """``scipy.stats.ks_2samp`` per column: the p-values."""
    from scipy import stats

    return [float(stats.ks_2samp(ref[:, i], cur[:, i]).pvalue) for i in range(ref.shape[1])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000,
                    help="logged rows (default 1000000), e.g. --rows 100000")
    ap.add_argument("--reference", type=int, default=100_000,
                    help="reference rows (default 100000), e.g. --reference 50000")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    args = ap.parse_args()
    from scipy import stats

    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-drift-"))
    try:
        store = Store(tmp)
        ref, live = planted_data(args.rows, reference=args.reference)
        profile_s = store.register_reference(ref)
        write_s = store.log(live)
        print(f"reference profile of {args.reference} rows: {profile_s:.2f} s (once)")
        print(f"logged {args.rows} rows x {FEATURES} features in {write_s:.1f} s "
              f"({args.rows / write_s:,.0f} rows/s)")
        stats.ks_2samp([0.0, 1.0], [0.0, 2.0])  # a server has scipy imported already
        store.report()  # and has imported what the report needs
        reports, loops = [], []
        for r in range(args.rounds):
            started = time.perf_counter()
            report = store.report()
            reports.append(time.perf_counter() - started)
            started = time.perf_counter()
            scipy_loop(ref, live)
            loops.append(time.perf_counter() - started)
            print(f"round {r + 1}: monitor report {reports[-1]:.2f} s, scipy loop "
                  f"{loops[-1]:.2f} s, drifted {report['drift']['drifted_features']}")
        report_s, scipy_s = statistics.median(reports), statistics.median(loops)
        print(f"median: monitor report {report_s:.2f} s ({args.rows / report_s:,.0f} rows/s, "
              f"{report['window']['rows']} rows from the store); scipy ks_2samp loop on the "
              f"in-memory arrays {scipy_s:.2f} s; report / scipy = {report_s / scipy_s:.2f}x")
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
