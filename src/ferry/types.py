"""Protocol-neutral values shared by every layer: what a model takes and gives, and one
inference request and response. Protocols convert their wire formats to and from these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Tensors = dict[str, np.ndarray]
"""Named tensors, the currency of runtimes, the scheduler and the dataplane."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: its name, V2 datatype and full shape (``-1`` = any size).

    For a batching model the first dimension is the batch axis and is always ``-1``.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    allow_nan: bool = True
    """Whether NaN values are accepted (float inputs only)."""
    text: bool = False
    """BYTES inputs only: the model takes text (an ONNX string tensor, scikit-learn string
    categories). Requests' elements must be UTF-8 and reach the runtime as ``str``."""

    def metadata(self) -> dict[str, Any]:
        """The V2 tensor metadata: ``{"name", "datatype", "shape"}``."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Signature:
    """A model version's inputs and outputs, in the order the model declares them."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input(self, name: str) -> TensorSpec | None:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def output(self, name: str) -> TensorSpec | None:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        return None


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model name and, optionally, a version (``None`` = the latest live version)."""

    name: str
    version: int | None = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}/{self.version}"


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for, with its protocol parameters (e.g. ``binary_data``)."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """One inference request, decoded from any protocol."""

    model: ModelRef
    inputs: Tensors
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[RequestedOutput] | None = None
    """The outputs asked for, or ``None`` for all of them."""
    deadline: float | None = None
    """``time.monotonic()`` after which the request is no longer worth running."""
    headers: Mapping[str, str] | None = None
    """The request's headers (REST, lower-case names) or gRPC metadata, by reference: read
    by routing policies (a sticky split's key header), never copied."""


@dataclass(slots=True)
class InferResponse:
    """The answer to one request: which version answered and its named outputs."""

    model_name: str
    model_version: str
    outputs: Tensors
    id: str | None = None
    parameters: dict[str, Any] | None = None


@dataclass(slots=True)
class InferenceRecord:
    """What the dataplane tells observers (the evaluation store, monitors) after each
    inference that reached a model version, successful or not."""

    request_id: str | None
    model: str
    version: int
    inputs: Tensors
    outputs: Tensors | None
    """None when the request failed."""
    outcome: str
    """``success`` or the error's snake_case name (``shape_mismatch``, ``model_error``, ...)."""
    error: str | None
    latency_s: float
    timestamp: float
    """``time.time()`` when the request was received by the dataplane."""
    parameters: dict[str, Any] | None = None
    endpoint: str | None = None
