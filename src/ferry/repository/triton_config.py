"""Triton's ``ModelConfig`` -> the settings of Ferry's manifest (pure: text in, mapping out).

One mapping serves both places Ferry reads Triton's model configuration:

- a model folder's ``config.pbtxt`` (``parse_config_text``), the model's whole configuration;
- a load's configuration override (``parse_config_json`` with ``Reading.override``, read by
  ``protocols/model_config.py`` for ``POST /v2/repository/models/{m}/load``), laid over the
  version serving now.

The text is parsed by the protobuf library (text format or JSON) into Triton's
``ModelConfig`` message (``_pb/model_config_pb2``), so the grammar, the field names and the
enum values are Triton's own; a syntax error or an unknown field is a ``ManifestError``
naming the source (for a file: its line and column).

What is honoured (``SUPPORTED``), and how it maps (``docs/repository.md``, "Triton
repositories"; ``docs/protocols.md``, "Model configuration"):

- ``platform``/``backend`` -> the runtime (``platform_backend``: ``onnxruntime_onnx`` /
  ``onnxruntime`` is ``onnx``, any other runtime is its own backend name). Each one given
  must name the runtime the reading expects (``Reading.runtime``).
- ``max_batch_size`` -> ``max_batch_size``. Triton's rule: with ``max_batch_size > 0`` the
  ``dims`` leave out the batch dimension, so Ferry's shape is ``[-1] + dims``; with 0 the
  model does not batch and ``dims`` is the full shape.
- ``input``/``output``: ``name``, ``data_type`` (``TYPE_FP32`` -> ``FP32``, ``TYPE_STRING``
  -> ``BYTES``), ``dims`` (-1 = variable). ``label_filename`` on an output -> ``labels:
  {output: file}`` (the classification extension's class names).
- ``dynamic_batching``: ``max_queue_delay_microseconds``, ``preferred_batch_size``,
  ``default_queue_policy.max_queue_size`` (0, Triton's "unbounded", keeps Ferry's limit).
- ``instance_group[].count``, summed over the groups (a group without a count is 1);
  ``KIND_CPU`` and ``KIND_AUTO`` run as asked, any other kind is unsupported.
- ``version_policy``: ``latest { num_versions }``, ``all {}``, ``specific { versions }``.
- ``default_model_filename`` -> ``artifact``.
- ``name``: must be the model's (its folder's) name, as Triton requires.

Every other field that is set is unsupported, listed by path (``input[0].reshape``). The two
readings differ on purpose, and only in ``Reading``: a ``config.pbtxt`` is lenient (the
unsupported fields are returned in ``TritonConfig.unsupported``; the caller logs them once
and shows them in the model's metadata, and the model serves) and must be an ONNX model's;
an override is strict (an unsupported field is an error: an override is never half applied)
and must name the runtime of the model it is laid over, whatever that runtime is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from ferry.errors import ManifestError
from ferry._pb import model_config_pb2 as mc

CONFIG_FILE = "config.pbtxt"

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

CPU_KINDS = ("KIND_CPU", "KIND_AUTO")
"""Instance group kinds Ferry runs as asked (it runs every model on CPU)."""

_INDEX = re.compile(r"\[\d+\]")


# -- the rules both directions share (also used by protocols/model_config.py) --------------
def platform_backend(runtime: str) -> tuple[str, str]:
    """Triton's ``platform`` and ``backend`` for a Ferry runtime."""
    if runtime == "onnx":
        return "onnxruntime_onnx", "onnxruntime"
    return "", runtime


def triton_datatype(datatype: str) -> str:
    """V2 datatype -> Triton's ``DataType`` name (``FP32`` -> ``TYPE_FP32``)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def v2_datatype(name: str) -> str:
    """Triton's ``DataType`` name -> V2 datatype (``TYPE_STRING`` -> ``BYTES``)."""
    return "BYTES" if name == "TYPE_STRING" else name.removeprefix("TYPE_")


