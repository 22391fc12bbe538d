"""Check request tensors against a signature; stack and split along the batch axis."""

from __future__ import annotations

import numpy as np

from ferry.datatypes import V2_TO_NUMPY, as_text, numpy_dtype
from ferry.errors import (DatatypeMismatch, InvalidValue, MissingInput,
                          ShapeMismatch, UnknownInput)
from ferry.types import Signature, TensorSpec, Tensors


def check_inputs(signature: Signature, inputs: Tensors, max_batch_size: int) -> int:
    """Raise an ``InvalidInput`` naming the field if ``inputs`` do not fit ``signature``.

    Returns the number of rows (1 for a model without a batch dimension). More rows than
    ``max_batch_size`` are not an error: the batcher runs such a request on its own. Text
    inputs (``spec.text``) are decoded to ``str`` in ``inputs`` here, once per request, so
    that a request holding bytes that are not UTF-8 fails alone, before it can join a batch.
    """
    specs = signature.inputs
    if len(inputs) != len(specs) or any(s.name not in inputs for s in specs):
        expected = [s.name for s in specs]
        for name in inputs:
            if signature.input(name) is None:
                raise UnknownInput(f"unknown input {name!r}; the model's inputs are {expected}")
        missing = [n for n in expected if n not in inputs]
        raise MissingInput(f"missing input(s) {missing}; the model's inputs are {expected}")
    rows = -1
    for spec in specs:
        arr = inputs[spec.name]
        if arr.dtype != V2_TO_NUMPY[spec.datatype]:
            from ferry.datatypes import v2_datatype

            raise DatatypeMismatch(f"input {spec.name!r}: datatype {v2_datatype(arr.dtype)} "
                                   f"but the model expects {spec.datatype}")
        shape = arr.shape
        if len(shape) != len(spec.shape) or any(
                want != -1 and got != want for got, want in zip(shape, spec.shape, strict=True)):
            raise ShapeMismatch(f"input {spec.name!r}: shape {list(shape)} does not match "
                                f"the model's {list(spec.shape)} (-1 = any size)")
        if max_batch_size:
            if rows == -1:
                rows = shape[0]
            elif shape[0] != rows:
                raise ShapeMismatch(f"input {spec.name!r} has {shape[0]} rows but other "
                                    f"inputs have {rows}; every input needs the same batch size")
        if spec.text:
            inputs[spec.name] = as_text(arr, f"input {spec.name!r}")
        if not spec.allow_nan and arr.dtype.kind == "f" and np.isnan(arr).any():
            raise InvalidValue(f"input {spec.name!r} holds NaN, which this model does not "
                               f"accept (allow_nan: false in model.yaml)")
    if not max_batch_size:
        return 1
    if rows == 0:
        raise InvalidValue("empty batch: inputs have 0 rows; send at least one row")
    return rows


def stack(parts: list[Tensors]) -> Tensors:
    """Concatenate several requests' inputs along the batch axis, in order."""
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


class SharedBatch:
    """The stacked inputs and the outputs of one batch of several requests, and each
    request's rows, in order. Compared by identity."""

    __slots__ = ("inputs", "outputs", "counts")

    def __init__(self, inputs: Tensors, outputs: Tensors, counts: list[int]) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.counts = counts


class BatchOutputs(dict):  # type: ignore[type-arg]
    """One request's outputs (views of its batch's output arrays) that also name the batch
    and the request's place in it, so an observer that keeps many requests (the evaluation
    store) can take the batch's arrays whole instead of one slice per request."""

    __slots__ = ("batch", "index")
    batch: SharedBatch
    index: int


def split(outputs: Tensors, counts: list[int], inputs: Tensors | None = None) -> list[Tensors]:
    """Cut a batch's outputs back into one dict per request, rows in order. With the
    batch's stacked ``inputs``, each dict is a ``BatchOutputs`` naming the batch."""
    if len(counts) == 1:
        return [outputs]
    total = sum(counts)
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            raise ValueError(f"output {name!r} has shape {list(arr.shape)} for a batch of "
                             f"{total} rows; a batching model must return one row per input row")
    shared = None if inputs is None else SharedBatch(inputs, outputs, counts)
    parts: list[Tensors] = []
    start = 0
    for index, n in enumerate(counts):
        stop = start + n
        if shared is None:
            parts.append({name: arr[start:stop] for name, arr in outputs.items()})
        else:
            part = BatchOutputs({name: arr[start:stop] for name, arr in outputs.items()})
            part.batch = shared
            part.index = index
            parts.append(part)
        start = stop
    return parts


def shape_key(inputs: Tensors) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Each input's name and non-batch dimensions, in name order: requests batch together
    only if equal (clients may list the same inputs in any order)."""
    return tuple(sorted((name, arr.shape[1:]) for name, arr in inputs.items()))


def numpy_input(spec: TensorSpec) -> np.ndarray:
    """A zero-filled array fitting ``spec`` with variable dims set to 1 (for warm-up)."""
    shape = tuple(1 if d < 0 else d for d in spec.shape)
    if spec.datatype == "BYTES":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=numpy_dtype(spec.datatype))
