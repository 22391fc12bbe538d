"""JSON values <-> NumPy arrays for a declared V2 datatype, strictly (no silent casts).

Shared by the V2 and TF Serving JSON codecs. Errors name the field they came from.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from ferry.datatypes import ALLOWED, FLOAT_TYPES, INT_TYPES, V2_TO_NUMPY
from ferry.errors import DatatypeMismatch, MalformedRequest, ShapeMismatch

_MAX_DIMS = 32
_MAX_ELEMENTS = 2**40  # far past any accepted body; keeps numpy's size arithmetic in range

_KIND_OK = {"b": frozenset({"BOOL"}), "i": INT_TYPES | FLOAT_TYPES, "u": INT_TYPES | FLOAT_TYPES,
            "f": FLOAT_TYPES}


def dtype_of(datatype: Any, field: str) -> np.dtype:
    """The NumPy dtype for a request's ``datatype`` value."""
    dtype = V2_TO_NUMPY.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise DatatypeMismatch(f"{field}: datatype {datatype!r} is not one of {ALLOWED}")
    return dtype


def from_json(data: Any, datatype: str, field: str) -> np.ndarray:
    """Turn nested or flat JSON ``data`` into an array of ``datatype``; shape is as nested."""
    if datatype == "BYTES":
        return _bytes_from_json(data, field)
    try:
        arr = np.array(data)
    except (ValueError, OverflowError) as exc:
        raise ShapeMismatch(f"{field}: data is not a regular (rectangular) array: "
                            f"{str(exc).splitlines()[0]}") from None
    kind = arr.dtype.kind
    if datatype not in _KIND_OK.get(kind, ()):
        if arr.size == 0:
            return np.zeros(arr.shape, dtype=V2_TO_NUMPY[datatype])
        raise DatatypeMismatch(f"{field}: datatype is {datatype} but data holds "
                               f"{_describe(kind)}")
    target = V2_TO_NUMPY[datatype]
    if arr.dtype == target:
        return arr
    if kind in "iu" and datatype in INT_TYPES:
        info = np.iinfo(target)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise DatatypeMismatch(f"{field}: values outside the range of {datatype}")
    if datatype in FLOAT_TYPES:
        # JSON numbers are finite, so an infinite sum after the cast means a value overflowed
        # (one reduction, in float64 so finite float32 values cannot add up to inf); an
        # errstate block per request would cost more than the rest of this function
        try:
            out = arr.astype(target)
        except RuntimeWarning:  # numpy's overflow warning, where warnings are errors
            out = None
        if out is None or not math.isfinite(np.add.reduce(out, axis=None, dtype=np.float64)):
            raise DatatypeMismatch(f"{field}: values outside the range of {datatype}")
        return out
    return arr.astype(target)


def _describe(kind: str) -> str:
    return {"U": "strings", "S": "strings", "O": "null or mixed values", "f": "floats",
            "b": "booleans", "i": "integers", "u": "integers"}.get(kind, f"values of kind {kind}")


def _bytes_from_json(data: Any, field: str) -> np.ndarray:
    try:
        arr = np.array(data, dtype=object)
    except ValueError as exc:
        raise ShapeMismatch(f"{field}: data is not a regular array: {exc}") from None
    flat = arr.reshape(-1)
    for i, value in enumerate(flat):
        if isinstance(value, str):
            flat[i] = value.encode()
        elif not isinstance(value, bytes):
            raise DatatypeMismatch(f"{field}: datatype is BYTES but data[{i}] is "
                                   f"{type(value).__name__}; send strings")
    return arr


def check_shape(shape: Any, field: str) -> list[int]:
    """A request's ``shape`` value, checked to be a list of non-negative integers."""
    if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise MalformedRequest(f"{field}: shape must be a list of non-negative integers, "
                               f"got {shape!r}")
    if len(shape) > _MAX_DIMS or math.prod(max(d, 1) for d in shape) > _MAX_ELEMENTS:
        raise MalformedRequest(f"{field}: shape {shape} is too large (at most {_MAX_DIMS} "
                               f"dimensions and {_MAX_ELEMENTS} elements)")
    return shape


def shaped(arr: np.ndarray, shape: Any, field: str) -> np.ndarray:
    """Check a request's ``shape`` value and reshape ``arr`` to it (row-major)."""
    check_shape(shape, field)
    size = math.prod(shape)
    if arr.size != size:
        raise ShapeMismatch(f"{field}: data has {arr.size} values but shape {shape} needs "
                            f"{size}")
    return arr if arr.shape == tuple(shape) else arr.reshape(shape)


def from_binary(raw: memoryview, datatype: str, shape: list[int], field: str) -> np.ndarray:
    """Decode a binary tensor (Triton's extension): raw little-endian values, or for BYTES
    a 4-byte little-endian length before each element."""
    size = math.prod(shape)
    if datatype == "BYTES":
        items: list[bytes] = []
        pos, end = 0, len(raw)
        while pos < end:
            if pos + 4 > end:
                raise MalformedRequest(f"{field}: BYTES element {len(items)} has a truncated "
                                       f"length prefix")
            (n,) = struct.unpack_from("<I", raw, pos)
            pos += 4
            if pos + n > end:
                raise MalformedRequest(f"{field}: BYTES element {len(items)} claims {n} bytes "
                                       f"but only {end - pos} remain")
            items.append(bytes(raw[pos:pos + n]))
            pos += n
        if len(items) != size:
            raise ShapeMismatch(f"{field}: binary data holds {len(items)} BYTES elements but "
                                f"shape {shape} needs {size}")
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        return arr.reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    if len(raw) != size * dtype.itemsize:
        raise ShapeMismatch(f"{field}: binary_data_size is {len(raw)} bytes but shape {shape} "
                            f"of {datatype} needs {size * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def to_binary(arr: np.ndarray, datatype: str) -> bytes:
    """Encode an output tensor for Triton's binary extension."""
    if datatype == "BYTES":
        parts = []
        for value in arr.reshape(-1):
            b = value if isinstance(value, bytes) else str(value).encode()
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def to_json_data(arr: np.ndarray, check_finite: bool = False) -> Any:
    """A flat, row-major value orjson can write: the array itself when it can.

    orjson writes NaN and infinities inside arrays as ``null``; with ``check_finite`` they
    become the strings ``"nan"``, ``"inf"``, ``"-inf"`` instead (callers retry with it when
    the fast result holds a ``null``)."""
    kind = arr.dtype.kind
    if kind == "O" or kind in "SU":
        return [v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                for v in arr.reshape(-1)]
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    flat = arr.reshape(-1)
    if not flat.flags.c_contiguous:
        flat = np.ascontiguousarray(flat)
    if check_finite and kind == "f" and not np.isfinite(flat).all():
        return [v if math.isfinite(v) else str(v) for v in flat.tolist()]
    return flat
