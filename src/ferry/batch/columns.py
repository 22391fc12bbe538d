"""Map table columns to model inputs and model outputs to table columns.

Naming is the one monitoring uses: a width-1 input (``[-1]`` or ``[-1, 1]``) is one column of
the input's name; a ``[-1, k]`` input takes the columns its manifest lists in ``features``,
else ``name[0]`` .. ``name[k-1]``. ``--map`` renames:

- ``--map amount=txn_amount``: the feature or width-1 input ``amount`` reads column ``txn_amount``;
- ``--map 'input=f{i}'``: input ``input``'s column ``i`` is ``f0``, ``f1``, ...;
- ``--map input=a,b,c``: input ``input`` reads columns ``a``, ``b``, ``c`` in order.

Outputs: ``[-1]`` / ``[-1, 1]`` -> one column of the output's name; ``[-1, k]`` -> the
output's ``features`` names if declared, else ``name_0`` .. ``name_{k-1}`` (SQL-safe).

Conversion is per row: a null, a value that does not convert to the input's datatype, or a
NaN where ``allow_nan`` is false rejects that row with a reason and keeps the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ferry.batch.job import BatchError
from ferry.datatypes import FLOAT_TYPES, V2_TO_NUMPY
from ferry.manifest import ModelManifest
from ferry.types import Signature, TensorSpec, Tensors

ARROW_TYPES: dict[str, pa.DataType] = {
    "BOOL": pa.bool_(), "UINT8": pa.uint8(), "UINT16": pa.uint16(), "UINT32": pa.uint32(),
    "UINT64": pa.uint64(), "INT8": pa.int8(), "INT16": pa.int16(), "INT32": pa.int32(),
    "INT64": pa.int64(), "FP16": pa.float16(), "FP32": pa.float32(), "FP64": pa.float64(),
    "BYTES": pa.string(),
}


@dataclass(frozen=True)
class InputColumns:
    """One model input and the columns that fill it, in order."""

    spec: TensorSpec
    columns: tuple[str, ...]
    matrix: bool
    """True for a ``[-1, k]`` input (a 2-D array), False for ``[-1]``."""


def _features(manifest: ModelManifest, name: str, kind: str) -> list[str] | None:
    for t in (manifest.inputs if kind == "input" else manifest.outputs) or []:
        if t.name == name:
            return t.features
    return None


def plan_inputs(signature: Signature, manifest: ModelManifest, mapping: dict[str, str],
                found: list[str]) -> list[InputColumns]:
    """The columns for each input; ``BatchError`` naming missing columns and listing found."""
    plans: list[InputColumns] = []
    used: set[str] = set()
    for spec in signature.inputs:
        shape = spec.shape
        if not shape or shape[0] != -1 or len(shape) > 2 or (len(shape) == 2 and shape[1] < 1):
            raise BatchError(f"input {spec.name!r} has shape {list(shape)}; batch scoring needs "
                             f"[-1] or [-1, k] inputs (a batch axis and at most one feature axis)")
        if len(shape) == 1 or shape[1] == 1:
            column = mapping.get(spec.name, spec.name)
            plans.append(InputColumns(spec, (column,), matrix=len(shape) == 2))
            used.add(spec.name)
            continue
        k = shape[1]
        names = _features(manifest, spec.name, "input") or [f"{spec.name}[{j}]" for j in range(k)]
        rule = mapping.get(spec.name)
        if rule is not None and "{i}" in rule:
            columns = [rule.replace("{i}", str(j)) for j in range(k)]
        elif rule is not None:
            columns = [c.strip() for c in rule.split(",")]
            if len(columns) != k:
                raise BatchError(f"--map {spec.name}={rule}: lists {len(columns)} columns but "
                                 f"input {spec.name!r} has {k}")
        else:
            columns = [mapping.get(n, n) for n in names]
            used.update(n for n in names if n in mapping)
        used.add(spec.name)
        plans.append(InputColumns(spec, tuple(columns), matrix=True))
    unknown = sorted(set(mapping) - used - {n for p in plans for n in _names(p, manifest)})
    if unknown:
        raise BatchError(f"--map names {unknown}, which are neither inputs nor features of the "
                         f"model; inputs: {[s.name for s in signature.inputs]}")
    needed = [c for p in plans for c in p.columns]
    missing = [c for c in dict.fromkeys(needed) if c not in found]
    if missing:
        shown = ", ".join(found[:50]) + (f", ... ({len(found)} in all)" if len(found) > 50 else "")
        raise BatchError(f"the input has no column(s) {missing} needed by the model; columns "
                         f"found: {shown}. Rename with --map FEATURE=COLUMN")
    return plans


def _names(plan: InputColumns, manifest: ModelManifest) -> list[str]:
    k = plan.spec.shape[1] if len(plan.spec.shape) == 2 else 1
    return _features(manifest, plan.spec.name, "input") or [
        f"{plan.spec.name}[{j}]" for j in range(k)]


def input_columns(plans: list[InputColumns]) -> list[str]:
    return list(dict.fromkeys(c for p in plans for c in p.columns))


class Rejects:
    """Rows rejected so far in one chunk, each with its first reason."""

    def __init__(self, n: int) -> None:
        self.ok = np.ones(n, dtype=bool)
        self.reasons: dict[int, str] = {}

    def add(self, rows: np.ndarray | list[int], reason: str) -> None:
        for i in np.asarray(rows, dtype=np.int64).tolist():
            if self.ok[i]:
                self.ok[i] = False
                self.reasons[i] = reason

    def add_mask(self, mask: np.ndarray, reason: str) -> None:
        if mask.any():
            self.add(np.flatnonzero(mask), reason)


@dataclass(frozen=True)
class InputValues:
    """One model input's columns for every row of a chunk, each converted to the input's
    datatype (a rejected row holds a zero); ``gather`` packs rows of them into a tensor."""

    plan: InputColumns
    columns: list[np.ndarray]


def convert(plans: list[InputColumns], batch: pa.RecordBatch,
            rejects: Rejects) -> list[InputValues]:
    """Every input's columns for all rows of ``batch``, converted (zero-copy when a column
    already has the input's type and no nulls); rows that do not convert, or hold a NaN
    where the input forbids it, are marked in ``rejects``."""
    converted: list[InputValues] = []
    for plan in plans:
        spec = plan.spec
        if spec.datatype == "BYTES":
            values = [_bytes_column(batch.column(c), c, rejects) for c in plan.columns]
        else:
            values = [_numeric(batch.column(c), c, spec, rejects) for c in plan.columns]
            if not spec.allow_nan and spec.datatype in FLOAT_TYPES:
                nan = np.isnan(values[0])
                for v in values[1:]:
                    nan |= np.isnan(v)
                rejects.add_mask(nan, f"input {spec.name!r} holds NaN, which the model "
                                      f"forbids (allow_nan: false)")
        converted.append(InputValues(plan, values))
    return converted


def gather(values: list[InputValues], rows: slice | np.ndarray,
           buffers: dict[str, np.ndarray] | None = None) -> Tensors:
    """The model's inputs for ``rows`` of a chunk (a slice, or row numbers). A ``[-1, k]``
    input is packed row-major into ``buffers[name]`` when given (kept between calls: a
    model batch's worth stays in cache until the model reads it, and reusing the memory
    saves the page faults of a fresh array), so the result is valid until the next call
    with the same ``buffers``."""
    tensors: Tensors = {}
    for iv in values:
        spec = iv.plan.spec
        parts = [c[rows] for c in iv.columns]  # views for a slice
        if not iv.plan.matrix:
            tensors[spec.name] = np.ascontiguousarray(parts[0])
        elif spec.datatype == "BYTES":
            tensors[spec.name] = np.stack(parts, axis=1)
        else:
            n = len(parts[0])
            arr = _buffer(buffers, spec.name, n, len(parts), V2_TO_NUMPY[spec.datatype])
            # Column -> row-major in row blocks that stay in cache: a strided write over
            # a whole 65k-row chunk was measured 4x slower than over 4k rows.
            step = max(256, (1 << 20) // max(1, arr.itemsize * len(parts)))
            for start in range(0, n, step):
                block = arr[start:start + step]
                for j, v in enumerate(parts):
                    block[:, j] = v[start:start + step]
            tensors[spec.name] = arr
    return tensors


def _buffer(buffers: dict[str, np.ndarray] | None, name: str, n: int, k: int,
            dtype: np.dtype) -> np.ndarray:
    if buffers is None:
        return np.empty((n, k), dtype=dtype)
    have = buffers.get(name)
    if have is None or have.shape[0] < n or have.shape[1] != k or have.dtype != dtype:
        have = buffers[name] = np.empty((n, k), dtype=dtype)
    return have[:n]


def _numeric(col: pa.Array, name: str, spec: TensorSpec, rejects: Rejects) -> np.ndarray:
    target = ARROW_TYPES[spec.datatype]
    dtype = V2_TO_NUMPY[spec.datatype]
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if col.type == target and col.null_count == 0:
        return _as_numpy(col, dtype)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    try:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = pc.utf8_trim_whitespace(col)
        cast = pc.cast(col, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return _numeric_per_row(col, name, spec, rejects)
    if cast.null_count:
        rejects.add_mask(_as_numpy(cast.is_null(), np.dtype(np.bool_)),
                         f"column {name!r} is null; input {spec.name!r} needs a value")
        cast = cast.fill_null(pa.scalar(0, target) if spec.datatype != "BOOL" else False)
    return _as_numpy(cast, dtype)


def _as_numpy(col: pa.Array, dtype: np.dtype) -> np.ndarray:
    """A null-free fixed-width (or boolean) array as numpy: a read-only view of its values
    buffer (booleans are unpacked). Not ``Array.to_numpy``: its first call imports pandas,
    ~0.2 s of CPU in every worker process."""
    values = col.buffers()[1]
    if dtype == np.bool_:
        bits = np.frombuffer(values, dtype=np.uint8)
        return np.unpackbits(bits, count=col.offset + len(col),
                             bitorder="little")[col.offset:].view(np.bool_)
    return np.frombuffer(values, dtype=dtype, count=len(col), offset=col.offset * dtype.itemsize)


def _numeric_per_row(col: pa.Array, name: str, spec: TensorSpec,
                     rejects: Rejects) -> np.ndarray:
    dtype = V2_TO_NUMPY[spec.datatype]
    out = np.zeros(len(col), dtype=dtype)
    for i, value in enumerate(col.to_pylist()):
        if value is None:
            rejects.add([i], f"column {name!r} is null; input {spec.name!r} needs a value")
            continue
        try:
            out[i] = _convert(value, dtype)
        except (ValueError, TypeError, OverflowError):
            rejects.add([i], f"column {name!r}: {value!r} is not a valid {spec.datatype} "
                             f"for input {spec.name!r}")
    return out


def _convert(value: object, dtype: np.dtype) -> object:
    if isinstance(value, str):
        value = value.strip()
    if dtype.kind == "f":
        return float(value)  # type: ignore[arg-type]
    if dtype.kind == "b":
        if isinstance(value, str):
            lowered = value.lower()
            if lowered in ("true", "1", "t", "yes"):
                return True
            if lowered in ("false", "0", "f", "no"):
                return False
            raise ValueError(value)
        return bool(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    number = int(value)  # type: ignore[call-overload]
    info = np.iinfo(dtype)
    if not info.min <= number <= info.max:
        raise OverflowError(number)
    return number


def _bytes_column(col: pa.Array, name: str, rejects: Rejects) -> np.ndarray:
    values = col.to_pylist()
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if v is None:
            rejects.add([i], f"column {name!r} is null")
            out[i] = b""
        else:
            out[i] = v if isinstance(v, bytes) else str(v).encode()
    return out


@dataclass(frozen=True)
class OutputColumns:
    """One model output and the table columns it becomes."""

    name: str
    datatype: str
    columns: tuple[str, ...]


def plan_outputs(signature: Signature, manifest: ModelManifest) -> list[OutputColumns]:
    plans = []
    for spec in signature.outputs:
        shape = spec.shape
        if len(shape) <= 1 or (len(shape) == 2 and shape[1] == 1):
            columns: tuple[str, ...] = (spec.name,)
        elif len(shape) == 2 and shape[1] > 0:
            names = _features(manifest, spec.name, "output")
            columns = tuple(names or [f"{spec.name}_{j}" for j in range(shape[1])])
        else:
            raise BatchError(f"output {spec.name!r} has shape {list(shape)}; batch scoring "
                             f"writes [-1] or [-1, k] outputs as columns")
        plans.append(OutputColumns(spec.name, spec.datatype, columns))
    return plans


def output_fields(plans: list[OutputColumns]) -> list[pa.Field]:
    return [pa.field(c, ARROW_TYPES[p.datatype]) for p in plans for c in p.columns]


def output_arrays(plans: list[OutputColumns], outputs: Tensors, n: int) -> list[pa.Array]:
    """Model outputs -> one Arrow array per output column."""
    arrays = []
    for plan in plans:
        value = np.asarray(outputs[plan.name])
        if value.shape[:1] != (n,):
            raise ValueError(f"output {plan.name!r} has shape {list(value.shape)} for {n} rows; "
                             f"a batching model returns one row per input row")
        value = value.reshape(n, -1)
        if value.shape[1] != len(plan.columns):
            raise ValueError(f"output {plan.name!r} has {value.shape[1]} columns per row, the "
                             f"signature says {len(plan.columns)}")
        for j in range(len(plan.columns)):
            column = value[:, j]
            if plan.datatype == "BYTES":
                arrays.append(pa.array([v.decode() if isinstance(v, bytes) else str(v)
                                        for v in column], pa.string()))
            else:
                arrays.append(_np_to_arrow(column.astype(V2_TO_NUMPY[plan.datatype],
                                                         copy=False)))
    return arrays


def _np_to_arrow(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:
        return pa.array(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values),
                                 [None, pa.py_buffer(values)])
