"""ONNX Runtime: one ``InferenceSession`` per version, signature read from the graph.

String tensors: ONNX Runtime takes object arrays of ``str`` and gives them back. A graph's
string inputs are text inputs (``TensorSpec.text``), so requests' BYTES arrive decoded;
string outputs leave as ``str`` and the codecs write them as UTF-8 BYTES.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort

from ferry.errors import ModelLoadError
from ferry.runtimes.base import Runtime, text_inputs, with_text_inputs
from ferry.types import Signature, TensorSpec, Tensors

_ONNX_TO_V2 = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def _spec(arg: Any) -> TensorSpec | None:
    datatype = _ONNX_TO_V2.get(arg.type)
    if datatype is None:  # sequences and maps (e.g. sklearn's ZipMap) are not tensors
        return None
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


class OnnxRuntime(Runtime):
    """Runs ``model.onnx`` on CPU with ``threads`` intra-op threads, sequential execution."""

    name = "onnx"
    artifacts = ("model.onnx",)
    thread_safe = True  # InferenceSession.run may be called from several threads

    def load(self, version_dir: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.manifest.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        path = self.artifact(version_dir)
        try:
            self._session = ort.InferenceSession(str(path), options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
            raise ModelLoadError(f"{path}: onnxruntime could not load it: {exc}") from None
        graph = Signature(
            tuple(s for s in map(_spec, self._session.get_inputs()) if s is not None),
            tuple(s for s in map(_spec, self._session.get_outputs()) if s is not None))
        strings = {a.name for a in self._session.get_inputs() if a.type == "tensor(string)"}
        self._signature = with_text_inputs(
            _merge(graph, self.declared_signature(graph), version_dir), strings)
        self._text = tuple(s.name for s in self._signature.inputs if s.text)
        self._output_names = [o.name for o in self._signature.outputs]
        self._run = self._session.run

    def predict(self, inputs: Tensors) -> Tensors:
        if self._text:  # empty for numeric graphs: no work per request
            inputs = text_inputs(inputs, self._text)
        values = self._run(self._output_names, inputs)
        return dict(zip(self._output_names, values, strict=True))

    def signature(self) -> Signature:
        return self._signature

    def unload(self) -> None:
        self._run = None  # type: ignore[assignment]
        del self._session


def _merge(graph: Signature, declared: Signature | None, where: Path) -> Signature:
    """The manifest's signature once each declared tensor is found in the graph with the same
    datatype and a compatible shape (same rank; -1 on either side matches any size)."""
    if declared is None:
        return graph
    for kind, ours, theirs in (("input", declared.inputs, graph.inputs),
                               ("output", declared.outputs, graph.outputs)):
        by_name = {t.name: t for t in theirs}
        for t in ours:
            found = by_name.get(t.name)
            said = f"{where}: the manifest (model.yaml or config.pbtxt) declares {kind} {t.name!r}"
            if found is None:
                raise ModelLoadError(f"{said} but the graph's {kind}s are {sorted(by_name)}")
            if found.datatype != t.datatype:
                raise ModelLoadError(f"{said} as {t.datatype} but the graph's is "
                                     f"{found.datatype}")
            if len(found.shape) != len(t.shape) or any(
                    a != b and -1 not in (a, b) for a, b in zip(found.shape, t.shape, strict=True)):
                raise ModelLoadError(f"{said} with shape {list(t.shape)} but the graph's is "
                                     f"{list(found.shape)} (-1 = variable)")
    return declared
