"""Serving cost of the evaluation store: req/s with logging off (``--store none``) and on
(SQLite, every request recorded), same model, same body.

Usage (repository root; needs wrk and 2+ cores; builds models with bench/models.py first):

    .venv/bin/python bench/evalstore_logging.py [--work bench/results/work] [--model tabular]
        [--conc 16] [--burst 2] [--rounds 8] [--client-ids]

Both servers run side by side, pinned to CPU 1 (``taskset -c 1``); wrk, pinned to CPU 0,
loads one at a time in short bursts (``--burst`` seconds), alternating off/on/on/off... for
``--rounds`` pairs, so the slow drifts of a shared machine's speed (here up to 20% within a
minute) hit both modes alike instead of whole runs. The idle server only wakes its timers.
wrk posts the one-row V2 JSON body with bench/wrk_post.lua (``--client-ids``:
bench/wrk_post_ids.lua, every request with its own ``ferry-request-id``, so the store
writes an index row per request). Prints each burst, then per mode the total req/s and the
server's CPU time per request (user + system of all its threads, from /proc), the on/off
ratio of the totals and the median of the per-pair ratios. Only 127.0.0.1 traffic; every
wait is bounded.
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


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU time so far of a process's main thread and of its other threads
    (Linux /proc), for CPU per request: a figure other load moves less than req/s."""
    main = other = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a thread that just ended
            continue
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if task.name == str(pid):
            main += seconds
        else:
            other += seconds
    return main, other


