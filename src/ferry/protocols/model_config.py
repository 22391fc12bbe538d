"""Triton's model configuration extension, both ways.

- ``model_config(harness)``: the configuration a version runs with, as Triton's
  ``ModelConfig`` JSON (``GET /v2/models/{m}/config``; the ``ModelConfig`` RPC parses the same
  dict into the protobuf message).
- ``override_settings(text, ...)``: a load's ``parameters.config`` (Triton's JSON form of
  ``ModelConfig``) read into manifest settings, which the manager lays over the model's own
  manifest for that load (``manifest.overlay``).

The override is parsed by the protobuf library into Triton's ``ModelConfig`` message, so an
unknown field, a wrong type or an unknown enum value is an error in Triton's own terms. Fields
Ferry honours: ``name`` (must be the model's), ``platform``/``backend`` (must be the model's
runtime), ``max_batch_size``, ``input``/``output`` (``name``, ``data_type``, ``dims``; Triton's
rule: with ``max_batch_size > 0`` dims leave out the batch axis), ``dynamic_batching``
(``max_queue_delay_microseconds``, ``preferred_batch_size``,
``default_queue_policy.max_queue_size``), ``instance_group`` (``count`` summed, ``kind``
``KIND_CPU`` or ``KIND_AUTO``) and ``version_policy``. Any other field set to something other
than its default is an error that names it: an override is never silently ignored. Every
error's message starts with ``failed to load '<model>'``, as Triton's clients expect.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from ferry._pb import model_config_pb2 as mc

from ferry.errors import RepositoryError
from ferry.lifecycle.harness import VersionHarness
from ferry.manifest import VersionPolicy
from ferry.types import Signature, TensorSpec

SUPPORTED = frozenset({
    "name", "platform", "backend", "max_batch_size",
    "input", "input.name", "input.data_type", "input.dims",
    "output", "output.name", "output.data_type", "output.dims",
    "dynamic_batching", "dynamic_batching.max_queue_delay_microseconds",
    "dynamic_batching.preferred_batch_size", "dynamic_batching.default_queue_policy",
    "dynamic_batching.default_queue_policy.max_queue_size",
    "instance_group", "instance_group.name", "instance_group.count", "instance_group.kind",
    "version_policy", "version_policy.latest", "version_policy.latest.num_versions",
    "version_policy.all", "version_policy.specific", "version_policy.specific.versions",
})
"""Dotted paths (list indexes left out) of the fields an override may set."""

_CPU_KINDS = ("KIND_CPU", "KIND_AUTO")
_INDEX = re.compile(r"\[\d+\]")


def platform_backend(runtime: str) -> tuple[str, str]:
    """Triton's ``platform`` and ``backend`` for a Ferry runtime."""
    if runtime == "onnx":
        return "onnxruntime_onnx", "onnxruntime"
    return "", runtime


