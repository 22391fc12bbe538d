"""Batch scoring benchmark: ``ferry batch`` against the in-process limit.

Usage: python bench/batch_bench.py [WORK] [--rows 2000000] [--runs 3]

Builds the ``tabular`` bench model (bench/models.py), writes ``tabular.parquet`` the way
``shared/bench/batch/make_data.py`` does (``id`` string + ``f0..f31`` float32 standard normal,
row groups of 65,536), then, for each of ``--runs`` rounds, times:

- the limit on one core (``shared/bench/batch/limit.py``, batch 8k, ``taskset -c 0``) and with
  two pinned worker processes;
- ``ferry batch tabular --map 'input=f{i}' --key id`` to Parquet with ``--workers 1`` (pinned
  to core 0 like the limit, and unpinned) and ``--workers 2``.

Each ratio uses the pipeline seconds each tool reports itself (from opening the input to the
output being closed; ferry's includes resolving and loading the model, the run record and the
atomic publish). Medians are printed as a table; every output's row count is checked.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "bench" / "batch"


def make_data(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(20261121)
    group = 65536
    schema = pa.schema([("id", pa.string())] + [(f"f{j}", pa.float32()) for j in range(32)])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, group):
            n = min(group, rows - start)
            x = rng.standard_normal((n, 32), dtype=np.float32)
            cols = [pa.array([f"id{i:09d}" for i in range(start, start + n)])]
            cols += [pa.array(x[:, j]) for j in range(32)]
            writer.write_table(pa.Table.from_arrays(cols, schema=schema), row_group_size=n)


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout + out.stderr


def limit(work: Path, data: Path, model: Path, workers: int) -> float:
    out = work / f"limit{workers}"
    cmd = [sys.executable, str(SHARED / "limit.py"), str(data), str(model), str(out),
           "--batch", "8192", "--workers", str(workers)]
    if workers == 1:
        cmd = ["taskset", "-c", "0", *cmd]
    text = run(cmd)
    result = json.loads(text.split("RESULT ", 1)[1].splitlines()[0])
    return float(result["rows"]) / float(result["seconds"])


def ferry(work: Path, data: Path, repo: Path, workers: int, pin: bool, rows: int) -> float:
    out = work / f"ferry{workers}{'p' if pin else ''}.parquet"
    cmd = [sys.executable, "-m", "ferry", "batch", "tabular", "--input", str(data), "--output",
           str(out), "--map", "input=f{i}", "--key", "id", "--workers", str(workers), "-q",
           "--repository", str(repo), "--store", f"sqlite:///{work / 'runs.db'}"]
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
    text = run(cmd)
    match = re.search(r"(\d+) rows in, (\d+) out.*?, ([\d.]+) s \(", text)
    if match is None:
        raise SystemExit(text)
    import pyarrow.parquet as pq

    if int(match.group(2)) != rows or pq.ParquetFile(out).metadata.num_rows != rows:
        raise SystemExit(f"ferry wrote {match.group(2)} rows, expected {rows}")
    return rows / float(match.group(3))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", nargs="?")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="ferry-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    repo = work / "repo"
    if not (repo / "tabular" / "1" / "model.onnx").exists():
        run([sys.executable, str(ROOT / "bench" / "models.py"), str(work)])
    model = work / "tabular.onnx"
    model.write_bytes((repo / "tabular" / "1" / "model.onnx").read_bytes())
    data = work / f"tabular-{a.rows}.parquet"
    if not data.exists():
        make_data(data, a.rows)
    results: dict[str, list[float]] = {}
    for _ in range(a.runs):
        for name, fn in (
                ("limit, 1 core (taskset -c 0)", lambda: limit(work, data, model, 1)),
                ("limit, 2 workers", lambda: limit(work, data, model, 2)),
                ("ferry --workers 1 (taskset -c 0)",
                 lambda: ferry(work, data, repo, 1, True, a.rows)),
                ("ferry --workers 1", lambda: ferry(work, data, repo, 1, False, a.rows)),
                ("ferry --workers 2", lambda: ferry(work, data, repo, 2, False, a.rows))):
            results.setdefault(name, []).append(fn())
    med = {k: statistics.median(v) for k, v in results.items()}
    one, two = med["limit, 1 core (taskset -c 0)"], med["limit, 2 workers"]
    print(f"\n{a.rows:,} tabular rows, Parquet in/out, medians of {a.runs} (work: {work})\n")
    print("| run | rows/s | min-max | vs 1-core limit | vs 2-worker limit |")
    print("|---|--:|--:|--:|--:|")
    for k, v in med.items():
        print(f"| {k} | {v:,.0f} | {min(results[k]):,.0f}-{max(results[k]):,.0f} | "
              f"{v / one:.2f} | {v / two:.2f} |")


if __name__ == "__main__":
    main()
