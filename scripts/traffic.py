"""Send example traffic to a running Ferry server, so that monitoring has something to show.

Usage::

    python scripts/traffic.py [--url http://127.0.0.1:8000] [--model iris] [--requests 500]
                              [--rate 100] [--rows 1] [--drift] [--feedback 0.5]

Requests are rows of the version's ``reference.parquet`` (its training data; the example
repository ships one per version, ``scripts/make_example_repo.py``), drawn at random with
replacement, so undrifted traffic looks like what the model was trained on. Each request is
a KServe V2 JSON ``POST /v2/models/{model}[/versions/{v}]/infer``.

- ``--drift`` shifts some input features by ``--drift-sigma`` reference standard deviations
  (default 1.5; the features: ``--drift-features a,b``, else the last half of the inputs).
  The shifted values also leave the reference's range, which the quality rules report.
- ``--feedback SHARE`` sends the reference's ``target`` column (the true label or value) as
  feedback for that share of the requests (``POST /ferry/v1/feedback``, joined by the
  ``ferry-request-id`` each answer carries), so the report gains a performance section.
  With ``--drift`` the model is then seen to do worse.

Then: ``ferry monitor iris`` (or ``--format json``). The script needs Ferry installed (it
reads the model's feature layout the way the server does) and the repository the server
serves (``--repository``, default ``examples/repository``) for the reference data.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPOSITORY = ROOT / "examples" / "repository"
REQUEST_ID_HEADER = "ferry-request-id"
TARGET_COLUMN = "target"
FEEDBACK_BATCH = 1000


class TrafficError(Exception):
    """A setup problem: the message says what to fix."""


def http(method: str, url: str, body: Any = None, timeout: float = 30.0
         ) -> tuple[int, dict[str, str], Any]:
    """(status, headers, decoded JSON body) of one call; HTTP errors are returned, not
    raised, and a refused connection is a ``TrafficError``."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw, status, headers = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        raw, status, headers = exc.read(), exc.code, dict(exc.headers)
    except (urllib.error.URLError, OSError) as exc:
        raise TrafficError(f"cannot reach {url}: {exc}; is the server running "
                           f"(make serve)?") from None
    try:
        decoded = json.loads(raw) if raw else None
    except ValueError:
        decoded = raw.decode(errors="replace")
    return status, {k.lower(): v for k, v in headers.items()}, decoded


def served_version(url: str, model: str, version: int | None) -> tuple[int, dict[str, Any]]:
    """The version requests will run on (the given one, else the newest ready one) and its
    V2 metadata."""
    path = f"{url}/v2/models/{model}" + (f"/versions/{version}" if version else "")
    status, _, meta = http("GET", path)
    if status != 200:
        raise TrafficError(f"GET {path}: {status} {meta}")
    if version is None:
        ready = [int(v["version"]) for v in meta.get("ferry", {}).get("versions", [])
                 if v.get("state") == "READY"]
        if not ready:
            raise TrafficError(f"model {model!r} has no ready version")
        version = max(ready)
    return version, meta


def reference_table(repository: Path, model: str, version: int) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    path = repository / model / str(version) / "reference.parquet"
    if not path.is_file():
        raise TrafficError(f"{path} does not exist; build the examples (make examples) or "
                           f"give --repository the folder the server serves")
    table = pq.read_table(path)
    return {name: table.column(name).to_numpy(zero_copy_only=False)
            for name in table.column_names}


