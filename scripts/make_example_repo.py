"""Write a small example model repository (``<repo>/<model>/<version>/``).

Usage::

    python scripts/make_example_repo.py [OUTDIR]

OUTDIR defaults to ``examples/repository`` under the project root. The script trains small
real models on data sets that scikit-learn ships, with fixed seeds, converts them to ONNX
with skl2onnx and overwrites whatever it wrote before. It needs the ``examples`` extra
(scikit-learn, skl2onnx, onnx). What it writes:

* ``iris/1``: StandardScaler + LogisticRegression; ``iris/2``: RandomForest (20 trees).
  ``iris/model.yaml`` names the features and serves both versions.
* ``diabetes/1``: StandardScaler + Ridge regressor; no model.yaml (signature from the graph).
* ``tabular/1``: StandardScaler + GradientBoostingClassifier on 32 synthetic features.
* ``mlp/1``: StandardScaler + MLPClassifier (256, 256) on the 8x8 digits.
* ``iris_features/1``: a ``python``-runtime model (``examples/iris_features_model.py``)
  that adds two ratio features in front of an ONNX LogisticRegression.

Every version also gets ``reference.parquet``: its training data (``tabular``: 2,000 of its
10,000 rows) as the model's feature columns, the model's predictions on them as its output
columns, and the training target as ``target``. The server profiles it when it connects to
the evaluation store, so ``ferry monitor`` has a reference to compare live traffic with
(``docs/monitoring.md``); ``scripts/traffic.py`` samples its rows to send example requests
and sends ``target`` back as feedback.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.base import BaseEstimator
from sklearn.datasets import load_diabetes, load_digits, load_iris, make_classification
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTDIR = ROOT / "examples" / "repository"
IRIS_FEATURES_SOURCE = ROOT / "examples" / "iris_features_model.py"
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
SEED = 0
MAX_TOTAL_BYTES = 3 * 1024 * 1024
REFERENCE_ROWS = 2000
"""At most this many training rows go into a version's reference.parquet."""
TARGET_COLUMN = "target"
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

IRIS_YAML = """\
# Two versions of an iris classifier: 1 is a logistic regression, 2 a small random forest.
runtime: onnx
max_batch_size: 64
version_policy: {latest: 2}
inputs:
  - {name: float_input, datatype: FP32, shape: [-1, 4], features: [%s]}
outputs:
  - {name: label, datatype: INT64, shape: [-1]}
  - {name: probabilities, datatype: FP32, shape: [-1, 3]}
""" % ", ".join(IRIS_FEATURES)

IRIS_FEATURES_YAML = """\
# A python-runtime model: model.py adds two ratio features and runs model.onnx.
runtime: python
max_batch_size: 64
parameters: {predictor: IrisWithRatios}
inputs:
  - {name: measurements, datatype: FP32, shape: [-1, 4], features: [%s]}
outputs:
  - {name: label, datatype: INT64, shape: [-1]}
  - {name: probabilities, datatype: FP32, shape: [-1, 3]}
""" % ", ".join(IRIS_FEATURES)


def to_onnx(model: BaseEstimator, name: str, input_name: str, n_features: int) -> bytes:
    """Serialized ONNX for ``model``; classifiers give plain ``label``/``probabilities``.

    ``name`` becomes the graph name (skl2onnx would pick a random one), so that the same
    training run gives byte-identical files.
    """
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    options: dict[int, dict[str, Any]] | None = None
    if hasattr(final, "predict_proba"):
        options = {id(final): {"zipmap": False}}
    onx = convert_sklearn(model, name=name,
                          initial_types=[(input_name, FloatTensorType([None, n_features]))],
                          target_opset=TARGET_OPSET, options=options)
    return onx.SerializeToString()


def write_onnx(out: Path, model_name: str, version: int, model: BaseEstimator,
               input_name: str, n_features: int) -> Path:
    """Convert ``model`` and write it to ``out/<model_name>/<version>/model.onnx``."""
    data = to_onnx(model, f"{model_name}_{version}", input_name, n_features)
    return write_bytes(out / model_name / str(version) / "model.onnx", data)


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def write_reference(out: Path, model_name: str, version: int, x: np.ndarray,
                    y: np.ndarray) -> Path:
    """Write ``<model>/<version>/reference.parquet`` from training rows ``x`` and targets ``y``.

    The version is loaded with Ferry's own runtime and its columns are named by Ferry's
    feature layout (``evalstore/features.py``), exactly as the server names live traffic:
    the model's input features, its outputs on ``x``, and ``target``.
    """
    from ferry.evalstore.features import feature_layout
    from ferry.manifest import MANIFEST_FILE, load_manifest
    from ferry.runtimes.registry import guess_runtime, runtime_class

    if len(x) > REFERENCE_ROWS:
        keep = np.sort(np.random.default_rng(SEED).choice(len(x), REFERENCE_ROWS,
                                                          replace=False))
        x, y = x[keep], y[keep]
    version_dir = out / model_name / str(version)
    manifest = load_manifest(out / model_name / MANIFEST_FILE)
    runtime = runtime_class(manifest.runtime or guess_runtime(version_dir))(manifest)
    runtime.load(version_dir)
    try:
        signature = runtime.signature()
        if len(signature.inputs) != 1:
            raise ValueError(f"{model_name}: the example models have one input")
        inputs = {signature.inputs[0].name: np.asarray(x, dtype=np.float32)}
        outputs = runtime.predict(inputs)
    finally:
        runtime.unload()
    columns = feature_layout(signature, manifest).columns(inputs, outputs)
    columns[TARGET_COLUMN] = np.asarray(y)
    path = version_dir / "reference.parquet"
    pq.write_table(pa.table(columns), path, compression="zstd")
    return path


