"""The Ray engine against Ray Data written by hand, on this machine.

Usage: python bench/batch_ray_bench.py [WORK] [--rows 2000000] [--runs 3]
(needs ``pip install 'ferry[ray]'``; data and models as bench/batch_bench.py makes them)

Each round runs, as separate commands, each starting and stopping its own local Ray:
- ``shared/bench/batch/ray_batch.py`` (Ray Data by hand: read_parquet -> map_batches with an
  actor pool of ORT sessions -> write_parquet; 2 actors, pyarrow batches of 8k, the anchors'
  best setting);
- ``ferry batch tabular --engine ray`` to a folder of part files and to one file.

Reported: whole-command rows/s (wall time of the command, everything included) and pipeline
rows/s (Ray by hand: its own read..write seconds; ferry: its reported run seconds minus
Ray's start and stop, which the run reports). Medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_bench import SHARED, ferry_cmd, prepare, run  # noqa: E402


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.monotonic()
    text = run(cmd, env)
    return time.monotonic() - started, text


def by_hand(work: Path, data: Path, onnx: Path) -> tuple[float, float]:
    out = work / "ray-by-hand"
    cmd = [sys.executable, str(SHARED / "ray_batch.py"), str(data), str(onnx), str(out),
           "--batch", "8192", "--format", "pyarrow", "--concurrency", "2"]
    wall, text = timed(cmd, {"PYTHONPATH": str(SHARED)})
    result = json.loads(text.split("RESULT ", 1)[1].splitlines()[0])
    return wall, float(result["seconds"])


def ferry_ray(work: Path, data: Path, repo: Path, out: str) -> tuple[float, float, float]:
    """Whole-command seconds, pipeline seconds (run minus Ray start/stop), Ray start/stop."""
    cmd = [*ferry_cmd(work, data, repo, "tabular", 2, out), "--engine", "ray"]
    wall, text = timed(cmd)
    match = re.search(r"rows in.*?, ([\d.]+) s \(.*Ray start and stop: ([\d.]+) s", text)
    if match is None:
        raise SystemExit(text)
    return wall, float(match.group(1)) - float(match.group(2)), float(match.group(2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", nargs="?")
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="ferry-ray-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    repo, onnx, data = prepare(work, "tabular", a.rows)
    walls: dict[str, list[float]] = {}
    pipes: dict[str, list[float]] = {}
    fixed: list[float] = []
    for _ in range(a.runs):
        wall, pipe = by_hand(work, data, onnx)
        walls.setdefault("Ray Data by hand", []).append(wall)
        pipes.setdefault("Ray Data by hand", []).append(pipe)
        for name, out in (("ferry --engine ray -> folder", f"{work / 'ray-parts'}/"),
                          ("ferry --engine ray -> one file", str(work / "ray-one.parquet"))):
            wall, pipe, start_stop = ferry_ray(work, data, repo, out)
            walls.setdefault(name, []).append(wall)
            pipes.setdefault(name, []).append(pipe)
            fixed.append(start_stop)
    base_wall = statistics.median(walls["Ray Data by hand"])
    base_pipe = statistics.median(pipes["Ray Data by hand"])
    print(f"\n{a.rows:,} tabular rows, Parquet in/out, 2 actors, medians of {a.runs}\n")
    print("| run | whole cmd s | rows/s whole | vs by hand | pipeline rows/s | vs by hand |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, values in walls.items():
        wall = statistics.median(values)
        pipe = statistics.median(pipes[name])
        print(f"| {name} | {wall:.2f} | {a.rows / wall:,.0f} | {base_wall / wall:.2f} | "
              f"{a.rows / pipe:,.0f} | {base_pipe / pipe:.2f} |")

    print(f"\nferry's Ray start + stop (ray.init, shutdown): median "
          f"{statistics.median(fixed):.2f} s of the whole command (the rest of the fixed "
          f"cost is Python and Ray imports)")


if __name__ == "__main__":
    main()