class Traffic:
    """Requests built from reference rows, with some input features shifted on demand."""

    def __init__(self, meta: dict[str, Any], repository: Path, model: str, version: int,
                 reference: dict[str, np.ndarray]) -> None:
        from ferry.evalstore.features import feature_layout
        from ferry.manifest import MANIFEST_FILE, load_manifest
        from ferry.types import Signature, TensorSpec

        specs = [TensorSpec(t["name"], t["datatype"], tuple(t["shape"])) for t in meta["inputs"]]
        signature = Signature(tuple(specs), ())
        layout = feature_layout(signature, load_manifest(repository / model / MANIFEST_FILE))
        self.specs = specs
        self.inputs = layout.inputs
        missing = [f.name for f in self.inputs if f.name not in reference]
        if missing or not self.inputs:
            raise TrafficError(f"{model} version {version}: the reference lacks input "
                               f"column(s) {missing}, or the model has no tabular inputs")
        if layout.skipped:
            raise TrafficError(f"{model}: inputs {layout.skipped} are not tabular; this "
                               f"script sends rows of [-1, k] inputs only")
        self.columns = {f.name: np.asarray(reference[f.name], dtype=np.float64)
                        for f in self.inputs}
        self.target = reference.get(TARGET_COLUMN)
        self.rows = len(next(iter(self.columns.values())))

    def default_drift_features(self) -> list[str]:
        names = [f.name for f in self.inputs]
        return names[len(names) // 2:]

    def shifted(self, names: list[str], sigmas: float) -> dict[str, np.ndarray]:
        unknown = [n for n in names if n not in self.columns]
        if unknown:
            raise TrafficError(f"--drift-features {unknown} are not inputs of this model; "
                               f"they are {list(self.columns)}")
        out = dict(self.columns)
        for name in names:
            column = self.columns[name]
            out[name] = column + sigmas * (float(np.std(column)) or 1.0)
        return out

    def body(self, columns: dict[str, np.ndarray], index: np.ndarray) -> dict[str, Any]:
        """A V2 JSON request body holding reference rows ``index`` of ``columns``."""
        tensors = []
        for spec in self.specs:
            features = [f for f in self.inputs if f.tensor == spec.name]
            block = np.column_stack([columns[f.name][index] for f in features])
            shape = [len(index), *[d if d > 0 else block.shape[1] for d in spec.shape[1:]]]
            if spec.datatype.startswith("FP"):
                data = block.ravel().tolist()
            else:
                data = np.rint(block).astype(np.int64).ravel().tolist()
            tensors.append({"name": spec.name, "shape": shape, "datatype": spec.datatype,
                            "data": data})
        return {"inputs": tensors}

    def label(self, index: np.ndarray) -> Any:
        assert self.target is not None
        values = [v.item() if hasattr(v, "item") else v for v in self.target[index]]
        return values[0] if len(values) == 1 else values


def run(args: argparse.Namespace) -> dict[str, Any]:
    url = args.url.rstrip("/")
    version, meta = served_version(url, args.model, args.version)
    reference = reference_table(Path(args.repository), args.model, version)
    traffic = Traffic(meta, Path(args.repository), args.model, version, reference)
    columns = traffic.columns
    drifted: list[str] = []
    if args.drift:
        drifted = (args.drift_features.split(",") if args.drift_features
                   else traffic.default_drift_features())
        columns = traffic.shifted(drifted, args.drift_sigma)
    if args.feedback and traffic.target is None:
        raise TrafficError(f"the reference of {args.model} has no {TARGET_COLUMN!r} column to "
                           f"send as feedback")
    infer_url = f"{url}/v2/models/{args.model}/versions/{version}/infer"
    rng = np.random.default_rng(args.seed)
    plan = [rng.integers(0, traffic.rows, size=args.rows) for _ in range(args.requests)]
    labelled = rng.random(args.requests) < args.feedback
    lock = threading.Lock()
    result: dict[str, Any] = {"model": args.model, "version": version, "requests": 0,
                              "ok": 0, "errors": {}, "drifted_features": drifted,
                              "feedback": 0}
    feedback: list[dict[str, Any]] = []

    def send(i: int) -> None:
        status, headers, answer = http("POST", infer_url, traffic.body(columns, plan[i]))
        with lock:
            result["requests"] += 1
            if status != 200:
                key = f"{status}: {answer.get('error') if isinstance(answer, dict) else answer}"
                result["errors"][key] = result["errors"].get(key, 0) + 1
                return
            result["ok"] += 1
            request_id = headers.get(REQUEST_ID_HEADER)
            if labelled[i] and request_id:
                feedback.append({"request_id": request_id, "label": traffic.label(plan[i])})

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        futures = []
        for i in range(args.requests):
            if args.rate > 0:
                delay = started + i / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            futures.append(pool.submit(send, i))
        for future in futures:
            future.result()
    result["seconds"] = round(time.monotonic() - started, 2)
    for start in range(0, len(feedback), FEEDBACK_BATCH):
        chunk = feedback[start:start + FEEDBACK_BATCH]
        status, _, answer = http("POST", f"{url}/ferry/v1/feedback", {"feedback": chunk})
        if status != 200:
            raise TrafficError(f"POST /ferry/v1/feedback: {status} {answer}")
        result["feedback"] += int(answer.get("accepted", len(chunk)))
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python scripts/traffic.py --model iris --requests 500\n"
               "  python scripts/traffic.py --model iris --drift --feedback 0.5\n"
               "  python scripts/traffic.py --model diabetes --drift --drift-features "
               "'input[2],input[8]'")
    parser.add_argument("--url", default="http://127.0.0.1:8000",
                        help="the server (default %(default)s)")
    parser.add_argument("--model", default="iris", help="model name (default %(default)s)")
    parser.add_argument("--version", type=int, default=None,
                        help="version (default: the newest ready one)")
    parser.add_argument("--requests", type=int, default=500,
                        help="requests to send (default %(default)s)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="requests per second; 0 = as fast as --concurrency allows "
                             "(default %(default)s)")
    parser.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="requests in flight at most (default %(default)s)")
    parser.add_argument("--drift", action="store_true",
                        help="shift some input features (see --drift-features)")
    parser.add_argument("--drift-features", default=None,
                        help="comma-separated features to shift (default: the last half)")
    parser.add_argument("--drift-sigma", type=float, default=1.5,
                        help="shift, in reference standard deviations (default %(default)s)")
    parser.add_argument("--feedback", type=float, default=0.0, metavar="SHARE",
                        help="share of requests (0..1) that get their true label as feedback")
    parser.add_argument("--repository", default=str(DEFAULT_REPOSITORY),
                        help="the repository the server serves, for reference.parquet "
                             "(default: examples/repository)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.rows < 1 or args.concurrency < 1:
        parser.error("--requests, --rows and --concurrency must be at least 1")
    if not 0.0 <= args.feedback <= 1.0:
        parser.error("--feedback is a share between 0 and 1")
    return args


def shown(names: list[str], most: int = 6) -> str:
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[:most])}, ... ({len(names)} features)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except TrafficError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    errors = sum(result["errors"].values())
    print(f"{result['model']} version {result['version']}: {result['ok']} of "
          f"{result['requests']} requests answered in {result['seconds']} s"
          + (f", drifted {shown(result['drifted_features'])}" if args.drift else "")
          + (f", feedback for {result['feedback']}" if args.feedback else ""))
    for key, count in result["errors"].items():
        print(f"  {count} x {key}", file=sys.stderr)
    print(f"now: ferry monitor {result['model']} --url {args.url}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