# -- how a configuration is read ----------------------------------------------------------
@dataclass(frozen=True)
class Reading:
    """How a ``ModelConfig`` is read. A ``config.pbtxt`` and a load's override differ only
    in these, on purpose (``REPOSITORY`` and ``Reading.override``)."""

    runtime: str | None
    """The runtime ``platform`` and ``backend`` must name; None: not checked."""
    runtime_is: str
    """What that runtime is, in the error when they name another."""
    complete: bool
    """The configuration is the model's whole one (a file): the runtime it names becomes
    the ``runtime`` setting, and ``max_batch_size`` left out is Triton's 0 once tensors are
    declared. Otherwise it is laid over a running version: what it leaves out stays."""
    strict: bool
    """An unsupported field is an error (else it is returned in ``unsupported``)."""
    max_batch_size: int = 0
    """The ``max_batch_size`` in force when the configuration leaves it out (the dims of
    its tensors are read with it)."""

    @classmethod
    def override(cls, runtime: str | None, max_batch_size: int) -> Reading:
        """A load's override, laid over the version running with ``runtime`` and
        ``max_batch_size`` (None, 0: no version runs). It may target any runtime."""
        return cls(runtime, f"the model's runtime {runtime!r}", complete=False, strict=True,
                   max_batch_size=max_batch_size)


REPOSITORY = Reading("onnx", "ONNX, the only runtime Ferry serves from a config.pbtxt",
                     complete=True, strict=False)
"""A ``config.pbtxt``: the whole configuration of an ONNX model; unsupported fields are
reported, so a repository written for Triton serves."""


@dataclass
class TritonConfig:
    """What a Triton configuration says, in Ferry's terms."""

    settings: dict[str, Any]
    """``model.yaml`` keys and values (validated later with the rest of the manifest)."""
    unsupported: list[str] = field(default_factory=list)
    """Paths of set fields Ferry does not honour, e.g. ``optimization`` or
    ``input[0].reshape``, sorted."""


def parse_config_text(text: str, source: str, model: str | None = None,
                      reading: Reading = REPOSITORY) -> TritonConfig:
    """Parse ``config.pbtxt`` text read from ``source`` for the model folder ``model``."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        where = f"{source}:{exc.GetLine()}:{exc.GetColumn()}" if exc.GetLine() else source
        detail = str(exc).split(" : ", 1)[-1]
        raise ManifestError(f"{where}: not a valid Triton model configuration: "
                            f"{detail}") from None
    return config_settings(config, source, model, reading)


def parse_config_json(text: str, source: str, model: str | None = None,
                      reading: Reading = REPOSITORY) -> TritonConfig:
    """The same from Triton's JSON form of ``ModelConfig`` (e.g. a load's ``config``
    parameter). A key present in the JSON counts as set, even at its default value
    (``"max_batch_size": 0``), which the protobuf message alone cannot tell."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{source}: expected a JSON object (Triton's model "
                            f"configuration), got {type(raw).__name__}")
    config = mc.ModelConfig()
    try:
        json_format.ParseDict(raw, config)
    except json_format.ParseError as exc:
        raise ManifestError(f"{source}: not a valid Triton model configuration: "
                            f"{exc}") from None
    given = {fd.name for fd in config.DESCRIPTOR.fields if fd.name in raw or fd.json_name in raw}
    return config_settings(config, source, model, reading, given)


