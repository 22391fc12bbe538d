"""Triton's classification extension: an output returned as its top k classes.

A request asks for it per output, with the parameter ``classification: k`` (REST JSON, and
what ``tritonclient``'s ``InferRequestedOutput(name, class_count=k)`` sends over HTTP and
gRPC). Instead of the tensor the model produced, that output is then a BYTES tensor whose
elements read ``"<value>:<index>"``, or ``"<value>:<index>:<label>"`` when the model has a
labels file for the output (``labels`` in ``model.yaml``). As in Triton:

- a batching model's output is ranked per row, over all of the row's elements: shape
  ``[rows, min(k, elements per row)]``; a model without a batch dimension ranks the whole
  tensor: shape ``[min(k, elements)]``. A k above the number of classes gives them all;
- classes are ranked by value, highest first, compared in the output's own datatype;
- the value is written as C's ``%f`` for floats (six decimals) and in decimal for integers;
- line i of the labels file (counting from 0) names class i; a class past the last line
  has no label.

Where Triton leaves the order of equal values unspecified, Ferry ranks the lower index
first, and NaN lowest. ``requested`` checks the parameters before the model runs (400
naming the output); ``top_k`` is the pure ranking, applied by the dataplane afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ferry.errors import InvalidInput
from ferry.types import RequestedOutput, Signature, Tensors

PARAMETER = "classification"
_NUMERIC = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                      "INT64", "FP16", "FP32", "FP64"})


def requested(outputs: Sequence[RequestedOutput], signature: Signature) -> dict[str, int]:
    """Output name -> k for each output asked for as classes; ``InvalidInput`` naming the
    output when k is not a positive integer or the output is not numeric."""
    wanted: dict[str, int] = {}
    for out in outputs:
        k = out.parameters.get(PARAMETER)
        if k is None:
            continue
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InvalidInput(f"output {out.name!r}: classification must be a positive "
                               f"integer (the number of classes to return), got {k!r}")
        spec = signature.output(out.name)
        if spec is not None and spec.datatype not in _NUMERIC:
            raise InvalidInput(f"output {out.name!r} is {spec.datatype}; classification "
                               f"ranks numeric outputs only")
        wanted[out.name] = k
    return wanted


def apply(outputs: Tensors, wanted: Mapping[str, int], batched: bool,
          labels: Mapping[str, Sequence[str]]) -> Tensors:
    """``outputs`` with each output in ``wanted`` replaced by its top k classes."""
    return {name: top_k(arr, wanted[name], batched, labels.get(name), name)
            if name in wanted else arr for name, arr in outputs.items()}


def top_k(values: np.ndarray, k: int, batched: bool, labels: Sequence[str] | None = None,
          name: str = "output") -> np.ndarray:
    """The top ``k`` classes of ``values`` as an object array of ``str`` (see the module
    docstring for shape, order and format)."""
    if values.dtype.kind not in "iuf":
        raise InvalidInput(f"output {name!r} holds {values.dtype} values; classification "
                           f"ranks numeric outputs only")
    rows = values.reshape(values.shape[0] if batched and values.ndim else 1, -1)
    n = rows.shape[1]
    # a stable ascending sort of each row reversed, read backwards: highest value first,
    # equal values in index order (negating would overflow unsigned and minimum integers);
    # NaN first in the ascending sort (its primary key), so last when read backwards
    reverse = rows[:, ::-1]
    if values.dtype.kind == "f":
        ascending = np.lexsort((reverse, ~np.isnan(reverse)), axis=-1)
    else:
        ascending = np.argsort(reverse, axis=-1, kind="stable")
    order = (n - 1 - ascending)[:, ::-1][:, :k]
    template = "%f" if values.dtype.kind == "f" else "%d"
    out = np.empty(order.shape, dtype=object)
    for r, (row, picks) in enumerate(zip(rows, order, strict=True)):
        for j, index in enumerate(picks.tolist()):
            text = f"{template % row[index].item()}:{index}"
            if labels is not None and index < len(labels):
                text = f"{text}:{labels[index]}"
            out[r, j] = text
    return out if batched and values.ndim else out.reshape(-1)

