"""Serving cost of the evaluation store: req/s with logging off (``--store none``) and on
(SQLite, every request recorded), same model, same body, alternating runs.

Usage (repository root; needs wrk and 2+ cores; builds models with bench/models.py first):

    .venv/bin/python bench/evalstore_logging.py [--work bench/results/work] [--model tabular]
        [--conc 16] [--duration 10] [--rounds 2]

The server is pinned to CPU 1 (``taskset -c 1``), wrk to CPU 0, posting the one-row V2 JSON
body with bench/wrk_post.lua. Prints one line per run and
the on/off ratio of the medians. Only 127.0.0.1 traffic; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start(repo: Path, store: str) -> tuple[subprocess.Popen[str], str]:
    cmd = ["taskset", "-c", "1", sys.executable, "-m", "ferry", "serve", str(repo),
           "--http-port", "0", "--grpc-port", "-1", "--log-level", "warning",
           "--store", store]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "FERRY_ALERTS_INTERVAL_S": "0"})
    deadline = time.monotonic() + 60
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "HTTP listening on " in line:
            return proc, line.strip().rsplit(" ", 1)[-1]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("server did not start")


def wrk(url: str, body: Path, conc: int, seconds: int, script: Path) -> dict[str, float]:
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", f"-c{conc}", f"-d{seconds}s",
                          "--latency", "-s", str(script), url],
                         env={**os.environ, "BODY_FILE": str(body)}, capture_output=True,
                         text=True, timeout=seconds + 60)
    line = next(x for x in out.stdout.splitlines() if x.startswith('{"requests"'))
    doc = json.loads(line)
    doc["rps"] = doc["requests"] / (doc["duration_us"] / 1e6)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "work")
    ap.add_argument("--model", default="tabular")
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if not (args.work / "repo" / args.model).is_dir():
        subprocess.run([sys.executable, str(ROOT / "bench" / "models.py"), str(args.work)],
                       check=True)
    body = args.work / "bodies" / f"v2_{args.model}.json"
    script = ROOT / "bench" / "wrk_post.lua"
    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-store-"))
    results: dict[str, list[float]] = {"off": [], "on": []}
    rows_logged = 0
    try:
        for r in range(args.rounds):
            for mode in ("off", "on"):
                db = tmp / f"r{r}.db"
                store = "none" if mode == "off" else f"sqlite:///{db}"
                proc, base = start(args.work / "repo", store)
                url = f"{base}/v2/models/{args.model}/infer"
                try:
                    wrk(url, body, args.conc, args.warmup, script)
                    point = wrk(url, body, args.conc, args.duration, script)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)
                results[mode].append(point["rps"])
                if mode == "on":
                    import sqlite3

                    with sqlite3.connect(db) as conn:
                        rows_logged = conn.execute("select count(*) from prediction_index"
                                                   ).fetchone()[0]
                print(f"round {r} logging {mode:3}: {point['rps']:8.0f} req/s  p50 "
                      f"{point['p50_us'] / 1000:.2f} ms  p99 {point['p99_us'] / 1000:.2f} ms  "
                      f"errors {point['err_status'] + point['err_timeout']}"
                      + (f"  rows in store {rows_logged}" if mode == "on" else ""),
                      flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    print(f"\n{args.model} c={args.conc}: off {off:.0f} req/s, on {on:.0f} req/s, "
          f"on/off = {on / off:.1%} (target >= 90%)")


if __name__ == "__main__":
    main()
