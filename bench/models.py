"""Build the two serving-benchmark models and their fixed request bodies, deterministically.

Usage: python bench/models.py WORK [--force]

Writes, under WORK:

- ``repo/<model>/1/model.onnx`` for ``tabular`` and ``mlp``: a Ferry model repository;
- ``bodies/v2_<model>.json``: a one-row KServe V2 JSON request for the model's fixed row;
- ``bodies/custom_<model>.json``: the same row as ``{"inputs": [[...]]}`` (for the naive
  Starlette peer and other custom-body servers);
- ``bodies/expected_<model>.json``: in-process ONNX Runtime's answer for the fixed row;
- ``bodies/v2bin_mlp_b64.bin`` and ``.len``: a 64-row mlp request with the input as raw
  little-endian FP32 (Triton binary tensor extension) and ``binary_data_output`` on; the
  ``.len`` file holds the JSON header length for ``Inference-Header-Content-Length``;
- ``bodies/expected_mlp_b64.json``: ORT's answer for those 64 rows;
- ``models.json``: what was built (reused on the next run unless ``--force``).

Models (the recipe of the shared peer harness, so the numbers sit beside its anchors):

- ``tabular``: StandardScaler + GradientBoostingClassifier (100 trees, depth 3) on
  ``make_classification(10000, 32 features, 16 informative, 4 redundant)``, inputs
  ``X * 3 + 1.5`` as float32; fixed row ``X[123]``.
- ``mlp``: MLPClassifier 256 -> 1024 -> 1024 -> 10, ReLU, 3 epochs on synthetic data; fixed
  row one standard-normal draw.

Both are converted with skl2onnx (no ZipMap, opset ai.onnx 17 / ai.onnx.ml 3), with one
input ``input: float32[None, F]`` and outputs ``label [N]`` and ``probabilities [N, K]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

MODELS: tuple[str, ...] = ("tabular", "mlp")
FEATURES: dict[str, int] = {"tabular": 32, "mlp": 256}
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}
BIN_ROWS = 64
MANIFEST = "models.json"


def _tabular(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """StandardScaler + GradientBoosting pipeline as ONNX, and its fixed row."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import make_classification
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = make_classification(n_samples=10000, n_features=32, n_informative=16,
                               n_redundant=4, random_state=0)
    x = (x * 3.0 + 1.5).astype(np.float32)  # not already standardised: the scaler does work
    gbc = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)
    pipe = Pipeline([("scaler", StandardScaler()), ("gbc", gbc)]).fit(x, y)
    onx = convert_sklearn(pipe, initial_types=[("input", FloatTensorType([None, 32]))],
                          options={id(gbc): {"zipmap": False}}, target_opset=TARGET_OPSET)
    return onx, x[123:124]


def _mlp(rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    """A 256-1024-1024-10 ReLU MLPClassifier as ONNX, and its fixed row.

    Trained for a few epochs on random data: the weights only need realistic magnitudes.
    """
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x = rng.standard_normal((2048, 256)).astype(np.float32)
    w = rng.standard_normal((256, 10)).astype(np.float32)
    y = np.argmax(x @ w, axis=1)
    mlp = MLPClassifier(hidden_layer_sizes=(1024, 1024), activation="relu", max_iter=3,
                        batch_size=256, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x, y)
    onx = convert_sklearn(mlp, initial_types=[("input", FloatTensorType([None, 256]))],
                          options={id(mlp): {"zipmap": False}}, target_opset=TARGET_OPSET)
    return onx, rng.standard_normal((1, 256)).astype(np.float32)


def v2_json_body(rows: np.ndarray) -> dict[str, Any]:
    """A KServe V2 JSON infer request carrying ``rows`` as the FP32 input ``input``."""
    return {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                        "data": [float(v) for v in rows.ravel()]}]}


def custom_json_body(rows: np.ndarray) -> dict[str, Any]:
    """The ``{"inputs": [[...], ...]}`` body of the naive peer server."""
    return {"inputs": [[float(v) for v in row] for row in rows]}