def config_settings(config: mc.ModelConfig, source: str, model: str | None = None,
                    reading: Reading = REPOSITORY,
                    given: set[str] | None = None) -> TritonConfig:
    """Map a parsed ``ModelConfig`` onto manifest settings. ``given``: the top-level fields
    the source sets (default: those set to other than their default)."""
    unsupported = _unsupported(config)
    for i, group in enumerate(config.instance_group):
        kind = mc.ModelInstanceGroup.Kind.Name(group.kind)
        if kind not in CPU_KINDS:
            unsupported.append(f"instance_group[{i}].kind={kind}"
                               + ("" if reading.strict else " (runs on CPU)"))
    unsupported.sort()
    if unsupported and reading.strict:
        raise ManifestError(
            f"{source}: Ferry does not support {', '.join(unsupported)}; it honours "
            f"{', '.join(sorted(p for p in SUPPORTED if '.' not in p))}, with "
            f"instance_group[].kind {' or '.join(CPU_KINDS)}")
    if model is not None and config.name and config.name != model:
        raise ManifestError(f"{source}: name is {config.name!r} but the model folder is "
                            f"{model!r}; they must match (or leave name out)")
    settings: dict[str, Any] = {}
    if _names_runtime(config, source, reading) and reading.complete:
        settings["runtime"] = reading.runtime
    if given is None:
        given = {fd.name for fd, _ in config.ListFields()}
    tensors = bool(config.input or config.output)
    max_batch_size = reading.max_batch_size
    if "max_batch_size" in given or (reading.complete and tensors):
        settings["max_batch_size"] = max_batch_size = config.max_batch_size
    if config.input:
        settings["inputs"] = [_tensor(t, max_batch_size > 0, source, "input")
                              for t in config.input]
    if config.output:
        settings["outputs"] = [_tensor(t, max_batch_size > 0, source, "output")
                               for t in config.output]
    if config.HasField("dynamic_batching"):
        settings["dynamic_batching"] = _batching(config.dynamic_batching)
    if config.instance_group:
        settings["instances"] = sum(g.count or 1 for g in config.instance_group)
    if config.HasField("version_policy"):
        settings["version_policy"] = _version_policy(config.version_policy)
    if config.default_model_filename:
        settings["artifact"] = config.default_model_filename
        if (reading.complete and "runtime" not in settings
                and config.default_model_filename.endswith(".onnx")):
            settings["runtime"] = "onnx"
    labels = {t.name: t.label_filename for t in config.output if t.label_filename}
    if labels:  # the classification extension's labels files, as model.yaml's `labels`
        settings["labels"] = labels
    return TritonConfig(settings, unsupported)


def _names_runtime(config: mc.ModelConfig, source: str, reading: Reading) -> bool:
    """Whether ``platform`` or ``backend`` is given; each one given must be the reading's
    runtime's (unless that is not known)."""
    if reading.runtime is not None:
        expected = platform_backend(reading.runtime)
        for key, given, want in zip(("platform", "backend"), (config.platform, config.backend),
                                    expected, strict=True):
            if given and given != want:
                names = " or ".join(f"{k}: {v!r}" for k, v in zip(("platform", "backend"),
                                                                  expected, strict=True) if v)
                raise ManifestError(f"{source}: {key} {given!r} is not {reading.runtime_is}; "
                                    f"give {names}, or leave {key} out")
    return bool(config.platform or config.backend)


def _tensor(t: mc.ModelInput | mc.ModelOutput, batching: bool, source: str,
            kind: str) -> dict[str, Any]:
    if t.data_type == mc.TYPE_INVALID:
        raise ManifestError(f"{source}: {kind} {t.name!r} has no data_type; give one of "
                            f"TYPE_BOOL, TYPE_INT64, TYPE_FP32, TYPE_STRING, ...")
    dims = list(t.dims)
    return {"name": t.name, "datatype": v2_datatype(mc.DataType.Name(t.data_type)),
            "shape": [-1, *dims] if batching else dims}


def _batching(db: mc.ModelDynamicBatching) -> dict[str, Any]:
    out: dict[str, Any] = {"max_queue_delay_ms": db.max_queue_delay_microseconds / 1000,
                           "preferred_batch_sizes": list(db.preferred_batch_size)}
    if db.default_queue_policy.max_queue_size > 0:  # 0 is Triton's "unbounded"
        out["max_queue_size"] = db.default_queue_policy.max_queue_size
    return out


def _version_policy(vp: mc.ModelVersionPolicy) -> Any:
    which = vp.WhichOneof("policy_choice")
    if which == "all":
        return "all"
    if which == "specific":
        return {"specific": list(vp.specific.versions)}
    return {"latest": vp.latest.num_versions or 1}  # also Triton's default, for a bare {}


def _unsupported(message: Message, prefix: str = "") -> list[str]:
    """Paths of the set fields of ``message`` that are not in ``SUPPORTED`` (list indexes
    shown: ``input[0].reshape``)."""
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
