"""KServe V2 datatype names and their NumPy equivalents, in one table; BYTES as text."""

from __future__ import annotations

import numpy as np

from ferry.errors import DatatypeMismatch

#: V2 datatype name -> NumPy dtype. BYTES tensors are object arrays: of ``bytes`` as the
#: protocols decode them, of ``str`` for text inputs (``as_text``) and for the string outputs
#: of ONNX Runtime and scikit-learn. The codecs write ``str`` elements as UTF-8.
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}

NUMPY_TO_V2: dict[np.dtype, str] = {v: k for k, v in V2_TO_NUMPY.items()}

FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
INT_TYPES = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"})
ALLOWED = ", ".join(V2_TO_NUMPY)


def numpy_dtype(datatype: str) -> np.dtype:
    """The NumPy dtype for a V2 datatype name; ``KeyError`` for unknown names."""
    return V2_TO_NUMPY[datatype]


def v2_datatype(dtype: np.dtype) -> str:
    """The V2 datatype name for a NumPy dtype (strings and bytes map to ``BYTES``)."""
    name = NUMPY_TO_V2.get(dtype)  # the common case: a native-order dtype
    if name is not None:
        return name
    dtype = np.dtype(dtype)
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    return NUMPY_TO_V2[dtype.newbyteorder("=")]


def as_text(arr: np.ndarray, field: str) -> np.ndarray:
    """A BYTES tensor as an object array of ``str``, for a model that takes text (an ONNX
    string tensor, a scikit-learn column of categories).

    ``bytes`` elements are decoded as UTF-8 (empty strings and NUL bytes included); ``str``
    elements pass as they are. An element that is not valid UTF-8 raises
    ``DatatypeMismatch`` naming ``field`` and the element: such a model cannot receive it.
    """
    kind = arr.dtype.kind
    if kind == "U":
        return arr.astype(object)
    flat = arr.reshape(-1)
    if kind == "O" and all(type(v) is str for v in flat.tolist()):
        return arr  # decoded already (a served request, checked once)
    try:
        values = [v.decode() if isinstance(v, bytes) else v for v in flat.tolist()]
    except UnicodeDecodeError:
        values = []  # find the element at fault, for the message
        for i, v in enumerate(flat.tolist()):
            try:
                values.append(v.decode() if isinstance(v, bytes) else v)
            except UnicodeDecodeError as exc:
                raise DatatypeMismatch(
                    f"{field}: element {i} is not valid UTF-8 ({exc.reason} at byte "
                    f"{exc.start}); this model takes text, so send UTF-8 strings") from None
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise DatatypeMismatch(f"{field}: element {i} is {type(v).__name__}, not a "
                                   f"string; this model takes text")
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(arr.shape)
