"""``model.yaml``: what an operator may declare about a model, validated strictly.

Every field is optional: a version folder holding only ``model.onnx`` serves with its
signature read from the graph. Unknown keys are errors that name the key and the file.

Example::

    runtime: onnx
    inputs:
      - {name: float_input, datatype: FP32, shape: [-1, 4]}
    outputs:
      - {name: label, datatype: INT64, shape: [-1]}
    max_batch_size: 64
    dynamic_batching: {max_queue_delay_ms: 0, max_queue_size: 4096}
    instances: 1
    threads: 1
    version_policy: {latest: 2}
    labels: {probabilities: labels.txt}   # class names for the classification extension
    monitoring:                      # drift thresholds, quality overrides, alerts
      drift: {wasserstein: 0.15, features: {f0: {wasserstein: 0.3}}}
      quality: {min_rows: 100, features: {f0: {min: 0, max: 120}}}
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ferry.datatypes import ALLOWED, V2_TO_NUMPY
from ferry.errors import ManifestError
from ferry.monitoring.config import MonitoringConfig
from ferry.types import TensorSpec

MANIFEST_FILE = "model.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorConfig(_Strict):
    """One declared input or output."""

    name: Annotated[str, Field(min_length=1)]
    """The tensor's name, as the model and the clients call it."""
    datatype: str
    """A V2 datatype: BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64 or BYTES."""
    shape: list[int]
    """The full shape; -1 for a variable dimension. With batching, the first is -1."""
    allow_nan: bool = True
    """Accept NaN values (float inputs). False answers 422 to a request holding NaN."""
    features: list[str] | None = None
    """Column names for a ``[-1, k]`` input (used by monitoring and batch scoring)."""

    @model_validator(mode="after")
    def _check(self) -> TensorConfig:
        if self.datatype not in V2_TO_NUMPY:
            raise ValueError(f"datatype {self.datatype!r} is not one of {ALLOWED}")
        if any(d < -1 or d == 0 for d in self.shape):
            raise ValueError(f"shape {self.shape}: use positive sizes or -1 for variable")
        if self.features is not None and (len(self.shape) != 2 or self.shape[1] != len(
                self.features)):
            raise ValueError(f"features lists {len(self.features)} names but shape is "
                             f"{self.shape}; give one name per column of a [-1, k] input")
        return self

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.datatype, tuple(self.shape), self.allow_nan)

    def feature_names(self) -> list[str]:
        """The monitored column names this tensor gives (``evalstore/features.py`` rules):
        its name for width 1, ``features`` or ``name[i]`` for ``[-1, k]``, else none."""
        shape = self.shape
        if not shape or shape[0] != -1 or len(shape) > 2 or (len(shape) == 2 and shape[1] == -1):
            return []
        if len(shape) == 1 or shape[1] == 1:
            return [self.name]
        return self.features or [f"{self.name}[{i}]" for i in range(shape[1])]


class DynamicBatching(_Strict):
    """How requests queued for one version are merged into batches."""

    max_queue_delay_ms: Annotated[float, Field(ge=0)] = 0.0
    """How long the first request of a batch may wait for more to join. 0 (default): run
    at once when an instance is idle and batch only what queued while all were busy."""
    preferred_batch_sizes: list[Annotated[int, Field(gt=0)]] = []
    """With a delay: stop waiting as soon as the batch reaches one of these sizes."""
    max_queue_size: Annotated[int, Field(gt=0)] = 4096
    """Rows that may wait; more are answered 503 with Retry-After."""


