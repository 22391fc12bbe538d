"""A/B of two Ferry source trees on the serving path, in one run, with the default store on.

Usage (from the repository root, with the project venv; REV checked out as a worktree):

    git worktree add --detach ../ferry-base REV
    .venv/bin/python bench/ab.py --base ../ferry-base/src [--new src] [--rounds 10]
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
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from serving import Ferry, run_wrk  # noqa: E402

WORK = HERE / "results" / "work"


def start(src: str | None, folder: Path) -> Ferry:
    """``ferry serve`` of the tree at ``src`` (None: the installed one) pinned to CPU 1,
    with its own SQLite evaluation store in ``folder``."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve())
    return Ferry([sys.executable, "-m", "ferry"], WORK / "repo", folder / "ferry.log",
                 ["--store", f"sqlite:///{folder / 'ferry.db'}"], env)


def rate(url: str, model: str, seconds: float, logfile: Path) -> float:
    """req/s of one ``wrk -t1 -c64`` run (errors fail the run)."""
    summary, _ = run_wrk(f"{url}/v2/models/{model}/infer", WORK / "bodies" / f"v2_{model}.json",
                         64, seconds, logfile)
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
    wrk_log = folders["new"] / "wrk.log"
    try:
        for model in args.models.split(","):
            for ferry in servers.values():
                rate(ferry.base, model, 3, wrk_log)  # warm-up
            got: dict[str, list[float]] = {"base": [], "new": []}
            for r in range(args.rounds):
                for side in ("base", "new") if r % 2 == 0 else ("new", "base"):
                    got[side].append(rate(servers[side].base, model, args.seconds, wrk_log))
            ratios = [n / b for n, b in zip(got["new"], got["base"], strict=True)]
            print(f"{model} c=64: base {statistics.median(got['base']):,.0f} req/s, new "
                  f"{statistics.median(got['new']):,.0f} req/s, new/base median "
                  f"{statistics.median(ratios):.3f} (rounds: "
                  f"{', '.join(f'{x:.2f}' for x in ratios)})", flush=True)
    finally:
        for ferry in servers.values():
            ferry.stop()
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
