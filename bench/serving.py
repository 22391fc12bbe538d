"""Serving benchmark: Ferry over HTTP against the in-process ONNX Runtime limit and peers.

Usage (from the repository root, with the project venv):

    .venv/bin/python bench/serving.py [--work DIR] [--models tabular,mlp] [--conc 1,16,64]
        [--duration 10] [--warmup 3] [--bin-conc 4,16] [--peers naive,mlserver,pytriton]
        [--out FILE]

Steps, all on this machine (2+ cores: servers on CPU 1, the load generator on CPU 0):

1. build the models and request bodies (``bench/models.py``) into ``--work``;
2. measure the in-process ORT limit (``bench/inproc.py``) pinned to CPU 1;
3. start ``ferry serve WORK/repo`` pinned to CPU 1 and check its answer to each fixed row
   against in-process ORT (same label, probabilities within 1e-4);
4. for every model and concurrency C: ``wrk -t1 -cC`` pinned to CPU 0 posting the one-row
   V2 JSON body (a ``--warmup`` run, discarded, then a ``--duration`` run);
5. the binary point: the 64-row mlp body with Triton's binary tensor extension at each
   ``--bin-conc``; rows/s = req/s * 64, set against ORT's batch-64 rows/s;
6. with ``--peers``: the shared peer harness (``../shared/bench/driver.py``) runs those
   servers on the same model files, in the same session, for same-run ratios.

Prints markdown tables and appends every raw point (one JSON object per line, tagged with
the run id) to ``--out``. Only 127.0.0.1 traffic; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import (  # noqa: E402
    busy_seconds,
    proc_tree,
    steal_seconds,
    tree_cpu_seconds,
    wait_quiet,
)
from models import build  # noqa: E402

LUA = HERE / "wrk_post.lua"
SERVER_CPU = "1"
WRK_CPU = "0"
START_TIMEOUT_S = 120.0
LISTEN_RE = re.compile(r"ferry: HTTP listening on http://([\d.]+):(\d+)")
# peer name (as in the shared driver) -> the venv it runs in (ANCHORS_DIR/venvs/<venv>)
PEER_VENVS: dict[str, str] = {
    "naive": "base", "mlserver": "mlserver", "mlserver-nobatch": "mlserver",
    "mlserver-pw1": "mlserver_pw", "ray": "ray", "ray-noaccesslog": "ray",
    "litserve": "litserve", "bentoml": "bentoml", "pytriton": "pytriton"}
# the shared driver picks bodies/<server prefix>_<model>.json; which flavour each one is
PEER_BODY_FLAVOUR: dict[str, str] = {
    "naive": "custom", "ray": "custom", "litserve": "custom", "bentoml": "custom",
    "mlserver": "v2", "pytriton": "v2"}
V2_NUMPY: dict[str, str] = {"BOOL": "?", "INT8": "<i1", "INT16": "<i2", "INT32": "<i4",
                            "INT64": "<i8", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4",
                            "UINT64": "<u8", "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}


def log(msg: str) -> None:
    """Progress line on stderr (stdout carries the tables)."""
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- wrk
def run_wrk(url: str, body: Path, conc: int, seconds: float, logfile: Path,
            content_type: str = "application/json", extra_header: str = ""
            ) -> tuple[dict[str, Any], float]:
    """One ``wrk -t1 -cC`` run pinned to the load CPU; returns (summary, wrk CPU seconds)."""
    cmd = ["taskset", "-c", WRK_CPU, "wrk", "-t1", f"-c{conc}", f"-d{seconds:g}s",
           "--timeout", "5s", "--latency", "-s", str(LUA), url]
    env = {**os.environ, "BODY_FILE": str(body), "CONTENT_TYPE": content_type,
           "EXTRA_HEADER": extra_header}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                          timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with logfile.open("a") as f:
        f.write(" ".join(cmd) + "\n" + proc.stdout + proc.stderr + "\n")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{") and '"requests"' in line:
            return json.loads(line), cpu
    raise RuntimeError(f"wrk gave no summary (rc={proc.returncode}): "
                       f"{(proc.stdout + proc.stderr)[-500:]}")


def measure_point(url: str, body: Path, conc: int, args: argparse.Namespace,
                  server_pid: int, logfile: Path, label: str,
                  content_type: str = "application/json", extra_header: str = ""
                  ) -> dict[str, Any]:
    """Warm-up run (discarded) then the measured run; retried if other jobs disturbed it.

    Keeps the attempt with the least foreign CPU time (CPU used on the machine by anything
    but the server tree and wrk); at most ``1 + args.retries`` attempts.
    """
    best: dict[str, Any] | None = None
    for attempt in range(1 + args.retries):
        waited, idle = wait_quiet(args.idle_wait) if args.idle_wait > 0 else (0.0, -1.0)
        run_wrk(url, body, conc, args.warmup, logfile, content_type, extra_header)
        pids = proc_tree(server_pid)
        s0, b0, st0 = tree_cpu_seconds(pids), busy_seconds(), steal_seconds()
        res, wrk_cpu = run_wrk(url, body, conc, args.duration, logfile, content_type,
                               extra_header)
        s1, b1, st1 = tree_cpu_seconds(pids), busy_seconds(), steal_seconds()
        secs = res["duration_us"] / 1e6
        errors = sum(res[k] for k in ("err_connect", "err_read", "err_write", "err_status",
                                      "err_timeout"))
        point = {"conc": conc, "rps": res["requests"] / secs, "p50_ms": res["p50_us"] / 1e3,
                 "p90_ms": res["p90_us"] / 1e3, "p99_ms": res["p99_us"] / 1e3,
                 "mean_ms": res["lat_mean_us"] / 1e3, "errors": errors,
                 "requests": res["requests"], "seconds": round(secs, 3),
                 "server_cpu_s": round(s1 - s0, 2),
                 "server_cpu_frac": round((s1 - s0) / secs, 3),
                 "wrk_cpu_s": round(wrk_cpu, 2),
                 "foreign_cpu_s": round((b1 - b0) - (s1 - s0) - wrk_cpu, 2),
                 "steal_s": round(st1 - st0, 2), "waited_quiet_s": waited,
                 "idle_frac_before": idle, "attempt": attempt, "wrk": res}
        if best is None or point["foreign_cpu_s"] < best["foreign_cpu_s"]:
            best = point
        if point["foreign_cpu_s"] <= args.foreign_limit:
            break
        log(f"  {label}: attempt {attempt + 1}/{1 + args.retries} disturbed (foreign CPU "
            f"{point['foreign_cpu_s']:.2f} s > {args.foreign_limit:g} s)")
    assert best is not None
    return best


# ------------------------------------------------------------------------------- ferry
FERRY_ARGS = ["--store", os.environ.get("FERRY_BENCH_STORE", "none")]
"""The serving benchmark measures the request path; bench/evalstore_logging.py measures
the cost of recording predictions (set FERRY_BENCH_STORE to a store URL to include it)."""


class Ferry:
    """A ``ferry serve`` process pinned to the server CPU, on a port the OS picks."""

    def __init__(self, exe: Path | list[str], repo: Path, logfile: Path,
                 args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """``exe``: the ``ferry`` executable, or a command (``[python, "-m", "ferry"]``);
        ``args``: options after the defaults (default ``FERRY_ARGS``); ``env``: the
        server's whole environment (default this one's)."""
        self.logfile = logfile
        self._log = logfile.open("w")
        command = [str(exe)] if isinstance(exe, Path) else exe
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *command, "serve", str(repo), "--http-port", "0",
             "--grpc-port", "-1", "--log-level", "warning",
             *(FERRY_ARGS if args is None else args)],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.base = self._wait_listening()

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            m = LISTEN_RE.search(self.logfile.read_text())
            if m:
                return f"http://{m.group(1)}:{m.group(2)}"
            if self.proc.poll() is not None:
                raise RuntimeError(f"ferry exited rc={self.proc.returncode}: "
                                   f"{self.logfile.read_text()[-1000:]}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"ferry not listening after {START_TIMEOUT_S:g} s; "
                           f"see {self.logfile}")

    def affinity(self) -> list[int]:
        """CPUs the server's process tree may run on."""
        return sorted({c for p in proc_tree(self.proc.pid) for c in os.sched_getaffinity(p)})

    def version(self) -> str:
        """Ferry's version and git commit of the checkout."""
        from importlib.metadata import version
        try:
            commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True, timeout=10,
                                    check=False).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "src"],
                                   capture_output=True, text=True, timeout=10,
                                   check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit, dirty = "?", ""
        return f"ferry {version('ferry')} @ {commit}{'+dirty' if dirty else ''}"

    def stop(self) -> None:
        """SIGTERM our server (by pid), SIGKILL it if it has not gone after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()


# ------------------------------------------------------------------------------- checks
def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """POST to a 127.0.0.1 URL; returns (body, lower-cased headers)."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read(), {k.lower(): v for k, v in resp.headers.items()}


