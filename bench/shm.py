"""Shared memory benchmark: 64-row mlp requests with the tensors in system shared memory
(Triton's extension) against the same rows as binary tensors over HTTP, in one run.

Usage (from the repository root, with the project venv):

    .venv/bin/python bench/shm.py [--work DIR] [--conc 1,16] [--rounds 5] [--duration 5]
        [--warmup 2] [--inproc-runs 7] [--out FILE]

Steps, all on this machine (2+ cores: the server on CPU 1, the load generator on CPU 0, as
``bench/serving.py``):

1. build the models and the 64-row mlp binary body (``bench/models.py``) into ``--work``;
2. the in-process ORT limit at batch 64 (``bench/inproc.py``, pinned to CPU 1), measured
   again at the start of every round (the median is the ceiling);
3. start ``python -m ferry serve WORK/repo`` pinned to CPU 1; create two POSIX shared memory
   objects here (the 64 input rows; room for both outputs), register them, and check that a
   request through them writes the same answer as the binary request returns;
4. ``--rounds`` rounds; in each, for every concurrency C, ``wrk -t1 -cC`` (CPU 0) posts the
   binary body and the shared-memory body (a JSON header naming the regions, no tensor
   bytes) one after the other, the order alternating between rounds; each point is a
   discarded ``--warmup`` run then a ``--duration`` run;
5. prints a markdown table of medians over the rounds: rows/s = req/s * 64, the ratio of
   shared memory to binary, and each as a share of ORT's batch-64 rows/s.

Interleaved rounds and medians make the comparison fair on a machine shared with other jobs:
a disturbance lands on both kinds alike. The raw points are appended to ``--out`` (one JSON
object per line, tagged with the run id). The objects are unlinked when the run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from models import build  # noqa: E402
from serving import SERVER_CPU, Ferry, log, run_wrk, v2_outputs  # noqa: E402

SHM = Path("/dev/shm")


def server(repo: Path, logfile: Path) -> Ferry:
    """``python -m ferry serve`` (this interpreter, so PYTHONPATH picks the checkout)
    pinned to the server CPU, HTTP only, no evaluation store."""
    return Ferry([sys.executable, "-m", "ferry"], repo, logfile, ["--store", "none",
                                                                  "--no-schedules"])


def post(url: str, body: bytes, headers: dict[str, str] | None = None
         ) -> tuple[bytes, dict[str, str]]:
    req = urllib.request.Request(url, body, {"Content-Type": "application/json",
                                             **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read(), {k.lower(): v for k, v in resp.headers.items()}


def make_object(size: int, data: bytes = b"") -> str:
    """A POSIX shared memory object (as the client's library makes one); its key."""
    key = f"/ferry-bench-{uuid.uuid4().hex[:10]}"
    fd = os.open(SHM / key[1:], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)
    return key


def shm_body(rows: int, features: int, in_bytes: int) -> bytes:
    """The request naming the regions: no tensor bytes travel."""
    def ref(region: str, size: int, offset: int = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"shared_memory_region": region,
                                  "shared_memory_byte_size": size}
        if offset:
            params["shared_memory_offset"] = offset
        return params

    doc = {"inputs": [{"name": "input", "shape": [rows, features], "datatype": "FP32",
                       "parameters": ref("in", in_bytes)}],
           "outputs": [{"name": "label", "parameters": ref("out", rows * 8)},
                       {"name": "probabilities",
                        "parameters": ref("out", rows * 40, rows * 8)}]}
    return json.dumps(doc, separators=(",", ":")).encode()


def run_inproc(work: Path, runs: int) -> float:
    """ORT rows/s at batch 64 for mlp, pinned to the server CPU."""
    cmd = ["taskset", "-c", SERVER_CPU, sys.executable, str(HERE / "inproc.py"), str(work),
           "--models", "mlp", "--batches", "64", "--runs", str(runs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
    points = json.loads(out.strip().splitlines()[-1])["points"]
    return float(points[0]["rows_s"])


def point(url: str, body: Path, conc: int, args: argparse.Namespace, logfile: Path,
          content_type: str, header: str) -> dict[str, Any]:
    run_wrk(url, body, conc, args.warmup, logfile, content_type, header)
    res, _ = run_wrk(url, body, conc, args.duration, logfile, content_type, header)
    secs = res["duration_us"] / 1e6
    errors = sum(res[k] for k in ("err_connect", "err_read", "err_write", "err_status",
                                  "err_timeout"))
    return {"rps": res["requests"] / secs, "p50_ms": res["p50_us"] / 1e3, "errors": errors}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=HERE / "results" / "work")
    ap.add_argument("--conc", default="1,16")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--inproc-runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "shm.jsonl")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    concs = [int(c) for c in args.conc.split(",") if c]
    run_id = time.strftime("%Y%m%dT%H%M%S")
    built = build(args.work)
    binary = built["binary"]
    rows = int(binary["rows"])
    bin_path = Path(binary["body"])
    head_len = int(binary["header_length"])
    raw = bin_path.read_bytes()[head_len:]
    features = len(raw) // (4 * rows)
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ort: list[float] = []
    keys = [make_object(len(raw), raw), make_object(rows * 48)]
    ferry = server(Path(built["repo"]), logs / "shm-ferry.log")
    try:
        base = ferry.base
        for name, key, size in (("in", keys[0], len(raw)), ("out", keys[1], rows * 48)):
            post(f"{base}/v2/systemsharedmemory/region/{name}/register",
                 json.dumps({"key": key, "offset": 0, "byte_size": size}).encode())
        body = shm_body(rows, features, len(raw))
        shm_path = args.work / "bodies" / f"v2shm_mlp_b{rows}.json"
        shm_path.write_bytes(body)
        url = f"{base}/v2/models/mlp/infer"
        answer = v2_outputs(*post(url, bin_path.read_bytes(),
                                  {"Inference-Header-Content-Length": str(head_len)}))
        post(url, body)
        written = (SHM / keys[1][1:]).read_bytes()
        labels = np.frombuffer(written[:rows * 8], "<i8")
        proba = np.frombuffer(written[rows * 8:rows * 48], "<f4").reshape(rows, 10)
        if not (np.array_equal(labels, answer["label"]) and
                np.allclose(proba, answer["probabilities"], atol=1e-6)):
            raise RuntimeError("the shared-memory answer differs from the binary one")
        kinds = {"binary": (bin_path, "application/octet-stream",
                            f"Inference-Header-Content-Length: {head_len}"),
                 "shm": (shm_path, "application/json", "")}
        points: dict[tuple[str, int], list[dict[str, Any]]] = {}
        with args.out.open("a") as out:
            for rnd in range(args.rounds):
                ort.append(run_inproc(args.work, args.inproc_runs))
                log(f"round {rnd + 1}/{args.rounds} in-process ORT: {ort[-1]:.0f} rows/s")
                out.write(json.dumps({"run": run_id, "round": rnd, "kind": "ort",
                                      "rows_s": ort[-1]}) + "\n")
                for conc in concs:
                    order = list(kinds) if rnd % 2 == 0 else list(reversed(kinds))
                    for kind in order:
                        path, ctype, header = kinds[kind]
                        p = point(url, path, conc, args, logs / "shm-wrk.log", ctype, header)
                        p.update(run=run_id, round=rnd, kind=kind, conc=conc, rows=rows,
                                 rows_s=p["rps"] * rows)
                        out.write(json.dumps(p) + "\n")
                        points.setdefault((kind, conc), []).append(p)
                        log(f"round {rnd + 1}/{args.rounds} c={conc} {kind}: "
                            f"{p['rows_s']:.0f} rows/s, {p['errors']} errors")
    finally:
        ferry.stop()
        for key in keys:
            (SHM / key[1:]).unlink(missing_ok=True)
    ort_rows = statistics.median(ort)
    print(f"mlp, {rows} rows per request, medians of {args.rounds} interleaved rounds "
          f"(run {run_id}); in-process ORT at batch {rows}: {ort_rows:.0f} rows/s\n")
    print("| c | binary HTTP rows/s | shared memory rows/s | shm / binary | binary / ORT "
          "| shm / ORT |")
    print("|---|---|---|---|---|---|")
    for conc in concs:
        b = statistics.median(p["rows_s"] for p in points[("binary", conc)])
        s = statistics.median(p["rows_s"] for p in points[("shm", conc)])
        print(f"| {conc} | {b:.0f} | {s:.0f} | {s / b:.2f} | {b / ort_rows:.2f} "
              f"| {s / ort_rows:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
