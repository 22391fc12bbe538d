"""Runtime name -> class: the built-ins plus any installed under the entry-point group
``ferry.runtimes``. Heavy frameworks are imported only when their runtime is used."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path

from ferry._extras import missing_message
from ferry.errors import ModelLoadError
from ferry.runtimes.base import Runtime

_BUILTIN = {
    "onnx": "ferry.runtimes.onnx:OnnxRuntime",
    "sklearn": "ferry.runtimes.sklearn:SklearnRuntime",
    "xgboost": "ferry.runtimes.gbdt:XGBoostRuntime",
    "lightgbm": "ferry.runtimes.gbdt:LightGBMRuntime",
    "python": "ferry.runtimes.python:PythonRuntime",
}

#: artifact file name -> runtime, to pick a runtime when the manifest names none
_BY_ARTIFACT = [
    ("model.onnx", "onnx"),
    ("model.joblib", "sklearn"),
    ("model.pkl", "sklearn"),
    ("model.ubj", "xgboost"),
    ("model.xgb", "xgboost"),
    ("model.json", "xgboost"),
    ("model.txt", "lightgbm"),
    ("model.py", "python"),
]


def names() -> list[str]:
    """Every runtime name this install knows."""
    return sorted(set(_BUILTIN) | {ep.name for ep in entry_points(group="ferry.runtimes")})


def runtime_class(name: str) -> type[Runtime]:
    """The class registered as ``name``; ``ModelLoadError`` naming the choices otherwise."""
    target = _BUILTIN.get(name)
    if target is None:
        for ep in entry_points(group="ferry.runtimes"):
            if ep.name == name:
                target = ep.value
                break
    if target is None:
        raise ModelLoadError(f"unknown runtime {name!r}; installed: {', '.join(names())}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(missing_message(exc.name or module_name, f"the {name} runtime")) \
            from None
    cls: type[Runtime] = getattr(module, attr)
    return cls


def guess_runtime(version_dir: Path) -> str:
    """The runtime for a version folder with no ``runtime:`` in its manifest."""
    for file_name, runtime in _BY_ARTIFACT:
        if (version_dir / file_name).exists():
            return runtime
    known = ", ".join(f for f, _ in _BY_ARTIFACT)
    raise ModelLoadError(f"{version_dir}: no model artifact found (looked for {known}); "
                         f"add one or set runtime: in model.yaml")