def wrk_start(url: str, body: Path, conc: int, seconds: int,
              script: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(["taskset", "-c", "0", "wrk", "-t1", f"-c{conc}", f"-d{seconds}s",
                             "--latency", "-s", str(script), url],
                            env={**os.environ, "BODY_FILE": str(body)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wrk_result(proc: subprocess.Popen[str], seconds: int) -> dict[str, float]:
    out, _ = proc.communicate(timeout=seconds + 60)
    line = next(x for x in out.splitlines() if x.startswith('{"requests"'))
    doc = json.loads(line)
    doc["rps"] = doc["requests"] / (doc["duration_us"] / 1e6)
    return doc


def wrk(url: str, body: Path, conc: int, seconds: int, script: Path) -> dict[str, float]:
    return wrk_result(wrk_start(url, body, conc, seconds, script), seconds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "work")
    ap.add_argument("--model", default="tabular")
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--burst", type=int, default=2, help="seconds of load per burst")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=8, help="off/on pairs of bursts")
    ap.add_argument("--together-rounds", type=int, default=5,
                    help="bursts with both servers loaded at once (0: none)")
    ap.add_argument("--client-ids", action="store_true",
                    help="send a unique ferry-request-id with every request")
    args = ap.parse_args()
    if not (args.work / "repo" / args.model).is_dir():
        subprocess.run([sys.executable, str(ROOT / "bench" / "models.py"), str(args.work)],
                       check=True)
    body = args.work / "bodies" / f"v2_{args.model}.json"
    script = ROOT / "bench" / ("wrk_post_ids.lua" if args.client_ids else "wrk_post.lua")
    tmp = Path(tempfile.mkdtemp(prefix="ferry-bench-store-"))
    db = tmp / "store.db"
    servers: dict[str, tuple[subprocess.Popen[str], str]] = {}
    totals = {mode: {"requests": 0.0, "seconds": 0.0, "cpu": 0.0, "other": 0.0}
              for mode in ("off", "on")}
    pairs: list[float] = []
    answered = 0
    try:
        servers["off"] = start(args.work / "repo", "none")
        servers["on"] = start(args.work / "repo", f"sqlite:///{db}")
        for mode, (_, base) in servers.items():
            warm = wrk(f"{base}/v2/models/{args.model}/infer", body, args.conc, args.warmup,
                       script)
            answered += int(warm["requests"]) if mode == "on" else 0
        for r in range(args.rounds):
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            rps: dict[str, float] = {}
            for mode in order:
                proc, base = servers[mode]
                cpu0 = cpu_seconds(proc.pid)
                point = wrk(f"{base}/v2/models/{args.model}/infer", body, args.conc,
                            args.burst, script)
                cpu1 = cpu_seconds(proc.pid)
                main_us = (cpu1[0] - cpu0[0]) / point["requests"] * 1e6
                other_us = (cpu1[1] - cpu0[1]) / point["requests"] * 1e6
                cpu_us = main_us + other_us
                totals[mode]["requests"] += point["requests"]
                totals[mode]["seconds"] += point["duration_us"] / 1e6
                totals[mode]["cpu"] += cpu_us * point["requests"]
                totals[mode]["other"] += other_us * point["requests"]
                answered += int(point["requests"]) if mode == "on" else 0
                rps[mode] = point["rps"]
                print(f"round {r} logging {mode:3}: {point['rps']:8.0f} req/s  p50 "
                      f"{point['p50_us'] / 1000:.2f} ms  p99 {point['p99_us'] / 1000:.2f} ms  "
                      f"server CPU {cpu_us:.1f} us/req (other threads {other_us:.1f})  "
                      f"errors {point['err_status'] + point['err_timeout']}", flush=True)
            pairs.append(rps["on"] / rps["off"])
        together = {"off": [0.0, 0.0], "on": [0.0, 0.0]}  # requests, CPU seconds
        for _ in range(args.together_rounds):
            cpu0 = {m: sum(cpu_seconds(p.pid)) for m, (p, _) in servers.items()}
            runs = {m: wrk_start(f"{base}/v2/models/{args.model}/infer", body, args.conc,
                                 args.burst, script) for m, (_, base) in servers.items()}
            done = {m: wrk_result(r, args.burst) for m, r in runs.items()}
            for m, (p, _) in servers.items():
                together[m][0] += done[m]["requests"]
                together[m][1] += sum(cpu_seconds(p.pid)) - cpu0[m]
            answered += int(done["on"]["requests"])
    finally:
        for proc, _ in servers.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in servers.values():
            proc.wait(60)
    import sqlite3

    with sqlite3.connect(db) as conn:
        stored = conn.execute("select coalesce(sum(records), 0) from prediction_batches"
                              ).fetchone()[0]
    shutil.rmtree(tmp, ignore_errors=True)
    if pairs:
        rate = {m: t["requests"] / t["seconds"] for m, t in totals.items()}
        cpu = {m: t["cpu"] / t["requests"] for m, t in totals.items()}
        other = {m: t["other"] / t["requests"] for m, t in totals.items()}
        print(f"\n{args.model} c={args.conc}, {args.rounds} x {args.burst} s bursts each: "
              f"off {rate['off']:.0f} req/s, on {rate['on']:.0f} req/s, "
              f"on/off = {rate['on'] / rate['off']:.1%} (target >= 90%); median of per-pair "
              f"ratios {statistics.median(pairs):.1%} (range {min(pairs):.1%}-{max(pairs):.1%})")
        print(f"server CPU per request: off {cpu['off']:.1f} us, on {cpu['on']:.1f} us, "
              f"off/on = {cpu['off'] / cpu['on']:.1%}; main thread off "
              f"{cpu['off'] - other['off']:.1f} us, on {cpu['on'] - other['on']:.1f} us; "
              f"other threads (the store's writer) off "
              f"{other['off']:.1f} us, on {other['on']:.1f} us")
    if args.together_rounds:
        per = {m: t[1] / t[0] * 1e6 for m, t in together.items()}
        print(f"both loaded at once on the one core ({args.together_rounds} x {args.burst} s): "
              f"server CPU per request off {per['off']:.1f} us, on {per['on']:.1f} us, "
              f"off/on = {per['off'] / per['on']:.1%} (the req/s ratio of a saturated core, "
              f"with the machine's speed the same for both)")
    print(f"records in the store {stored}, answers counted by wrk {answered}")


if __name__ == "__main__":
    main()
