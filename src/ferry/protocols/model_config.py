"""Triton's model configuration extension, both ways.

- ``model_config(harness)``: the configuration a version runs with, as Triton's
  ``ModelConfig`` JSON (``GET /v2/models/{m}/config``; the ``ModelConfig`` RPC parses the same
  dict into the protobuf message).
- ``override_settings(text, ...)``: a load's ``parameters.config`` (Triton's JSON form of
  ``ModelConfig``) read into manifest settings, which the manager lays over the model's own
  manifest for that load (``manifest.overlay``).

The override is read by the same mapping as a repository's ``config.pbtxt``
(``repository/triton_config.py``: one list of supported fields, one walker of the others),
with ``Reading.override``: it is laid over the version serving now, so ``platform`` and
``backend`` must name that version's runtime (any runtime, not only ONNX) and what it leaves
out stays, and it is strict: a field Ferry does not honour, set to something other than its
default, is an error that names it, where a ``config.pbtxt`` only reports it. An override is
never silently ignored. Every error's message starts with ``failed to load '<model>'``, as
Triton's clients expect.
"""

from __future__ import annotations

from typing import Any

from ferry.errors import ManifestError, RepositoryError
from ferry.lifecycle.harness import VersionHarness
from ferry.manifest import VersionPolicy
from ferry.repository.triton_config import (Reading, parse_config_json, platform_backend,
                                            triton_datatype)
from ferry.types import Signature, TensorSpec

OVERRIDE = "configuration override"
"""How the override is named in its errors (after ``failed to load '<model>': ``)."""


def _tensor(spec: TensorSpec, batching: bool) -> dict[str, Any]:
    dims = list(spec.shape[1:] if batching else spec.shape)
    return {"name": spec.name, "data_type": triton_datatype(spec.datatype), "dims": dims}


def _version_policy(policy: VersionPolicy) -> dict[str, Any]:
    if policy.all:
        return {"all": {}}
    if policy.specific is not None:
        return {"specific": {"versions": list(policy.specific)}}
    return {"latest": {"num_versions": policy.latest or 1}}


def model_config(harness: VersionHarness) -> dict[str, Any]:
    """The version's configuration as Triton's ``ModelConfig`` JSON, from what it runs with:
    the manifest it loaded with, its signature and its effective ``max_batch_size``."""
    manifest = harness.manifest
    platform, backend = platform_backend(harness.runtime_name)
    batching = harness.max_batch_size > 0
    config: dict[str, Any] = {
        "name": harness.model,
        "platform": platform,
        "backend": backend,
        "version_policy": _version_policy(manifest.version_policy),
        "max_batch_size": harness.max_batch_size,
        "input": [_tensor(s, batching) for s in harness.signature.inputs],
        "output": [_tensor(s, batching) for s in harness.signature.outputs],
        "instance_group": [{"name": harness.model, "kind": "KIND_CPU",
                            "count": manifest.instances}],
    }
    if batching:
        db = manifest.dynamic_batching
        config["dynamic_batching"] = {
            "preferred_batch_size": list(db.preferred_batch_sizes),
            "max_queue_delay_microseconds": round(db.max_queue_delay_ms * 1000),
            "default_queue_policy": {"max_queue_size": db.max_queue_size},
        }
    return config


def override_settings(text: str, model: str, current: VersionHarness | None
                      ) -> dict[str, Any]:
    """Manifest settings from a load's ``config`` parameter. ``current`` is the version
    serving now (None when the model is not loaded): the runtime and signature the override
    is checked against. Raises ``RepositoryError`` ("failed to load '<model>': ...")."""
    if current is None:
        reading = Reading.override(None, 0)
    else:
        reading = Reading.override(current.runtime_name, current.max_batch_size)
    try:
        settings = parse_config_json(text, OVERRIDE, model, reading).settings
        max_batch_size = settings.get("max_batch_size", 0)
        if max_batch_size > 0 and current is not None:
            _check_batch_axis(current.signature, settings, max_batch_size)
    except ManifestError as exc:
        raise RepositoryError(f"failed to load {model!r}: {exc.message}") from None
    return settings


def _check_batch_axis(signature: Signature, settings: dict[str, Any],
                      max_batch_size: int) -> None:
    """A batching override needs every tensor (the override's, else the model's) to start
    with a variable batch axis."""
    for key, specs in (("inputs", signature.inputs), ("outputs", signature.outputs)):
        if key in settings:
            continue
        for spec in specs:
            if not spec.shape or spec.shape[0] != -1:
                raise ManifestError(
                    f"{OVERRIDE}: max_batch_size {max_batch_size} needs a variable batch "
                    f"axis first, but {spec.name!r} has shape {list(spec.shape)}; this "
                    f"model takes max_batch_size 0")