def triton_datatype(datatype: str) -> str:
    """V2 datatype -> Triton's ``DataType`` name (``FP32`` -> ``TYPE_FP32``)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _v2_datatype(name: str) -> str:
    return "BYTES" if name == "TYPE_STRING" else name.removeprefix("TYPE_")


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


def _unsupported(message: Message, prefix: str = "") -> list[str]:
    """Paths of the fields of ``message`` set to non-default values that Ferry does not
    honour (list indexes shown)."""
    found: list[str] = []
    for fd, value in message.ListFields():
        path = f"{prefix}{fd.name}"
        if _INDEX.sub("", path) not in SUPPORTED:
            found.append(path)
        elif isinstance(value, Message):
            found += _unsupported(value, f"{path}.")
        elif fd.message_type is not None:  # a repeated message field
            for i, item in enumerate(value):
                found += _unsupported(item, f"{path}[{i}].")
    return found


def override_settings(text: str, model: str, current: VersionHarness | None
                      ) -> dict[str, Any]:
    """Manifest settings from a load's ``config`` parameter. ``current`` is the version
    serving now (None when the model is not loaded): the runtime and signature the override
    is checked against. Raises ``RepositoryError`` ("failed to load '<model>': ...")."""
    def fail(why: str) -> RepositoryError:
        return RepositoryError(f"failed to load {model!r}: configuration override: {why}")

    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise fail(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise fail(f"expected a JSON object (Triton's model configuration), got "
                   f"{type(raw).__name__}")
    config = mc.ModelConfig()
    try:
        json_format.ParseDict(raw, config)
    except json_format.ParseError as exc:
        raise fail(f"not a valid Triton model configuration: {exc}") from None
    unsupported = _unsupported(config)
    if unsupported:
        raise fail(f"Ferry does not support {', '.join(unsupported)}; it honours "
                   f"{', '.join(sorted(p for p in SUPPORTED if '.' not in p))}")
    if config.name and config.name != model:
        raise fail(f"name is {config.name!r}, not {model!r}")
    if current is not None:
        platform, backend = platform_backend(current.runtime_name)
        for key, given, running in (("platform", config.platform, platform),
                                    ("backend", config.backend, backend)):
            if given and given != running:
                raise fail(f"{key} {given!r} differs from the model's runtime "
                           f"{current.runtime_name!r} ({key} {running or 'none'!r}); "
                           f"leave {key} out")
    settings: dict[str, Any] = {}
    max_batch_size = current.max_batch_size if current is not None else 0
    if "max_batch_size" in raw:
        settings["max_batch_size"] = max_batch_size = config.max_batch_size
    batching = max_batch_size > 0
    for key, tensors in (("inputs", config.input), ("outputs", config.output)):
        if tensors:
            settings[key] = [
                {"name": t.name, "datatype": _v2_datatype(mc.DataType.Name(t.data_type)),
                 "shape": [-1, *t.dims] if batching else list(t.dims)} for t in tensors]
    if "max_batch_size" in settings and max_batch_size > 0 and current is not None:
        _check_batch_axis(current.signature, settings, max_batch_size, fail)
    if config.HasField("dynamic_batching"):
        db = config.dynamic_batching
        batching_settings: dict[str, Any] = {
            "max_queue_delay_ms": db.max_queue_delay_microseconds / 1000,
            "preferred_batch_sizes": list(db.preferred_batch_size)}
        if db.default_queue_policy.max_queue_size > 0:  # 0 is Triton's "unbounded"
            batching_settings["max_queue_size"] = db.default_queue_policy.max_queue_size
        settings["dynamic_batching"] = batching_settings
    if config.instance_group:
        for i, group in enumerate(config.instance_group):
            kind = mc.ModelInstanceGroup.Kind.Name(group.kind)
            if kind not in _CPU_KINDS:
                raise fail(f"instance_group[{i}].kind is {kind}; Ferry runs models on CPU "
                           f"({' or '.join(_CPU_KINDS)})")
        settings["instances"] = sum(g.count or 1 for g in config.instance_group)
    if config.HasField("version_policy"):
        settings["version_policy"] = _policy_setting(config.version_policy)
    return settings


def _check_batch_axis(signature: Signature, settings: dict[str, Any], max_batch_size: int,
                      fail: Any) -> None:
    """A batching override needs every tensor (the override's, else the model's) to start
    with a variable batch axis."""
    for key, specs in (("inputs", signature.inputs), ("outputs", signature.outputs)):
        if key in settings:
            continue
        for spec in specs:
            if not spec.shape or spec.shape[0] != -1:
                raise fail(f"max_batch_size {max_batch_size} needs a variable batch axis "
                           f"first, but {spec.name!r} has shape {list(spec.shape)}; this "
                           f"model takes max_batch_size 0")


def _policy_setting(policy: Message) -> Any:
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return "all"
    if which == "specific":
        return {"specific": list(policy.specific.versions)}
    return {"latest": policy.latest.num_versions or 1}