def v2_outputs(body: bytes, headers: dict[str, str]) -> dict[str, np.ndarray]:
    """Decode a V2 infer response, JSON or with binary outputs, into arrays by name."""
    n = headers.get("inference-header-content-length")
    head, raw = (body[:int(n)], body[int(n):]) if n is not None else (body, b"")
    doc = json.loads(head)
    out, offset = {}, 0
    for o in doc["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            arr = np.frombuffer(raw[offset:offset + size], dtype=V2_NUMPY[o["datatype"]])
            offset += size
        else:
            arr = np.asarray(o["data"])
        out[o["name"]] = arr.reshape(o["shape"])
    return out


def same_answer(got: dict[str, np.ndarray], expected: dict[str, Any]) -> bool:
    """Same labels and probabilities within 1e-4 (absolute) of in-process ORT."""
    labels = np.asarray(got["label"]).ravel().tolist() == np.asarray(
        expected["label"]).ravel().tolist()
    probs = np.asarray(got["probabilities"], dtype=np.float64).ravel()
    want = np.asarray(expected["probabilities"], dtype=np.float64).ravel()
    return labels and probs.shape == want.shape and bool(np.allclose(probs, want, rtol=0,
                                                                     atol=1e-4))


def check_ferry(base: str, built: dict[str, Any], models: list[str]) -> None:
    """Every fixed row (and the binary 64-row body) answered as in-process ORT does."""
    for model in models:
        paths = built["models"][model]
        got = v2_outputs(*post(f"{base}/v2/models/{model}/infer",
                               Path(paths["v2"]).read_bytes(),
                               {"Content-Type": "application/json"}))
        if not same_answer(got, json.loads(Path(paths["expected"]).read_text())):
            raise RuntimeError(f"ferry's answer for {model} differs from ORT: {got}")
    b = built["binary"]
    got = v2_outputs(*post(f"{base}/v2/models/{b['model']}/infer",
                           Path(b["body"]).read_bytes(),
                           {"Content-Type": "application/octet-stream",
                            "Inference-Header-Content-Length": str(b["header_length"])}))
    if not same_answer(got, json.loads(Path(b["expected"]).read_text())):
        raise RuntimeError("ferry's binary batch answer differs from ORT")


# ------------------------------------------------------------------------------- inproc
def run_inproc(work: Path, models: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """bench/inproc.py pinned to the server CPU, in a child process; its JSON document."""
    cmd = ["taskset", "-c", SERVER_CPU, sys.executable, str(HERE / "inproc.py"), str(work),
           "--models", ",".join(models), "--batches", "1,64", "--runs", str(args.inproc_runs),
           "--idle-wait", str(args.idle_wait)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         timeout=600 + 4 * args.idle_wait).stdout
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- peers
def ensure_venv(adir: Path, venv: str, shared: Path) -> None:
    """Create ANCHORS_DIR/venvs/<venv> from the shared pinned requirements if missing."""
    vdir = adir / "venvs" / venv
    if (vdir / ".anchors-ok").exists() and (vdir / "bin" / "python").exists():
        return
    python = shutil.which("python3.11") or "python3"
    log(f"creating peer venv {vdir} (pip install -r requirements/{venv}.txt; slow once)")
    (adir / "logs").mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", str(vdir)], check=True, timeout=300)
    with (adir / "logs" / f"pip_{venv}.log").open("w") as f:
        subprocess.run([str(vdir / "bin" / "pip"), "install", "-q", "-r",
                        str(shared / "requirements" / f"{venv}.txt")],
                       stdout=f, stderr=subprocess.STDOUT, check=True, timeout=3600)
    (vdir / ".anchors-ok").touch()


def prepare_peer_dir(pdir: Path, adir: Path, built: dict[str, Any], models: list[str]
                     ) -> None:
    """A driver work dir holding *our* model files and bodies, sharing the cached venvs."""
    for sub in ("models", "bodies", "results"):
        (pdir / sub).mkdir(parents=True, exist_ok=True)
    # venvs/<v> -> the cached venv. The driver asks every venv's python for its LIBDIR when
    # it builds its server table (pytriton's at least), so a venv that is not cached (and
    # not needed: requested ones were created before) points at base as a stand-in.
    venvs = pdir / "venvs"
    if venvs.is_symlink():
        venvs.unlink()
    venvs.mkdir(exist_ok=True)
    for venv in dict.fromkeys(PEER_VENVS.values()):
        real = adir / "venvs" / venv
        link = venvs / venv
        if link.is_symlink():
            link.unlink()
        link.symlink_to(real if (real / ".anchors-ok").exists() else adir / "venvs" / "base")
    for model in models:
        paths = built["models"][model]
        shutil.copyfile(paths["onnx"], pdir / "models" / f"{model}.onnx")
        shutil.copyfile(paths["expected"], pdir / "bodies" / f"expected_{model}.json")
        for server, flavour in PEER_BODY_FLAVOUR.items():
            shutil.copyfile(paths[flavour], pdir / "bodies" / f"{server}_{model}.json")


def run_peers(args: argparse.Namespace, built: dict[str, Any], models: list[str],
              concs: list[int], run_id: str) -> list[dict[str, Any]]:
    """The shared driver for ``--peers`` on our models; its points for this run."""
    peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in peers if p not in PEER_VENVS]
    if unknown:
        raise SystemExit(f"unknown peers {unknown}; known: {sorted(PEER_VENVS)}")
    adir, shared = args.anchors_dir.resolve(), args.shared_bench.resolve()
    for venv in dict.fromkeys(["base"] + [PEER_VENVS[p] for p in peers]):
        ensure_venv(adir, venv, shared)
    pdir = Path(built["work"]) / "peers"
    prepare_peer_dir(pdir, adir, built, models)
    cmd = [str(adir / "venvs" / "base" / "bin" / "python"), str(shared / "driver.py"),
           str(pdir), "--servers", ",".join(peers), "--models", ",".join(models),
           "--conc", ",".join(map(str, concs)), "--duration", f"{args.duration:g}",
           "--warmup", f"{args.warmup:g}", "--tag", run_id]
    log("peers: " + " ".join(cmd))
    # generous bound: start-up, idle waits and up to 3 attempts per point
    budget = len(peers) * len(models) * (600 + len(concs) * 3 * (
        args.duration + args.warmup + 2 * 240))
    subprocess.run(cmd, stdout=sys.stderr, check=False, timeout=budget)
    points = []
    results = pdir / "results" / "points.jsonl"
    if results.exists():
        for line in results.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("tag") == run_id:
                points.append(rec)
    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for rec in points:  # the driver keeps retrying a disturbed point: the last one counts
        latest[(rec["server"], rec["model"], rec["conc"])] = rec
    return list(latest.values())


# ------------------------------------------------------------------------------- report
def fmt(x: float, digits: int = 0) -> str:
    """Thousands separators, fixed digits."""
    return f"{x:,.{digits}f}"


def report(ferry: list[dict[str, Any]], binary: list[dict[str, Any]],
           peers: list[dict[str, Any]], inproc: dict[str, Any], peer_names: list[str],
           models: list[str], concs: list[int], foreign_limit: float = 1.0) -> str:
    """The markdown tables; a req/s marked * comes from a point other jobs disturbed."""

    def rps(r: dict[str, Any]) -> str:
        return fmt(r["rps"]) + ("*" if r.get("foreign_cpu_s", 0.0) > foreign_limit else "")

    limit = {(p["model"], p["batch"]): p["rows_s"] for p in inproc["points"]}
    lines = ["### In-process ONNX Runtime (1 thread, pinned to CPU 1)", "",
             "| model | batch | rows/s | ms per call |", "|---|--:|--:|--:|"]
    for p in inproc["points"]:
        lines.append(f"| {p['model']} | {p['batch']} | {fmt(p['rows_s'])} | "
                     f"{p['ms_per_call']:.3f} |")
    head = "| model | c | ferry req/s | p50 ms | p99 ms | err |"
    rule = "|---|--:|--:|--:|--:|--:|"
    for peer in peer_names:
        head += f" {peer} req/s | ferry/{peer} |"
        rule += "--:|--:|"
    head += " % ORT b=1 | % ORT b=64 |"
    rule += "--:|--:|"
    lines += ["", "### Ferry, one row per request (V2 JSON; req/s = rows/s)", "", head, rule]
    by_peer = {(r["server"], r["model"], r["conc"]): r for r in peers}
    by_ferry = {(r["model"], r["conc"]): r for r in ferry}
    for model in models:
        for conc in concs:
            r = by_ferry.get((model, conc))
            if r is None:
                continue
            row = (f"| {model} | {conc} | {rps(r)} | {r['p50_ms']:.2f} | "
                   f"{r['p99_ms']:.2f} | {r['errors']} |")
            for peer in peer_names:
                pr = by_peer.get((peer, model, conc))
                row += (f" {rps(pr)} | {r['rps'] / pr['rps']:.2f}x |" if pr
                        else " n/a | n/a |")
            row += (f" {100 * r['rps'] / limit[(model, 1)]:.1f}% |"
                    f" {100 * r['rps'] / limit[(model, 64)]:.1f}% |")
            lines.append(row)
    if "naive" in peer_names:
        lines.append("")
        for model in models:
            r, pr = by_ferry.get((model, 1)), by_peer.get(("naive", model, 1))
            if r and pr:
                lines.append(f"c=1 p50, ferry minus naive, {model}: "
                             f"{r['p50_ms'] - pr['p50_ms']:+.3f} ms "
                             f"({r['p50_ms']:.3f} vs {pr['p50_ms']:.3f} ms)")
    if binary:
        lines += ["", "### Ferry, binary tensors (Triton extension), mlp, 64 rows per request",
                  "", ("| model | rows/req | c | req/s | rows/s | p50 ms | p99 ms | err | "
                       "% ORT b=64 |"), "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in binary:
            lines.append(f"| {r['model']} | {r['rows']} | {r['conc']} | {rps(r)} | "
                         f"{fmt(r['rows_s'])} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                         f"{r['errors']} | {100 * r['ratio_ort_b64']:.1f}% |")
    everything = ferry + binary + peers
    disturbed = [r for r in everything if r.get("foreign_cpu_s", 0.0) > foreign_limit]
    lines += ["", (f"* disturbed by other jobs even after retries (foreign CPU > "
                   f"{foreign_limit:g} s): {len(disturbed)} of {len(everything)} points.")]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=HERE / "results" / "work",
                    help="models, bodies, logs (default bench/results/work)")
    ap.add_argument("--models", default="tabular,mlp")
    ap.add_argument("--conc", default="1,16,64")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    ap.add_argument("--warmup", type=float, default=3.0, help="discarded warm-up seconds")
    ap.add_argument("--bin-conc", default="4,16",
                    help="concurrencies of the binary mlp batch-64 point ('' = skip)")
    ap.add_argument("--peers", default="", help="e.g. naive,mlserver,pytriton (shared harness)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "serving.jsonl",
                    help="raw points are appended here")
    ap.add_argument("--ferry", type=Path, default=Path(sys.executable).parent / "ferry",
                    help="the ferry executable")
    ap.add_argument("--anchors-dir", type=Path, default=Path(os.environ.get(
        "ANCHORS_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "anchors"))),
        help="where the peer venvs are cached (default $ANCHORS_DIR or $TMPDIR/anchors)")
    ap.add_argument("--shared-bench", type=Path, default=HERE.parent.parent / "shared" / "bench",
                    help="the shared peer harness (default ../shared/bench)")
    ap.add_argument("--inproc-runs", type=int, default=7)
    ap.add_argument("--idle-wait", type=float, default=120.0,
                    help="before each point wait up to this many s for an idle box (0 = no)")
    ap.add_argument("--foreign-limit", type=float, default=1.0,
                    help="redo a point if other jobs used more CPU s than this meanwhile")
    ap.add_argument("--retries", type=int, default=2, help="redos per disturbed point")
    ap.add_argument("--report", metavar="RUN_ID", default=None,
                    help="only re-print the tables of a past run from --out ('last' = latest)")
    return ap.parse_args(argv)


def report_past(out: Path, run_id: str, foreign_limit: float) -> str:
    """The tables of a run recorded in ``out`` (``run_id`` 'last' = the latest run)."""
    recs = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    if run_id == "last":
        run_id = max(r["run_id"] for r in recs)
    recs = [r for r in recs if r["run_id"] == run_id]
    if not recs:
        raise SystemExit(f"no run {run_id!r} in {out}")
    kind: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        kind.setdefault(r["kind"], []).append(r)
    ferry, peers = kind.get("ferry", []), kind.get("peer", [])
    models = list(dict.fromkeys(r["model"] for r in ferry))
    concs = list(dict.fromkeys(r["conc"] for r in ferry))
    peer_names = list(dict.fromkeys(r["server"] for r in peers))
    text = report(ferry, kind.get("ferry-binary", []), peers,
                  {"points": kind.get("inproc", [])}, peer_names, models, concs,
                  foreign_limit)
    return f"run {run_id}\n\n{text}"


def main(argv: list[str] | None = None) -> int:
    """Run the whole benchmark; print the tables; append raw points to --out."""
    args = parse_args(argv)
    if args.report:
        print(report_past(args.out, args.report, args.foreign_limit))
        return 0
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2+ CPUs: the server is pinned to CPU 1 and wrk to CPU 0")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found (apt-get install wrk)")
    models = [m for m in args.models.split(",") if m]
    concs = [int(c) for c in args.conc.split(",") if c]
    bin_concs = [int(c) for c in args.bin_conc.split(",") if c]
    peer_names = [p for p in args.peers.split(",") if p]
    run_id = time.strftime("%Y%m%dT%H%M%S")
    work = args.work.resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []

    def record(kind: str, rec: dict[str, Any]) -> dict[str, Any]:
        rec = {"run_id": run_id, "kind": kind, **rec,
               "ts": time.strftime("%Y-%m-%dT%H:%M:%S")}
        records.append(rec)
        with args.out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        return rec

    log(f"[{run_id}] building models in {work}")
    built = build(work)
    log("measuring in-process ORT limit (taskset -c 1)")
    inproc = run_inproc(work, ["tabular", "mlp"], args)
    for p in inproc["points"]:
        record("inproc", {**p, "onnxruntime": inproc["onnxruntime"]})
        log(f"  ORT {p['model']} b={p['batch']}: {p['rows_s']:,.0f} rows/s")
    limit = {(p["model"], p["batch"]): p["rows_s"] for p in inproc["points"]}

    ferry_pts: list[dict[str, Any]] = []
    bin_pts: list[dict[str, Any]] = []
    server = Ferry(args.ferry, Path(built["repo"]), work / "logs" / f"ferry_{run_id}.log")
    try:
        check_ferry(server.base, built, models)
        settings = {"version": server.version(), "affinity": server.affinity()}
        log(f"ferry at {server.base}, answers match ORT, {settings}")
        wlog = work / "logs" / f"wrk_{run_id}.log"
        for model in models:
            url = f"{server.base}/v2/models/{model}/infer"
            for conc in concs:
                p = measure_point(url, Path(built["models"][model]["v2"]), conc, args,
                                  server.proc.pid, wlog, f"ferry {model} c={conc}")
                ferry_pts.append(record("ferry", {"model": model, "rows": 1, **p,
                                                  **settings}))
                log(f"  ferry {model} c={conc}: {p['rps']:,.0f} req/s p50 {p['p50_ms']:.2f} "
                    f"p99 {p['p99_ms']:.2f} ms err {p['errors']} srv_cpu "
                    f"{p['server_cpu_frac']:.0%} foreign {p['foreign_cpu_s']} s")
        b = built["binary"]
        for conc in bin_concs:
            p = measure_point(f"{server.base}/v2/models/{b['model']}/infer", Path(b["body"]),
                              conc, args, server.proc.pid, wlog,
                              f"ferry binary {b['model']} b={b['rows']} c={conc}",
                              "application/octet-stream",
                              f"Inference-Header-Content-Length: {b['header_length']}")
            rows_s = p["rps"] * b["rows"]
            bin_pts.append(record("ferry-binary", {
                "model": b["model"], "rows": b["rows"], **p, "rows_s": rows_s,
                "ratio_ort_b64": rows_s / limit[(b["model"], 64)], **settings}))
            log(f"  ferry binary {b['model']} b={b['rows']} c={conc}: {rows_s:,.0f} rows/s "
                f"({rows_s / limit[(b['model'], 64)]:.1%} of ORT b=64) err {p['errors']}")
    finally:
        server.stop()

    peer_pts: list[dict[str, Any]] = []
    if peer_names:
        for rec in run_peers(args, built, models, concs, run_id):
            peer_pts.append(record("peer", {k: v for k, v in rec.items() if k != "tag"}))
        missing = [(p, m, c) for p in peer_names for m in models for c in concs
                   if not any(r["server"] == p and r["model"] == m and r["conc"] == c
                              for r in peer_pts)]
        if missing:
            log(f"peer points missing (see {work}/peers/logs): {missing}")

    print(report(ferry_pts, bin_pts, peer_pts, inproc, peer_names, models, concs,
                 args.foreign_limit))
    print(f"\nrun {run_id}: {len(records)} raw points appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