def load_iris_features_module() -> ModuleType:
    """The python model's source, imported so training uses the same ratio transform."""
    spec = importlib.util.spec_from_file_location("iris_features_model", IRIS_FEATURES_SOURCE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {IRIS_FEATURES_SOURCE}")
    module = importlib.util.module_from_spec(spec)
    dont_write_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:  # no __pycache__ next to the committed source
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write_bytecode
    return module


def iris_xy() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


def make_iris(out: Path) -> list[Path]:
    x, y = iris_xy()
    logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    forest = RandomForestClassifier(n_estimators=20, max_depth=4, random_state=SEED).fit(x, y)
    paths = [write_text(out / "iris" / "model.yaml", IRIS_YAML),
             write_onnx(out, "iris", 1, logistic, "float_input", 4),
             write_onnx(out, "iris", 2, forest, "float_input", 4)]
    return paths + [write_reference(out, "iris", 1, x, y), write_reference(out, "iris", 2, x, y)]


def make_diabetes(out: Path) -> list[Path]:
    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    model = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(x, y)
    return [write_onnx(out, "diabetes", 1, model, "input", 10),
            write_reference(out, "diabetes", 1, x, y)]


def make_tabular(out: Path) -> list[Path]:
    x, y = make_classification(n_samples=10000, n_features=32, n_informative=16,
                               n_redundant=4, random_state=SEED)
    x = (x * 3 + 1.5).astype(np.float32)
    model = make_pipeline(StandardScaler(),
                          GradientBoostingClassifier(n_estimators=100, max_depth=3,
                                                     random_state=SEED)).fit(x, y)
    return [write_onnx(out, "tabular", 1, model, "input", 32),
            write_reference(out, "tabular", 1, x, y)]


def make_mlp(out: Path) -> list[Path]:
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    mlp = MLPClassifier(hidden_layer_sizes=(256, 256), activation="relu", max_iter=30,
                        random_state=SEED)
    model = make_pipeline(StandardScaler(), mlp)
    with warnings.catch_warnings():
        # 30 epochs reach ~100% training accuracy; more would only slow the script down.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return [write_onnx(out, "mlp", 1, model, "input", 64), write_reference(out, "mlp", 1, x, y)]


def make_iris_features(out: Path) -> list[Path]:
    add_ratios: Callable[[np.ndarray], np.ndarray] = load_iris_features_module().add_ratios
    x, y = iris_xy()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(add_ratios(x), y)
    version = out / "iris_features" / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(IRIS_FEATURES_SOURCE, version / "model.py")
    return [version / "model.py",
            write_onnx(out, "iris_features", 1, model, "input", 6),
            write_text(out / "iris_features" / "model.yaml", IRIS_FEATURES_YAML),
            write_reference(out, "iris_features", 1, x, y)]


BUILDERS: dict[str, Callable[[Path], list[Path]]] = {
    "iris": make_iris,
    "diabetes": make_diabetes,
    "tabular": make_tabular,
    "mlp": make_mlp,
    "iris_features": make_iris_features,
}


def human(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.2f} MiB"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if len(args) > 1:
        print("usage: python scripts/make_example_repo.py [OUTDIR]", file=sys.stderr)
        return 2
    out = Path(args[0]) if args else DEFAULT_OUTDIR
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, build in BUILDERS.items():
        np.random.seed(SEED)
        paths = build(out)
        size = sum(p.stat().st_size for p in paths)
        total += size
        shown = ", ".join(str(p.relative_to(out)) for p in paths)
        print(f"{name:<14} {human(size):>10}  {shown}")
    print(f"{'total':<14} {human(total):>10}  in {out}")
    if total > MAX_TOTAL_BYTES:
        print(f"error: the example repository is over {human(MAX_TOTAL_BYTES)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
