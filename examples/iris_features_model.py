"""A ``python``-runtime model: a feature transform in front of an ONNX classifier.

``scripts/make_example_repo.py`` copies this file to ``iris_features/<version>/model.py``
and writes the classifier next to it as ``model.onnx``. The classifier was trained on the
four iris measurements plus two derived ratios (petal length / petal width and sepal
length / sepal width); clients send only the four measurements, and this class computes the
ratios before running the graph.

Only numpy and onnxruntime are imported: this file runs inside the server's process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

EPSILON = np.float32(1e-6)
"""Smallest denominator: a zero (or negative) width gives a large ratio, not inf or NaN."""


class IrisWithRatios:
    """Takes ``measurements`` (FP32 [N, 4]); returns ``label`` and ``probabilities``."""

    def load(self, version_dir: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(Path(version_dir) / "model.onnx"),
                                             sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(inputs["measurements"], dtype=np.float32).reshape(-1, 4)
        features = add_ratios(x)
        label, probabilities = self._session.run(["label", "probabilities"],
                                                 {self._input_name: features})
        return {"label": np.asarray(label, dtype=np.int64).reshape(-1),
                "probabilities": np.asarray(probabilities, dtype=np.float32)}

    def unload(self) -> None:
        self._session = None


def add_ratios(x: np.ndarray) -> np.ndarray:
    """[N, 4] measurements -> [N, 6]: the measurements, then petal and sepal ratios."""
    x = np.asarray(x, dtype=np.float32)
    petal_ratio = x[:, 2] / np.maximum(x[:, 3], EPSILON)
    sepal_ratio = x[:, 0] / np.maximum(x[:, 1], EPSILON)
    return np.concatenate([x, petal_ratio[:, None], sepal_ratio[:, None]],
                          axis=1).astype(np.float32)
