"""Named features: how a model's tensors become the columns that monitoring reads.

Rules (the same for inputs and outputs, and for batch scoring's table columns):

- an input of width 1 (shape ``[-1]`` or ``[-1, 1]``) is one feature under its own name;
- a 2-D input ``[-1, k]`` gives ``name[0]`` ... ``name[k-1]``, unless the manifest names its
  columns (``features: [...]``), which then are the feature names;
- other tensors (images, sequences, models without a batch axis) are stored but not
  monitored; they are listed in ``FeatureLayout.skipped``.

``BYTES`` and ``BOOL`` tensors are categorical; every other datatype is numeric.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ferry.manifest import ModelManifest
from ferry.types import Signature, Tensors, TensorSpec


@dataclass(frozen=True, slots=True)
class Feature:
    """One monitored column: where it comes from and what kind of values it holds."""

    name: str
    tensor: str
    column: int | None
    """Column of a ``[-1, k]`` tensor, or None for a width-1 tensor."""
    kind: str
    """``numeric`` or ``categorical``."""
    role: str
    """``input`` or ``output``."""


@dataclass(slots=True)
class FeatureLayout:
    """A version's features (inputs) and prediction columns (outputs)."""

    features: list[Feature]
    skipped: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> list[Feature]:
        return [f for f in self.features if f.role == "input"]

    @property
    def outputs(self) -> list[Feature]:
        return [f for f in self.features if f.role == "output"]

    def to_json(self) -> dict[str, Any]:
        return {"features": [asdict(f) for f in self.features], "skipped": self.skipped}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FeatureLayout:
        return cls([Feature(**f) for f in doc["features"]], list(doc.get("skipped", [])))

    def columns(self, inputs: Tensors, outputs: Tensors | None = None,
                roles: tuple[str, ...] = ("input", "output")) -> dict[str, np.ndarray]:
        """1-D arrays per feature from stacked tensors (rows on the first axis); features
        whose tensor is absent are left out."""
        out: dict[str, np.ndarray] = {}
        for f in self.features:
            if f.role not in roles:
                continue
            source = inputs if f.role == "input" else (outputs or {})
            array = source.get(f.tensor)
            if array is None:
                continue
            if f.column is None:
                out[f.name] = array.reshape(len(array), -1)[:, 0] if array.ndim > 1 else array
            elif array.ndim == 2 and f.column < array.shape[1]:
                out[f.name] = array[:, f.column]
        return out


def _kind(spec: TensorSpec) -> str:
    return "categorical" if spec.datatype in ("BYTES", "BOOL") else "numeric"


def _tensor_features(spec: TensorSpec, names: list[str] | None, role: str,
                     skipped: list[str]) -> list[Feature]:
    shape = spec.shape
    if not shape or shape[0] != -1 or len(shape) > 2:
        skipped.append(spec.name)
        return []
    if len(shape) == 1 or shape[1] == 1:
        return [Feature(spec.name, spec.name, None, _kind(spec), role)]
    if shape[1] == -1:
        skipped.append(spec.name)
        return []
    labels = names if names and len(names) == shape[1] else [
        f"{spec.name}[{i}]" for i in range(shape[1])]
    return [Feature(label, spec.name, i, _kind(spec), role) for i, label in enumerate(labels)]


def feature_layout(signature: Signature, manifest: ModelManifest | None = None
                   ) -> FeatureLayout:
    """The layout of a version from its signature and the manifest's ``features`` names."""
    declared: dict[str, list[str] | None] = {}
    if manifest is not None:
        for t in (manifest.inputs or []) + (manifest.outputs or []):
            declared[t.name] = t.features
    skipped: list[str] = []
    features: list[Feature] = []
    for spec in signature.inputs:
        features += _tensor_features(spec, declared.get(spec.name), "input", skipped)
    for spec in signature.outputs:
        features += _tensor_features(spec, declared.get(spec.name), "output", skipped)
    return FeatureLayout(features, skipped)
