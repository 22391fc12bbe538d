"""Serving cost of the evaluation store: req/s with logging off (``--store none``) and on
(SQLite, every request recorded), same model, same body, alternating runs.

Usage (repository root; needs wrk and 2+ cores; builds models with bench/models.py first):

    .venv/bin/python bench/evalstore_logging.py [--work bench/results/work] [--model tabular]
        [--conc 16] [--duration 10] [--rounds 2] [--client-ids]

The server is pinned to CPU 1 (``taskset -c 1``), wrk to CPU 0, posting the one-row V2 JSON
body with bench/wrk_post.lua (``--client-ids``: bench/wrk_post_ids.lua, every request with
its own ``ferry-request-id``, so the store writes an index row per request). Prints one
line per run, with the server's CPU time per request (user + system, from /proc: other
load on the machine moves it much less than req/s), then the on/off ratio of the medians
and of each round. Only 127.0.0.1 traffic; every wait is bounded.
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), for CPU per request: a
    figure other load on the machine moves much less than req/s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    ap.add_argument("--client-ids", action="store_true",
                    help="send a unique ferry-request-id with every request")
    args = ap.parse_args()
    if not (args.work / "repo" / args.model).is_dir():
        subprocess.run([sys.executable, str(ROOT / "bench" / "models.py"), str(args.work)],
                       check=True)
    body = args.work / "bodies" / f"v2_{args.model}.json"
    script = ROOT / "bench" / ("wrk_post_ids.lua" if args.client_ids else "wrk_post.lua")
    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-store-"))
    results: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    rows_logged = 0
    try:
        for r in range(args.rounds):
            for mode in ("off", "on"):
                db = tmp / f"r{r}.db"
                store = "none" if mode == "off" else f"sqlite:///{db}"
                proc, base = start(args.work / "repo", store)
                url = f"{base}/v2/models/{args.model}/infer"
                try:
                    warm = wrk(url, body, args.conc, args.warmup, script)
                    cpu0 = cpu_seconds(proc.pid)
                    point = wrk(url, body, args.conc, args.duration, script)
                    point["cpu_us"] = (cpu_seconds(proc.pid) - cpu0) / point["requests"] * 1e6
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)
                results[mode].append(point["rps"])
                cpu[mode].append(point["cpu_us"])
                if mode == "on":
                    import sqlite3

                    with sqlite3.connect(db) as conn:
                        rows_logged = conn.execute(
                            "select coalesce(sum(records), 0) from prediction_batches"
                        ).fetchone()[0]
                print(f"round {r} logging {mode:3}: {point['rps']:8.0f} req/s  p50 "
                      f"{point['p50_us'] / 1000:.2f} ms  p99 {point['p99_us'] / 1000:.2f} ms  "
                      f"server CPU {point['cpu_us']:.1f} us/req  "
                      f"errors {point['err_status'] + point['err_timeout']}"
                      + (f"  records in store {rows_logged} (wrk counted "
                         f"{warm['requests'] + point['requests']:.0f} answers)"
                         if mode == "on" else ""),
                      flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    off, on = statistics.median(results["off"]), statistics.median(results["on"])
    pairs = sorted(b / a for a, b in zip(results["off"], results["on"], strict=True))
    print(f"\n{args.model} c={args.conc}: off {off:.0f} req/s, on {on:.0f} req/s, "
          f"on/off = {on / off:.1%} (target >= 90%); per-round ratios "
          + ", ".join(f"{r:.1%}" for r in pairs))
    c_off, c_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    print(f"server CPU per request: off {c_off:.1f} us, on {c_on:.1f} us, "
          f"off/on = {c_off / c_on:.1%}")


if __name__ == "__main__":
    main()
