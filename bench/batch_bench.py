"""Batch scoring benchmark: ``ferry batch`` against the in-process limit.

Usage: python bench/batch_bench.py [WORK] [--models tabular,mlp] [--runs 3]
                                   [--tabular-rows 2000000] [--mlp-rows 250000]
                                   [--baseline DIR] [--cases w1pin,w1,file,folder]
                                   [--quiet 0.1]
       python bench/batch_bench.py [WORK] --memory [--memory-rows 2000000,8000000]

Builds the bench models (bench/models.py), writes ``<model>-<rows>.parquet`` the way
``shared/bench/batch/make_data.py`` does (``id`` string + ``f0..fF-1`` float32 standard normal,
row groups of 65,536), then, for each of ``--runs`` rounds, times:

- the limit (``shared/bench/batch/limit.py``) on one core (``taskset -c 0``) and with two
  pinned worker processes writing a part file each; batch 8k for tabular, 1k for mlp (the
  sizes the anchors measured best);
- ``ferry batch <model> --map 'input=f{i}' --key id`` to Parquet: ``--workers 1`` pinned to
  core 0 like the limit, and unpinned, to one file; ``--workers 2`` to one file (the main
  process writes) and to a folder of part files (each worker writes its own, like the limit).

Each ratio uses the pipeline seconds each tool reports itself (from opening the input to the
output being closed; ferry's includes resolving and loading the model, the run record and the
atomic publish). Medians are printed as a table; every output's row count is checked. The
last column holds the medians of each round's own ratios to that round's limits, which are
steadier than the ratios of medians on a busy machine.

Before each run the bench waits (up to 2 min) until the box is less than ``--quiet`` (10 %)
busy, as the anchors' driver did.

``--baseline DIR`` also times an older Ferry side by side, in the same rounds: DIR holds its
``src/`` (e.g. ``git archive <commit> src | tar -x -C DIR``), put first on ``PYTHONPATH``.

``--memory`` runs ``ferry batch tabular --workers 2`` to a folder on each size in
``--memory-rows`` and reports the peak of the summed Pss of the whole process tree (sampled
every 0.1 s from /proc), to show that memory stays flat as the input grows.
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
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "bench" / "batch"
WIDTH = {"tabular": 32, "mlp": 256}
LIMIT_BATCH = {"tabular": 8192, "mlp": 1024}


def make_data(path: Path, rows: int, width: int = 32) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(20261121)
    group = 65536
    schema = pa.schema([("id", pa.string())] + [(f"f{j}", pa.float32()) for j in range(width)])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, group):
            n = min(group, rows - start)
            x = rng.standard_normal((n, width), dtype=np.float32)
            cols = [pa.array([f"id{i:09d}" for i in range(start, start + n)])]
            cols += [pa.array(x[:, j]) for j in range(width)]
            writer.write_table(pa.Table.from_arrays(cols, schema=schema), row_group_size=n)


def run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout + out.stderr


def limit(work: Path, data: Path, model: Path, workers: int) -> float:
    out = work / f"limit-{model.stem}-{workers}"
    cmd = [sys.executable, str(SHARED / "limit.py"), str(data), str(model), str(out),
           "--batch", str(LIMIT_BATCH[model.stem]), "--workers", str(workers)]
    if workers == 1:
        cmd = ["taskset", "-c", "0", *cmd]
    text = run(cmd)
    result = json.loads(text.split("RESULT ", 1)[1].splitlines()[0])
    return float(result["rows"]) / float(result["seconds"])


def ferry_cmd(work: Path, data: Path, repo: Path, model: str, workers: int, out: str,
              ) -> list[str]:
    return [sys.executable, "-m", "ferry", "batch", model, "--input", str(data), "--output",
            out, "--map", "input=f{i}", "--key", "id", "--workers", str(workers), "-q",
            "--repository", str(repo), "--store", f"sqlite:///{work / 'runs.db'}"]


def ferry(work: Path, data: Path, repo: Path, model: str, workers: int, pin: bool,
          folder: bool, rows: int, src: Path | None = None) -> float:
    name = f"ferry-{model}-{workers}{'p' if pin else ''}{'-base' if src else ''}"
    out = f"{work / name}/" if folder else str(work / f"{name}.parquet")
    cmd = ferry_cmd(work, data, repo, model, workers, out)
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
    text = run(cmd, {"PYTHONPATH": str(src)} if src else None)
    match = re.search(r"(\d+) rows in, (\d+) out.*?, ([\d.]+) s \(", text)
    if match is None:
        raise SystemExit(text)
    if int(match.group(2)) != rows or _rows(out) != rows:
        raise SystemExit(f"ferry wrote {match.group(2)} rows, expected {rows}")
    return rows / float(match.group(3))


def _busy(seconds: float = 1.0) -> float:
    """Share of the box's CPU time spent busy over ``seconds`` (from /proc/stat)."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(threshold: float, timeout: float = 120.0) -> None:
    """Wait (up to ``timeout`` s) until the box is less than ``threshold`` busy, as the
    anchors' driver did before each run; other people's jobs skew a run more than noise."""
    deadline = time.monotonic() + timeout
    while threshold > 0 and _busy() >= threshold and time.monotonic() < deadline:
        pass


