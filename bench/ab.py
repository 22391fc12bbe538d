"""A/B of two Ferry source trees on the serving path, in one run, with the default store on.

Usage (from the repository root, with the project venv; REV checked out as a worktree):

    git worktree add --detach /tmp/ferry-base REV
    .venv/bin/python bench/ab.py --base /tmp/ferry-base/src [--new src] [--rounds 10]
        [--models tabular,mlp] [--seconds 5]

Both servers run at once, each pinned to CPU 1 (one is idle while the other is measured),
on ``bench/results/work/repo`` (made by ``bench/serving.py``), each with its own SQLite
evaluation store (the default ``ferry serve`` records every prediction). ``wrk -t1 -c64``
pinned to CPU 0 posts the one-row V2 JSON body, alternating the servers round by round
(the order flips each round), so a slow drift of the machine hits both. Prints, per model,
the median req/s of each and the median of the per-round ratios new/base. On this 2-core
machine single rounds swing by +-15 %: take 10 rounds or more and quote the median.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "results" / "work"


def start(src: str | None, folder: Path) -> tuple[subprocess.Popen[str], str]:
    """``ferry serve`` of the tree at ``src`` (None: the installed one) pinned to CPU 1."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve())
    proc = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-m", "ferry", "serve", str(WORK / "repo"),
         "--http-port", "0", "--grpc-port", "-1", "--log-level", "warning",
         "--store", f"sqlite:///{folder / 'ferry.db'}"],
        env=env, stderr=subprocess.PIPE, text=True, cwd=folder)
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"HTTP listening on (http://\S+)", line)
        if found:
            return proc, found.group(1)
    raise SystemExit(f"the server of {src or 'the installed tree'} did not start")


def rate(url: str, model: str, seconds: float) -> float:
    """req/s of one ``wrk -t1 -c64`` run (errors fail the run)."""
    env = {**os.environ, "BODY_FILE": str(WORK / "bodies" / f"v2_{model}.json")}
    out = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", "-c64", f"-d{seconds:g}s", "--timeout", "5s",
         "-s", str(HERE / "wrk_post.lua"), f"{url}/v2/models/{model}/infer"],
        env=env, capture_output=True, text=True, timeout=seconds + 60).stdout
    summary = json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
    if summary["err_status"] or summary["err_timeout"]:
        raise SystemExit(f"wrk saw errors: {summary}")
    return float(summary["requests"]) / (summary["duration_us"] / 1e6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the base tree's src folder")
    ap.add_argument("--new", default=None, help="the new tree's src folder (default: installed)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--models", default="tabular,mlp")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    if not (WORK / "repo").exists():
        raise SystemExit("run bench/serving.py once first: it builds bench/results/work")
    folders = {side: Path(tempfile.mkdtemp(prefix=f"ferry-ab-{side}-")) for side in ("base", "new")}
    servers = {"base": start(args.base, folders["base"]), "new": start(args.new, folders["new"])}
    try:
        for model in args.models.split(","):
            for _, url in servers.values():
                rate(url, model, 3)  # warm-up
            got: dict[str, list[float]] = {"base": [], "new": []}
            for r in range(args.rounds):
                for side in ("base", "new") if r % 2 == 0 else ("new", "base"):
                    got[side].append(rate(servers[side][1], model, args.seconds))
            ratios = [n / b for n, b in zip(got["new"], got["base"], strict=True)]
            print(f"{model} c=64: base {statistics.median(got['base']):,.0f} req/s, new "
                  f"{statistics.median(got['new']):,.0f} req/s, new/base median "
                  f"{statistics.median(ratios):.3f} (rounds: "
                  f"{', '.join(f'{x:.2f}' for x in ratios)})", flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
