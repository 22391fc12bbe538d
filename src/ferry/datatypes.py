"""KServe V2 datatype names and their NumPy equivalents, in one table."""

from __future__ import annotations

import numpy as np

#: V2 datatype name -> NumPy dtype. BYTES tensors are object arrays of ``bytes``.
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
