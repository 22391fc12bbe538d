"""Ferry's monitor against Evidently's default drift report and a plain scipy KS loop, on
the same rows, in one run.

Usage (repository root; Evidently lives in its own throwaway virtualenv, never in Ferry's):

    python3 -m venv /tmp/evidently-venv
    /tmp/evidently-venv/bin/pip install evidently==0.7.23 'pandas<3'
    flock /tmp/ferry-bench.lock .venv/bin/python bench/drift_vs_evidently.py \\
        --evidently-python /tmp/evidently-venv/bin/python --rows 100000 --rounds 3

(Evidently 0.7.23 imports a pandas helper that pandas 3 removed, hence ``pandas<3``.)

Data: ``--rows`` reference rows and as many current rows, 20 standard normal float32
features, drift planted in features 0-4 (``evalstore_drift.PLANTED``: mean shifts of 0.5,
0.2, 0.15 and 0.03 sigma and a x1.5 spread). Each round runs, on those same matrices:

- **Evidently**: ``Report([DataDriftPreset()]).run(current, reference)`` in a subprocess
  of ``--evidently-python``; timed inside it (report built and run, after Python started,
  imported Evidently and made the DataFrames) and as the whole command's wall time. It
  gets one BLAS thread, as Ferry's monitor computes (``--evidently-blas-threads default``
  leaves OpenBLAS's own setting: slower on a busy machine).
  Evidently's default per column, with more than 1,000 reference rows and more than 5
  distinct values, is the Wasserstein distance divided by the reference's std, drifted at
  >= 0.1 (K-S p < 0.05 only for <= 1,000 rows).
- **scipy**: ``scipy.stats.ks_2samp`` per column on the in-memory arrays (p < 0.05).
- **Ferry**: ``build_report`` reading the rows the round before logged into a SQLite
  evaluation store (one record per row, 4,096 per batch, through the writer's insert
  path), against the reference profile stored when it was registered. The whole report:
  window read and decode, window profile (KLL sketches, 50,000-value samples), per-feature
  tests, "since" slices, MMD and domain classifier, quality rules, performance.

Prints each round, medians, the ratios, each side's decisions per feature and how busy
the machine was with other work during each measurement (2 shared cores: a busy machine
slows every side, so compare the ratios within a run, not times across runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402 - bench/machine.py
from evalstore_drift import FEATURES, Store, planted_data, planted_name, scipy_loop  # noqa: E402

EVIDENTLY_RUN = textwrap.dedent('''
    import json, sys, time
    started = time.perf_counter()
    import numpy as np
    import pandas as pd
    import evidently
    from evidently import Report
    from evidently.presets import DataDriftPreset
    ref, cur = np.load(sys.argv[1]), np.load(sys.argv[2])
    names = [f"x[{i}]" for i in range(ref.shape[1])]
    ref_df, cur_df = pd.DataFrame(ref, columns=names), pd.DataFrame(cur, columns=names)
    ready = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(current_data=cur_df, reference_data=ref_df)
    done = time.perf_counter()
    columns, share = {}, None
    for m in snapshot.dict()["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            p_value = "p_value" in cfg["method"]
            value = float(m["value"])
            columns[cfg["column"]] = {
                "method": cfg["method"], "threshold": cfg["threshold"], "value": value,
                "drifted": value < cfg["threshold"] if p_value else value >= cfg["threshold"]}
        elif cfg["type"].endswith("DriftedColumnsCount"):
            share = m["value"]
    json.dump({"version": evidently.__version__, "startup_s": ready - started,
               "run_s": done - ready, "columns": columns, "count": share},
              open(sys.argv[3], "w"))
''')


class Busy:
    """CPU seconds the rest of the machine used while a measurement ran (all cores, minus
    this process and its children)."""

    def __enter__(self) -> Busy:
        self.machine0 = machine.busy_seconds()
        self.own0 = self._own()
        self.wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        foreign = (machine.busy_seconds() - self.machine0) - (self._own() - self.own0)
        self.share = max(0.0, foreign) / max(self.wall, 1e-9) / (os.cpu_count() or 1)

    @staticmethod
    def _own() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
            resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_evidently(python: str, tmp: Path, one_blas_thread: bool
                  ) -> tuple[dict[str, Any], float, float]:
    out = tmp / "evidently.json"
    env = {**os.environ, "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}
    if one_blas_thread:  # as Ferry's monitor computes (monitoring/blas.py)
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with Busy() as busy:
        subprocess.run([python, str(tmp / "evidently_run.py"), str(tmp / "ref.npy"),
                        str(tmp / "cur.npy"), str(out)], check=True, env=env)
    return json.loads(out.read_text()), busy.wall, busy.share


def med(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--evidently-python", required=True,
                    help="python of a virtualenv with evidently installed, e.g. "
                         "--evidently-python /tmp/evidently-venv/bin/python")
    ap.add_argument("--rows", type=int, default=100_000,
                    help="reference rows and current rows (default 100000), e.g. --rows 50000")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (default 3), e.g. --rounds 5")
    ap.add_argument("--evidently-blas-threads", choices=["1", "default"], default="1",
                    help="BLAS threads for Evidently: 1 (default), as Ferry's monitor "
                         "uses, or its library default, e.g. --evidently-blas-threads default")
    args = ap.parse_args()
    from scipy import stats

    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-evidently-"))
    try:
        ref, cur = planted_data(args.rows)
        np.save(tmp / "ref.npy", ref)
        np.save(tmp / "cur.npy", cur)
        (tmp / "evidently_run.py").write_text(EVIDENTLY_RUN)
        store = Store(tmp)
        profile_s = store.register_reference(ref)
        log_s = store.log(cur)
        print(f"{args.rows} reference rows and {args.rows} current rows x {FEATURES} "
              f"features; Ferry: reference profiled once in {profile_s:.2f} s, current rows "
              f"logged to SQLite in {log_s:.1f} s")
        stats.ks_2samp([0.0, 1.0], [0.0, 2.0])  # a server has imported what it needs
        store.report()
        t: dict[str, list[float]] = {k: [] for k in (
            "ev_run", "ev_wall", "ev_busy", "scipy", "scipy_busy", "ferry", "ferry_busy")}
        for r in range(args.rounds):
            ev, wall, busy = run_evidently(args.evidently_python, tmp,
                                           args.evidently_blas_threads == "1")
            t["ev_run"].append(ev["run_s"])
            t["ev_wall"].append(wall)
            t["ev_busy"].append(busy)
            with Busy() as b:
                p_values = scipy_loop(ref, cur)
            t["scipy"].append(b.wall)
            t["scipy_busy"].append(b.share)
            with Busy() as b:
                report = store.report()
            t["ferry"].append(b.wall)
            t["ferry_busy"].append(b.share)
            print(f"round {r + 1}: Evidently {ev['run_s']:.2f} s (command {wall:.2f} s), "
                  f"scipy loop {t['scipy'][-1]:.3f} s, Ferry {t['ferry'][-1]:.3f} s; other "
                  f"work used {t['ev_busy'][-1]:.0%} / {t['scipy_busy'][-1]:.0%} / "
                  f"{t['ferry_busy'][-1]:.0%} of the machine meanwhile")
        ev_run, ev_wall = med(t["ev_run"]), med(t["ev_wall"])
        scipy_s, ferry_s = med(t["scipy"]), med(t["ferry"])
        print(f"\nmedians of {args.rounds} rounds (Evidently {ev['version']}):")
        print(f"  Evidently DataDriftPreset report      {ev_run:7.3f} s   "
              f"(whole command {ev_wall:.2f} s)")
        print(f"  scipy.stats.ks_2samp loop            {scipy_s:7.3f} s")
        print(f"  Ferry monitor report, from SQLite     {ferry_s:7.3f} s   "
              f"({args.rows / ferry_s:,.0f} rows/s)")
        print(f"  Evidently / Ferry = {ev_run / ferry_s:.1f}x (whole command: "
              f"{ev_wall / ferry_s:.1f}x); Ferry / scipy loop = {ferry_s / scipy_s:.2f}x")
        features = report["drift"]["features"]
        print("\nfeature  planted            Evidently W/std  drift | Ferry W/std  KS p     "
              " drift | scipy KS p  p<0.05")
        agree = True
        for i in range(FEATURES):
            name = f"x[{i}]"
            e, f = ev["columns"][name], features[name]
            agree &= e["drifted"] == f["drifted"]
            print(f"{name:8s} {planted_name(i):18s} {e['value']:15.4f}  {e['drifted']!s:5s} | "
                  f"{f['distance']:11.4f}  {f['p_value']:<9.3g} {f['drifted']!s:5s} | "
                  f"{p_values[i]:<10.3g}  {p_values[i] < 0.05!s}")
        scipy_flags = [f"x[{i}]" for i in range(FEATURES) if p_values[i] < 0.05]
        ev_flags = [n for n, c in ev["columns"].items() if c["drifted"]]
        print(f"\nflagged: Evidently {ev_flags}; Ferry {report['drift']['drifted_features']}; "
              f"scipy p<0.05 {scipy_flags}")
        print("Evidently and Ferry agree on every feature" if agree
              else "Evidently and Ferry DISAGREE on some feature (see the table)")
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
