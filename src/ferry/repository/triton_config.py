"""Triton's ``config.pbtxt`` -> the settings of Ferry's manifest (pure: text in, mapping out).

The text is parsed by the protobuf library's text format into Triton's ``ModelConfig``
message (``_pb/model_config_pb2``), so the grammar, the field names and the enum
values are Triton's own; a syntax error or an unknown field is a ``ManifestError`` naming
the file, the line and the column.

What is honoured, and how it maps (``docs/repository.md``, "Triton repositories"):

- ``platform: "onnxruntime_onnx"`` or ``backend: "onnxruntime"`` -> ``runtime: onnx``; any
  other platform or backend is an error (Ferry serves only ONNX models from a config.pbtxt).
- ``max_batch_size`` -> ``max_batch_size``. Triton's rule: with ``max_batch_size > 0`` the
  ``dims`` leave out the batch dimension, so Ferry's shape is ``[-1] + dims``; with 0 the
  model does not batch and ``dims`` is the full shape.
- ``input``/``output``: ``name``, ``data_type`` (``TYPE_FP32`` -> ``FP32``, ``TYPE_STRING``
  -> ``BYTES``), ``dims`` (-1 = variable). ``label_filename`` on an output -> ``labels:
  {output: file}`` (the classification extension's class names).
- ``dynamic_batching``: ``max_queue_delay_microseconds``, ``preferred_batch_size``,
  ``default_queue_policy.max_queue_size`` (0, Triton's "unbounded", keeps Ferry's default).
- ``instance_group[].count``, summed over the groups (a group without a count is 1);
  ``KIND_CPU`` and ``KIND_AUTO`` run as asked, any other kind runs on CPU and is reported.
- ``version_policy``: ``latest { num_versions }``, ``all {}``, ``specific { versions }``.
- ``default_model_filename`` -> ``artifact``.
- ``name``: must be the folder's name, as Triton requires.

Every other field that is set is listed, by path, in ``TritonConfig.unsupported``: the
caller logs it once and shows it in the model's metadata. Nothing set is dropped unseen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from ferry.errors import ManifestError
from ferry._pb import model_config_pb2 as mc

CONFIG_FILE = "config.pbtxt"

_ONNX_PLATFORMS = {"onnxruntime_onnx"}
_ONNX_BACKENDS = {"onnxruntime"}

#: dotted field paths (list indexes left out) that Ferry honours; a message in this set is
#: walked for its own fields, a scalar or repeated scalar is taken as a whole
SUPPORTED = frozenset({
    "name", "platform", "backend", "max_batch_size", "default_model_filename",
    "input", "input.name", "input.data_type", "input.dims",
    "output", "output.name", "output.data_type", "output.dims", "output.label_filename",
    "dynamic_batching", "dynamic_batching.max_queue_delay_microseconds",
    "dynamic_batching.preferred_batch_size", "dynamic_batching.default_queue_policy",
    "dynamic_batching.default_queue_policy.max_queue_size",
    "instance_group", "instance_group.name", "instance_group.count", "instance_group.kind",
    "version_policy", "version_policy.latest", "version_policy.latest.num_versions",
    "version_policy.all", "version_policy.specific", "version_policy.specific.versions",
})

_CPU_KINDS = {mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_AUTO}


@dataclass
class TritonConfig:
    """What a ``config.pbtxt`` says, in Ferry's terms."""

    settings: dict[str, Any]
    """``model.yaml`` keys and values (validated later with the rest of the manifest)."""
    unsupported: list[str] = field(default_factory=list)
    """Paths of set fields Ferry does not honour, e.g. ``optimization`` or
    ``input[0].reshape``, sorted."""


