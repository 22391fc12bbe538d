"""A user's predictor class in ``model.py`` of the version folder: the place for feature
transforms and glue around other models.

The class is named by ``parameters: {predictor: ClassName}`` in ``model.yaml``, or is the
only class in ``model.py`` with both ``load`` and ``predict``. It is created with no
arguments, then ``load(version_dir)`` is called once; ``predict(inputs)`` takes and returns
``dict[str, np.ndarray]``. The manifest declares the signature (``inputs`` and ``outputs``),
unless the class has a ``signature()`` returning a ``ferry.Signature``. BYTES inputs arrive as
object arrays of ``bytes``, exactly as sent (decode them if they are text); BYTES outputs may
hold ``bytes`` or ``str`` (written as UTF-8).

``model.py`` is code: it runs with the server's rights, like any code in the repository.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ferry.errors import ModelError, ModelLoadError
from ferry.runtimes.base import Runtime
from ferry.types import Signature, Tensors


class PythonRuntime(Runtime):
    name = "python"
    artifacts = ("model.py",)
    thread_safe = False  # user code: each instance gets its own object

    def load(self, version_dir: Path) -> None:
        path = self.artifact(version_dir)
        module_name = f"ferry_user_model_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ModelLoadError(f"{path}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses/typing look the module up while it runs
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ModelLoadError(f"{path}: import failed: {type(exc).__name__}: {exc}") from None
        finally:
            sys.modules.pop(module_name, None)
        cls = self._predictor_class(module, path)
        self._predictor: Any = cls()
        self._predictor.load(version_dir)
        own = self._predictor.signature() if hasattr(self._predictor, "signature") else None
        declared = self.declared_signature(own if isinstance(own, Signature) else None)
        if not isinstance(declared, Signature):
            raise ModelLoadError(f"{path}: declare inputs and outputs in model.yaml (or give "
                                 f"{cls.__name__} a signature() method)")
        self._signature = declared
        self._module_name = module_name
        sys.modules.pop(module_name, None)

    def _predictor_class(self, module: Any, path: Path) -> type:
        wanted = self.manifest.parameters.get("predictor")
        if wanted is not None:
            cls = getattr(module, str(wanted), None)
            if not inspect.isclass(cls):
                raise ModelLoadError(f"{path}: no class {wanted!r} (named by parameters."
                                     f"predictor in model.yaml)")
            return cls
        found = [c for _, c in inspect.getmembers(module, inspect.isclass)
                 if c.__module__ == module.__name__ and hasattr(c, "load")
                 and hasattr(c, "predict")]
        if len(found) != 1:
            raise ModelLoadError(f"{path}: expected one class with load() and predict(), found "
                                 f"{[c.__name__ for c in found]}; name it with parameters: "
                                 f"{{predictor: ClassName}}")
        return found[0]

    def predict(self, inputs: Tensors) -> Tensors:
        result = self._predictor.predict(inputs)
        if not isinstance(result, dict):
            raise ModelError(f"predictor returned {type(result).__name__}, expected a dict of "
                             f"output name -> array")
        return {k: np.asarray(v) for k, v in result.items()}

    def signature(self) -> Signature:
        return self._signature

    def unload(self) -> None:
        unload = getattr(self._predictor, "unload", None)
        if callable(unload):
            unload()
        super().unload()