class VersionPolicy(_Strict):
    """Which versions are served: ``latest: N`` (default 1), ``all: true`` or ``specific``."""

    latest: Annotated[int, Field(gt=0)] | None = None
    all: bool = False
    specific: list[Annotated[int, Field(ge=0)]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_word(cls, value: Any) -> Any:
        if value == "all":
            return {"all": True}
        return value

    @model_validator(mode="after")
    def _one_of(self) -> VersionPolicy:
        chosen = sum([self.latest is not None, self.all, self.specific is not None])
        if chosen > 1:
            raise ValueError("choose one of latest: N, all, specific: [..]")
        return self


class ModelManifest(_Strict):
    """A model's ``model.yaml``. Every field is optional."""

    runtime: Literal["onnx", "sklearn", "xgboost", "lightgbm", "python"] | str | None = None
    """The runtime that loads each version; guessed from the artifact's file name if absent."""
    inputs: list[TensorConfig] | None = None
    """Declared inputs; read from the artifact when the runtime can (ONNX)."""
    outputs: list[TensorConfig] | None = None
    """Declared outputs; read from the artifact when the runtime can (ONNX)."""
    max_batch_size: Annotated[int, Field(ge=0)] | None = None
    """Rows per batch; 0 = the model has no batch dimension and runs one request at a time.
    Default: 64 when every input and output has a variable first dimension, 1 when every one
    has a first dimension fixed at 1 (a graph exported with a batch of one), else 0. It bounds
    what the scheduler merges; a request with more rows is served on its own
    (``split_large_requests``, ``docs/batching.md``)."""
    split_large_requests: bool | None = None
    """A request with more rows than ``max_batch_size`` runs in chunks of ``max_batch_size``
    rows (for a model that cannot take more in one call), instead of as one call. Either way
    it runs on its own, never merged with other requests. Default: true for a graph whose
    batch dimension is fixed at 1, else false."""
    dynamic_batching: DynamicBatching = DynamicBatching()
    """Queueing and batching settings."""
    instances: Annotated[int, Field(gt=0)] = 1
    """How many copies of each version execute concurrently."""
    execution: Literal["auto", "thread", "inline"] = "auto"
    """Where batches run: ``thread`` on each instance's thread; ``inline`` on the event loop
    thread; ``auto`` inline while a single instance answers in under 0.5 ms, else on its
    thread (see ``scheduler/instances.py``)."""
    artifact: Annotated[str, Field(min_length=1, pattern=r"^[^/\\]+$")] | None = None
    """The model file's name in each version folder, when it is not the runtime's usual one
    (``model.onnx``, ...). A Triton ``config.pbtxt`` sets it with ``default_model_filename``."""
    threads: Annotated[int, Field(gt=0)] = 1
    """Threads per instance inside the runtime (ONNX Runtime intra-op threads)."""
    version_policy: VersionPolicy = VersionPolicy()
    """Which versions are live."""
    labels: dict[str, str] = {}
    """Output name -> labels file, a path relative to the model folder (beside
    ``model.yaml``): one class label per line, line i naming class i. Used when a request
    asks for that output as its top k classes (Triton's classification extension: elements
    ``"score:index:label"``). Read when a version loads; an output the model lacks, or a
    missing file, fails the load. (Triton's ``label_filename`` maps here.)"""
    parameters: dict[str, Any] = {}
    """Runtime-specific settings (e.g. ``predictor`` for the python runtime)."""
    warmup: bool = True
    """Before a version takes traffic, run one request of zeros built from the signature
    (a failure is logged, not fatal). Requests in ``<version>/warmup/*.npz`` always run, and
    their failure fails the load."""
    sha256: dict[int, str] = {}
    """Expected sha256 (see ``ferry models``) per version; a mismatch fails the load."""
    monitoring: MonitoringConfig = MonitoringConfig()
    """Drift thresholds (per model and per feature), data-quality overrides and alerts
    (``monitoring/config.py``, ``docs/monitoring.md``)."""

    @model_validator(mode="after")
    def _batch_axis(self) -> ModelManifest:
        if self.split_large_requests and self.max_batch_size == 0:
            raise ValueError("split_large_requests needs a batch axis, but max_batch_size is 0")
        if self.max_batch_size:
            for t in (self.inputs or []) + (self.outputs or []):
                if not t.shape or t.shape[0] != -1:
                    raise ValueError(f"max_batch_size is {self.max_batch_size} but "
                                     f"{t.name!r} has shape {t.shape}; a batching model's "
                                     f"tensors start with the batch axis -1")
        return self

    @model_validator(mode="after")
    def _labels_paths(self) -> ModelManifest:
        for output, path in self.labels.items():
            parts = PurePosixPath(path).parts
            if not path or path.startswith(("/", "\\")) or ".." in parts or ":" in path:
                raise ValueError(f"labels.{output}: {path!r} must be a path inside the model "
                                 f"folder, relative to it (e.g. labels.txt)")
        return self

    @model_validator(mode="after")
    def _monitored_features(self) -> ModelManifest:
        """With a declared signature, settings for a feature it does not have are errors."""
        if self.inputs is None or self.outputs is None:
            return self  # the rest of the signature comes from the artifact: checked later
        known = {n for t in self.inputs + self.outputs for n in t.feature_names()}
        for section in ("drift", "quality"):
            for name in getattr(self.monitoring, section).features:
                if name not in known:
                    raise ValueError(f"monitoring.{section}.features names {name!r}, which is "
                                     f"not a feature of this model; its features are "
                                     f"{sorted(known)}")
        return self


def load_manifest(path: Path) -> ModelManifest:
    """Read and validate ``path``; a missing file gives the all-defaults manifest."""
    if not path.exists():
        return ModelManifest()
    return manifest_from_text(path.read_text(), str(path))


def manifest_from_text(text: str | None, source: str) -> ModelManifest:
    """Validate ``model.yaml`` text read from ``source`` (None = no file: defaults)."""
    if text is None:
        return ModelManifest()
    return parse_manifest(settings_from_text(text, source), source)


def settings_from_text(text: str, source: str) -> dict[str, Any]:
    """The mapping in ``model.yaml`` text, not yet validated."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:  # an empty file
        raw = {}
    if not isinstance(raw, dict):
        raise ManifestError(f"{source}: expected a mapping of settings, got "
                            f"{type(raw).__name__}")
    return raw


def parse_manifest(raw: dict[str, Any], source: str = MANIFEST_FILE) -> ModelManifest:
    """Validate a mapping; errors name the file, the key and what is allowed."""
    try:
        return ModelManifest.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key {where!r}")
            else:
                problems.append(f"{where}: {err['msg']}")
        allowed = ", ".join(ModelManifest.model_fields)
        raise ManifestError(f"{source}: " + "; ".join(problems)
                            + f" (top-level keys allowed: {allowed})") from None


def overlay(manifest: ModelManifest, settings: dict[str, Any], source: str) -> ModelManifest:
    """``manifest`` with ``settings`` (manifest keys, e.g. from a load's configuration
    override) in place of its own, validated as a whole (``ManifestError`` names the key).
    ``dynamic_batching`` and ``labels`` replace only the keys given; a declared tensor of the
    same name keeps its other settings (``allow_nan``, and ``features`` while its shape is
    unchanged)."""
    raw = manifest.model_dump(exclude_unset=True)
    for key, value in settings.items():
        if key in ("dynamic_batching", "labels"):
            raw[key] = {**raw.get(key, {}), **value}
        elif key in ("inputs", "outputs"):
            old = {t.name: t.model_dump(exclude_unset=True)
                   for t in getattr(manifest, key) or []}
            merged = []
            for tensor in value:
                kept = dict(old.get(tensor["name"], {}))
                if kept.get("shape") != tensor.get("shape"):
                    kept.pop("features", None)
                merged.append({**kept, **tensor})
            raw[key] = merged
        else:
            raw[key] = value
    return parse_manifest(raw, source)