def parse_config_text(text: str, source: str, model: str | None = None) -> TritonConfig:
    """Parse ``config.pbtxt`` text read from ``source`` for the model folder ``model``."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        where = f"{source}:{exc.GetLine()}:{exc.GetColumn()}" if exc.GetLine() else source
        detail = str(exc).split(" : ", 1)[-1]
        raise ManifestError(f"{where}: not a valid Triton model configuration: "
                            f"{detail}") from None
    return config_settings(config, source, model)


def parse_config_json(text: str, source: str, model: str | None = None) -> TritonConfig:
    """The same from Triton's JSON form of ``ModelConfig`` (e.g. a load's ``config``
    parameter)."""
    config = mc.ModelConfig()
    try:
        json_format.Parse(text, config)
    except json_format.ParseError as exc:
        raise ManifestError(f"{source}: not a valid Triton model configuration: "
                            f"{exc}") from None
    return config_settings(config, source, model)


def config_settings(config: mc.ModelConfig, source: str,
                    model: str | None = None) -> TritonConfig:
    """Map a parsed ``ModelConfig`` onto manifest settings."""
    if model is not None and config.name and config.name != model:
        raise ManifestError(f"{source}: name is {config.name!r} but the model folder is "
                            f"{model!r}; they must match (or leave name out)")
    settings: dict[str, Any] = {}
    runtime = _runtime(config, source)
    if runtime:
        settings["runtime"] = runtime
    batching = config.max_batch_size > 0
    if batching or config.input or config.output:
        settings["max_batch_size"] = config.max_batch_size
    if config.input:
        settings["inputs"] = [_tensor(t, batching, source, "input") for t in config.input]
    if config.output:
        settings["outputs"] = [_tensor(t, batching, source, "output") for t in config.output]
    if config.HasField("dynamic_batching"):
        settings["dynamic_batching"] = _batching(config.dynamic_batching)
    unsupported = list(dict.fromkeys(_unsupported(config)))
    if config.instance_group:
        settings["instances"] = sum(g.count or 1 for g in config.instance_group)
        for i, group in enumerate(config.instance_group):
            if group.kind not in _CPU_KINDS:
                kind = mc.ModelInstanceGroup.Kind.Name(group.kind)
                unsupported.append(f"instance_group[{i}].kind={kind} (runs on CPU)")
    if config.HasField("version_policy"):
        settings["version_policy"] = _version_policy(config.version_policy)
    if config.default_model_filename:
        settings["artifact"] = config.default_model_filename
        if "runtime" not in settings and config.default_model_filename.endswith(".onnx"):
            settings["runtime"] = "onnx"
    labels = {t.name: t.label_filename for t in config.output if t.label_filename}
    if labels:  # the classification extension's labels files, as model.yaml's `labels`
        settings["labels"] = labels
    return TritonConfig(settings, sorted(unsupported))


def _runtime(config: mc.ModelConfig, source: str) -> str | None:
    if not config.platform and not config.backend:
        return None  # guessed from the artifact, as Triton auto-completes it
    if config.platform in _ONNX_PLATFORMS or config.backend in _ONNX_BACKENDS:
        return "onnx"
    given = (f"platform {config.platform!r}" if config.platform
             else f"backend {config.backend!r}")
    raise ManifestError(f"{source}: {given} is not served by Ferry; a config.pbtxt model "
                        f"must be ONNX (platform: \"onnxruntime_onnx\" or backend: "
                        f"\"onnxruntime\")")


def _tensor(t: mc.ModelInput | mc.ModelOutput, batching: bool, source: str,
            kind: str) -> dict[str, Any]:
    type_name = mc.DataType.Name(t.data_type)
    datatype = "BYTES" if type_name == "TYPE_STRING" else type_name.removeprefix("TYPE_")
    if t.data_type == mc.TYPE_INVALID:
        raise ManifestError(f"{source}: {kind} {t.name!r} has no data_type; give one of "
                            f"TYPE_BOOL, TYPE_INT64, TYPE_FP32, TYPE_STRING, ...")
    dims = list(t.dims)
    return {"name": t.name, "datatype": datatype, "shape": [-1] + dims if batching else dims}


def _batching(db: mc.ModelDynamicBatching) -> dict[str, Any]:
    out: dict[str, Any] = {"max_queue_delay_ms": db.max_queue_delay_microseconds / 1000}
    if db.preferred_batch_size:
        out["preferred_batch_sizes"] = list(db.preferred_batch_size)
    if db.default_queue_policy.max_queue_size > 0:
        out["max_queue_size"] = db.default_queue_policy.max_queue_size
    return out


def _version_policy(vp: mc.ModelVersionPolicy) -> Any:
    which = vp.WhichOneof("policy_choice")
    if which == "all":
        return "all"
    if which == "specific":
        return {"specific": list(vp.specific.versions)}
    if which == "latest":
        return {"latest": vp.latest.num_versions or 1}
    return {}


def _unsupported(message: Message, prefix: str = "") -> list[str]:
    """Paths of the set fields of ``message`` that are not in ``SUPPORTED``."""
    found: list[str] = []
    for fd, value in message.ListFields():
        path = f"{prefix}{fd.name}"
        if path not in SUPPORTED:
            found.append(path)
        elif isinstance(value, Message):
            found += _unsupported(value, f"{path}.")
        elif fd.message_type is not None:  # a repeated message: paths show the index
            for i, item in enumerate(value):
                found += [p.replace(f"{path}.", f"{path}[{i}].", 1)
                          for p in _unsupported(item, f"{path}.")]
    return found