def _rows(out: str) -> int:
    import pyarrow.dataset as ds

    return int(ds.dataset(out.rstrip("/"), format="parquet").count_rows())


def prepare(work: Path, model: str, rows: int) -> tuple[Path, Path, Path]:
    repo = work / "repo"
    if not (repo / model / "1" / "model.onnx").exists():
        run([sys.executable, str(ROOT / "bench" / "models.py"), str(work)])
    onnx = work / f"{model}.onnx"  # limit.py tells the model by the file's name
    onnx.write_bytes((repo / model / "1" / "model.onnx").read_bytes())
    data = work / f"{model}-{rows}.parquet"
    if not data.exists():
        make_data(data, rows, WIDTH[model])
    return repo, onnx, data


FERRY_CASES = {  # --cases key: (label, workers, pinned to core 0, folder output)
    "w1pin": ("ferry --workers 1 (taskset -c 0)", 1, True, False),
    "w1": ("ferry --workers 1", 1, False, False),
    "file": ("ferry --workers 2 -> one file", 2, False, False),
    "folder": ("ferry --workers 2 -> folder of parts", 2, False, True),
}


def bench_model(work: Path, model: str, rows: int, runs: int, baseline: Path | None = None,
                only: tuple[str, ...] = tuple(FERRY_CASES), quiet: float = 0.1) -> None:
    repo, onnx, data = prepare(work, model, rows)
    cases: list[tuple[str, Callable[[], float]]] = [
        ("limit, 1 core (taskset -c 0)", lambda: limit(work, data, onnx, 1)),
        ("limit, 2 workers (part files)", lambda: limit(work, data, onnx, 2)),
    ]
    for src in ([None, baseline / "src"] if baseline else [None]):
        tag = " (baseline)" if src else ""
        for key, (label, workers, pin, folder) in FERRY_CASES.items():
            if key in only:
                cases.append((label + tag, lambda w=workers, p=pin, f=folder, src=src:
                              ferry(work, data, repo, model, w, p, f, rows, src)))
    results: dict[str, list[float]] = {}
    for _ in range(runs):
        for name, fn in cases:
            wait_quiet(quiet)
            results.setdefault(name, []).append(fn())
    med = {k: statistics.median(v) for k, v in results.items()}
    one, two = med[cases[0][0]], med[cases[1][0]]
    limit1, limit2 = results[cases[0][0]], results[cases[1][0]]
    print(f"\n{rows:,} {model} rows, Parquet in/out, medians of {runs} (work: {work})\n")
    print("| run | rows/s | min-max | vs 1-core / 2-worker limit | same, per round |")
    print("|---|--:|--:|--:|--:|")
    for k, v in med.items():
        r1 = statistics.median(r / t for r, t in zip(results[k], limit1, strict=True))
        r2 = statistics.median(r / t for r, t in zip(results[k], limit2, strict=True))
        print(f"| {k} | {v:,.0f} | {min(results[k]):,.0f}-{max(results[k]):,.0f} | "
              f"{v / one:.2f} / {v / two:.2f} | {r1:.2f} / {r2:.2f} |")


def _tree_pss_kib(root: int) -> int:
    """Summed Pss of ``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def memory(work: Path, sizes: list[int]) -> None:
    print("\n| rows | seconds | rows/s | peak tree Pss |")
    print("|--:|--:|--:|--:|")
    for rows in sizes:
        repo, _, data = prepare(work, "tabular", rows)
        cmd = ferry_cmd(work, data, repo, "tabular", 2, f"{work / f'mem-{rows}'}/")
        peak = 0
        started = time.monotonic()
        log = work / f"mem-{rows}.log"
        with open(log, "w") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                peak = max(peak, _tree_pss_kib(proc.pid))
                time.sleep(0.1)
        seconds = time.monotonic() - started
        if proc.returncode:
            raise SystemExit(log.read_text())
        print(f"| {rows:,} | {seconds:.2f} | {rows / seconds:,.0f} | {peak / 1024:,.0f} MiB |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", nargs="?")
    ap.add_argument("--models", default="tabular,mlp")
    ap.add_argument("--tabular-rows", type=int, default=2_000_000)
    ap.add_argument("--mlp-rows", type=int, default=250_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--memory-rows", default="2000000,8000000")
    ap.add_argument("--baseline", type=Path, help="folder holding an older Ferry's src/, "
                                                  "timed side by side")
    ap.add_argument("--quiet", type=float, default=0.1,
                    help="before each run, wait (up to 2 min) until the box is less than "
                         "this busy (0: do not wait)")
    ap.add_argument("--cases", default=",".join(FERRY_CASES),
                    help=f"ferry runs to time, of {','.join(FERRY_CASES)}")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="ferry-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if a.memory:
        memory(work, [int(r) for r in a.memory_rows.split(",")])
        return
    for model in a.models.split(","):
        rows = a.tabular_rows if model == "tabular" else a.mlp_rows
        bench_model(work, model, rows, a.runs, a.baseline, tuple(a.cases.split(",")), a.quiet)


if __name__ == "__main__":
    main()
