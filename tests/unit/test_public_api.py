"""The public API is exactly what ``ferry.__all__`` lists."""

from __future__ import annotations

import importlib

import pytest

import ferry

EXPECTED = [
    "FerryError",
    "InferRequest",
    "InferResponse",
    "InvalidInput",
    "ModelError",
    "ModelLoadError",
    "ModelManifest",
    "ModelRef",
    "NotFound",
    "RequestedOutput",
    "Runtime",
    "ServerSettings",
    "Signature",
    "TensorSpec",
    "Unavailable",
    "__version__",
]


def test_all_is_the_expected_list() -> None:
    assert ferry.__all__ == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_each_name_is_importable(name: str) -> None:
    module = importlib.import_module("ferry")
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from ferry import {name}", namespace)  # noqa: S102 - the import statement itself
    assert namespace[name] is getattr(ferry, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from ferry import *", namespace)  # noqa: S102
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(EXPECTED)


def test_version_matches_the_package() -> None:
    from importlib.metadata import version

    assert ferry.__version__ == version("ferry")


def test_public_names_come_from_their_modules() -> None:
    from ferry import errors, manifest, settings, types
    from ferry.runtimes import base

    assert ferry.FerryError is errors.FerryError
    assert ferry.ModelManifest is manifest.ModelManifest
    assert ferry.ServerSettings is settings.ServerSettings
    assert ferry.Signature is types.Signature
    assert ferry.Runtime is base.Runtime
    for cls in (ferry.InvalidInput, ferry.ModelError, ferry.ModelLoadError, ferry.NotFound,
                ferry.Unavailable):
        assert issubclass(cls, ferry.FerryError)
