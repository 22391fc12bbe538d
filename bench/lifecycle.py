"""Lifecycle benchmarks: a version swap under load, and memory over load/unload cycles.

    python bench/lifecycle.py swap   [--seconds 5]   # zero failures? p99 of another model?
    python bench/lifecycle.py memory [--cycles 50]   # resident memory over load/unload cycles

``swap``: model A (``mlp``) takes a steady stream from 4 client threads while a fifth thread
measures model B (``tabular``) one request at a time. After a baseline, version 2 of A is
copied into the repository; the server (``--poll 0.5``) loads it, warms it up, switches
traffic and unloads version 1. Reports failed requests, whether every response after the
first from v2 came from v2 (bar those already in flight), and B's p50/p99 before vs during.

``memory``: ``--model-control explicit``; ``mlp`` is loaded and unloaded ``--cycles`` times
through the repository API; the server's VmRSS is read from /proc after each cycle.

Only loopback traffic; every loop is bounded. Figures are noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "repository"


def start(repo: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "ferry", "serve", str(repo), "--http-port",
                             "0", "--grpc-port", "-1", "--log-level", "warning", *args],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "HTTP listening on " in line:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, line.strip().rsplit(" ", 1)[-1]
        if not line:
            break
    proc.kill()
    raise RuntimeError("server did not start")


def body(width: int) -> dict[str, object]:
    return {"inputs": [{"name": "input", "shape": [1, width], "datatype": "FP32",
                        "data": [0.1] * width}]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def swap(seconds: float) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="ferry-swap-"))
    repo = work / "repo"
    (repo / "mlp").mkdir(parents=True)
    shutil.copytree(EXAMPLES / "mlp" / "1", repo / "mlp" / "1")
    shutil.copytree(EXAMPLES / "tabular", repo / "tabular")
    proc, url = start(repo, "--poll", "0.5")
    a_results: list[tuple[int, str]] = []
    b_latency: list[tuple[float, float]] = []
    stop = threading.Event()

    def stream_a() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/v2/models/mlp/infer", json=body(64))
                a_results.append((r.status_code, r.json().get("model_version", "?")))

    def probe_b() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                c.post("/v2/models/tabular/infer", json=body(32))
                b_latency.append((time.monotonic(), time.perf_counter() - t0))
                time.sleep(0.002)

    threads = [threading.Thread(target=stream_a) for _ in range(4)]
    threads.append(threading.Thread(target=probe_b))
    for t in threads:
        t.start()
    try:
        time.sleep(seconds)
        swap_start = time.monotonic()
        shutil.copytree(EXAMPLES / "mlp" / "1", repo / "mlp" / "2")
        with httpx.Client(base_url=url) as c:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                index = c.post("/v2/repository/index").json()
                if [e["version"] for e in index if e["name"] == "mlp"] == ["2"]:
                    break
                time.sleep(0.05)
        swap_end = time.monotonic()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    versions = [v for _, v in a_results]
    first = versions.index("2") if "2" in versions else len(versions)
    before = [lat for t, lat in b_latency if t < swap_start]
    during = [lat for t, lat in b_latency if swap_start <= t <= swap_end + 0.5]
    return {
        "a_requests": len(a_results),
        "a_failed": sum(1 for s, _ in a_results if s != 200),
        "a_v1_after_switch": versions[first + 8:].count("1"),
        "swap_seconds": round(swap_end - swap_start, 2),
        "b_p50_ms_before": round(1000 * percentile(before, 0.5), 2),
        "b_p99_ms_before": round(1000 * percentile(before, 0.99), 2),
        "b_p50_ms_during": round(1000 * percentile(during, 0.5), 2),
        "b_p99_ms_during": round(1000 * percentile(during, 0.99), 2),
        "b_p99_ratio": round(percentile(during, 0.99) / percentile(before, 0.99), 2),
        "b_samples_during": len(during),
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(cycles: int) -> dict[str, object]:
    proc, url = start(EXAMPLES, "--model-control", "explicit")
    samples = []
    try:
        with httpx.Client(base_url=url, timeout=120) as c:
            for _ in range(cycles):
                assert c.post("/v2/repository/models/mlp/load").status_code == 200
                assert c.post("/v2/models/mlp/infer", json=body(64)).status_code == 200
                assert c.post("/v2/repository/models/mlp/unload").status_code == 200
                samples.append(rss_mib(proc.pid))
    finally:
        proc.terminate()
        proc.wait(30)
    return {"cycles": cycles, "rss_mib_after_1": round(samples[0], 1),
            "rss_mib_after_10": round(samples[min(9, len(samples) - 1)], 1),
            "rss_mib_after_last": round(samples[-1], 1),
            "growth_mib_10_to_last": round(samples[-1] - samples[min(9, len(samples) - 1)], 1),
            "growth_mib_per_cycle_after_10": round(
                (samples[-1] - samples[min(9, len(samples) - 1)]) / max(1, len(samples) - 10), 3),
            "median_rss_mib": round(statistics.median(samples), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["swap", "memory"])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--cycles", type=int, default=50)
    args = parser.parse_args()
    result = swap(args.seconds) if args.what == "swap" else memory(args.cycles)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