def v2_binary_body(rows: np.ndarray) -> tuple[bytes, int]:
    """A V2 request with ``rows`` as raw little-endian FP32 after the JSON header.

    Returns the whole body and the header length (the ``Inference-Header-Content-Length``).
    Outputs are asked for in binary too (``binary_data_output``).
    """
    raw = np.ascontiguousarray(rows, dtype="<f4").tobytes()
    header = {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                          "parameters": {"binary_data_size": len(raw)}}],
              "parameters": {"binary_data_output": True}}
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + raw, len(head)


def ort_session(path: Path) -> Any:
    """An ONNX Runtime CPU session with 1 intra-op thread, sequential execution."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_answer(path: Path, rows: np.ndarray) -> dict[str, list[Any]]:
    """In-process ORT outputs for ``rows``, as ``{output name: nested list}``."""
    sess = ort_session(path)
    outs = sess.run(None, {"input": rows})
    return {o.name: np.asarray(v).tolist() for o, v in zip(sess.get_outputs(), outs, strict=True)}


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")))


def build(work: Path, force: bool = False) -> dict[str, Any]:
    """Build both models and all bodies under ``work``; return the manifest.

    If ``work/models.json`` exists and every file it lists is present, nothing is rebuilt
    (training the gradient boosting model takes a while) unless ``force``.
    """
    work = Path(work).resolve()
    manifest_path = work / MANIFEST
    if manifest_path.exists() and not force:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if all(Path(p).exists() for p in manifest["files"]):
            return manifest
    repo, bodies = work / "repo", work / "bodies"
    bodies.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files: list[str] = []
    models: dict[str, Any] = {}
    for name, builder in (("tabular", _tabular), ("mlp", _mlp)):
        onx, row = builder(rng)
        vdir = repo / name / "1"
        vdir.mkdir(parents=True, exist_ok=True)
        onnx_path = vdir / "model.onnx"
        onnx_path.write_bytes(onx.SerializeToString())
        # the row as it travels in JSON: float32 -> Python float -> float32 is exact
        row = np.asarray(custom_json_body(row)["inputs"], dtype=np.float32)
        expected = ort_answer(onnx_path, row)
        paths = {"onnx": onnx_path, "v2": bodies / f"v2_{name}.json",
                 "custom": bodies / f"custom_{name}.json",
                 "expected": bodies / f"expected_{name}.json"}
        _write_json(paths["v2"], v2_json_body(row))
        _write_json(paths["custom"], custom_json_body(row))
        _write_json(paths["expected"], expected)
        models[name] = {k: str(v) for k, v in paths.items()}
        models[name]["features"] = FEATURES[name]
        files += [str(v) for v in paths.values()]
    # 64 mlp rows in binary: its own generator so the one-row bodies above do not move
    rows = np.random.default_rng(64).standard_normal((BIN_ROWS, 256)).astype(np.float32)
    body, head_len = v2_binary_body(rows)
    bin_path = bodies / f"v2bin_mlp_b{BIN_ROWS}.bin"
    len_path = bodies / f"v2bin_mlp_b{BIN_ROWS}.len"
    exp_path = bodies / f"expected_mlp_b{BIN_ROWS}.json"
    bin_path.write_bytes(body)
    len_path.write_text(f"{head_len}\n")
    _write_json(exp_path, ort_answer(Path(models["mlp"]["onnx"]), rows))
    files += [str(bin_path), str(len_path), str(exp_path)]
    manifest = {"work": str(work), "repo": str(repo), "models": models,
                "binary": {"model": "mlp", "rows": BIN_ROWS, "body": str(bin_path),
                           "header_length": head_len, "expected": str(exp_path)},
                "files": files}
    _write_json(manifest_path, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: build into WORK and print the manifest."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path, help="work directory (created if missing)")
    ap.add_argument("--force", action="store_true", help="rebuild even if already built")
    args = ap.parse_args(argv)
    print(json.dumps(build(args.work, args.force), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
