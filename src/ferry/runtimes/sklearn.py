"""scikit-learn estimators from joblib/pickle files.

Loading a pickle runs code from the file, so this runtime loads only from a repository the
operator marked trusted (``ferry serve --trust-pickles``).

Outputs: classifiers give ``label`` and, with ``predict_proba``, ``probabilities``;
regressors and everything else give ``predictions``. The single input is ``input``
``[-1, n_features_in_]`` unless the manifest declares the signature. A declared BYTES input
is text: the estimator gets an object array of ``str`` (what encoders of string categories
expect), and string class labels leave as BYTES.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferry.errors import ModelLoadError
from ferry.runtimes.base import Runtime, text_inputs, with_text_inputs
from ferry.types import Signature, TensorSpec, Tensors


class SklearnRuntime(Runtime):
    name = "sklearn"
    artifacts = ("model.joblib", "model.pkl")
    thread_safe = True
    executes_code_on_load = True
    requires = ("joblib", "sklearn")

    def load(self, version_dir: Path) -> None:
        import joblib

        path = self.artifact(version_dir)
        try:
            self._model = joblib.load(path)
        except Exception as exc:
            raise ModelLoadError(f"{path}: could not unpickle: {exc}") from None
        if not hasattr(self._model, "predict"):
            raise ModelLoadError(f"{path}: holds a {type(self._model).__name__}, which has "
                                 f"no predict()")
        self._proba = hasattr(self._model, "predict_proba") and hasattr(self._model, "classes_")
        inferred = self._infer_signature()
        signature = self.declared_signature(inferred) or inferred
        self._signature = with_text_inputs(signature, {s.name for s in signature.inputs})
        self._input = self._signature.inputs[0].name
        self._text = tuple(s.name for s in self._signature.inputs if s.text)

    def _infer_signature(self) -> Signature:
        n = int(getattr(self._model, "n_features_in_", -1))
        inputs = (TensorSpec("input", "FP64", (-1, n)),)
        outputs: tuple[TensorSpec, ...]
        if self._proba:
            classes = np.asarray(self._model.classes_)
            label_type = "INT64" if classes.dtype.kind in "iu" else "BYTES"
            outputs = (TensorSpec("label", label_type, (-1,)),
                       TensorSpec("probabilities", "FP64", (-1, len(classes))))
        else:
            outputs = (TensorSpec("predictions", "FP64", (-1,)),)
        return Signature(inputs, outputs)

    def predict(self, inputs: Tensors) -> Tensors:
        if self._text:
            inputs = text_inputs(inputs, self._text)
        x = inputs[self._input]
        names = [o.name for o in self._signature.outputs]
        if self._proba:
            proba = self._model.predict_proba(x)
            labels = np.asarray(self._model.classes_)[np.argmax(proba, axis=1)]
            if labels.dtype.kind in "iu":
                labels = labels.astype(np.int64)
            return {names[0]: labels, names[1]: proba} if len(names) > 1 else {names[0]: labels}
        return {names[0]: np.asarray(self._model.predict(x))}

    def signature(self) -> Signature:
        return self._signature
