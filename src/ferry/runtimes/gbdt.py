"""XGBoost and LightGBM boosters from their native model files (no pickles).

Input ``input`` ``[-1, num_features]`` FP32, output ``predictions`` (``[-1]``, or
``[-1, num_class]`` for multi-class), unless the manifest declares the signature. Boosters
take numbers only: a declared BYTES input fails the load (encode categories before them, in
a python model or an ONNX graph).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferry.errors import ModelLoadError
from ferry.runtimes.base import Runtime
from ferry.types import Signature, TensorSpec, Tensors


class _Booster(Runtime):
    thread_safe = True

    def _finish(self, n_features: int, n_outputs: int) -> None:
        out_shape = (-1,) if n_outputs <= 1 else (-1, n_outputs)
        default = Signature((TensorSpec("input", "FP32", (-1, n_features)),),
                            (TensorSpec("predictions", "FP32", out_shape),))
        self._signature = self.declared_signature(default) or default
        for spec in self._signature.inputs:
            if spec.datatype == "BYTES":
                raise ModelLoadError(f"model.yaml declares input {spec.name!r} as BYTES, but "
                                     f"{self.name} boosters take numbers only")
        self._input = self._signature.inputs[0].name
        self._output = self._signature.outputs[0].name

    def signature(self) -> Signature:
        return self._signature


class XGBoostRuntime(_Booster):
    name = "xgboost"
    artifacts = ("model.ubj", "model.json", "model.xgb")
    requires = ("xgboost",)

    def load(self, version_dir: Path) -> None:
        import xgboost

        path = self.artifact(version_dir)
        try:
            self._booster = xgboost.Booster(model_file=str(path))
        except Exception as exc:
            raise ModelLoadError(f"{path}: xgboost could not load it: {exc}") from None
        self._booster.set_param({"nthread": self.manifest.threads})
        probe = self._booster.inplace_predict(np.zeros((1, self._booster.num_features()),
                                                       dtype=np.float32))
        self._finish(self._booster.num_features(), probe.shape[1] if probe.ndim > 1 else 1)

    def predict(self, inputs: Tensors) -> Tensors:
        out = self._booster.inplace_predict(inputs[self._input])
        return {self._output: np.asarray(out, dtype=np.float32)}


class LightGBMRuntime(_Booster):
    name = "lightgbm"
    artifacts = ("model.txt",)
    requires = ("lightgbm",)

    def load(self, version_dir: Path) -> None:
        import lightgbm

        path = self.artifact(version_dir)
        try:
            self._booster = lightgbm.Booster(model_file=str(path))
        except Exception as exc:
            raise ModelLoadError(f"{path}: lightgbm could not load it: {exc}") from None
        n_class = int(self._booster.dump_model().get("num_class", 1))
        self._finish(self._booster.num_feature(), n_class)

    def predict(self, inputs: Tensors) -> Tensors:
        out = self._booster.predict(inputs[self._input], num_threads=self.manifest.threads)
        return {self._output: np.asarray(out, dtype=np.float32)}
