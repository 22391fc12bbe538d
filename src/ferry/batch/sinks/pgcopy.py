"""Arrow tables as PostgreSQL binary ``COPY`` data, built from column buffers.

PostgreSQL's binary COPY format (a header, then per row an int16 field count and per field
an int32 byte length, -1 for NULL, followed by the value in network byte order) needs no
text formatting on the client and no parsing on the server: 2M rows of the ``tabular``
output load ~4x faster than CSV COPY written by pyarrow (whose timestamp-with-time-zone
formatting alone costs ~2.7 us a value), and faster than ADBC's PostgreSQL driver.

Every field becomes one Arrow binary piece per row: runs of consecutive fixed-width columns
without NULLs share one NumPy structured record (length words and big-endian values), a
string is its length word joined to its bytes, and a NULL is the length word -1. Arrow's
``binary_join_element_wise`` then concatenates the pieces row by row in C++, so the data
buffer of the result is exactly the COPY rows.

Column types follow ``sql_type``, the DDL the database sink creates its tables with
(booleans, integers up to 32 bits as ``integer``, wider ones as ``bigint`` except
``uint64`` as ``numeric(20)``, floats as ``real`` / ``double precision``, timestamps as
``timestamp[tz]``, everything else as ``text`` through Arrow's cast to string).

``uint64`` is ``numeric(20)`` because ``bigint`` stops at 2^63-1 and PostgreSQL has no
unsigned type: every value up to 2^64-1 (64-bit hashes and ids) is stored exactly, and reads
back as a number (``Decimal`` in Python). Its binary form is fixed-width here: five base-10000
digits with weight 4 (PostgreSQL drops the leading and trailing zero digits on receipt).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
"""Signature, flags (no OIDs), header extension length."""
TRAILER = b"\xff\xff"
"""The field count -1 ends the data."""

NUMERIC_U64 = "NUMERIC(20)"
"""The column type of ``uint64``: all 20 decimal digits of 2^64-1, no fraction."""
_PG_EPOCH_US = 946_684_800_000_000
"""2000-01-01 in microseconds since 1970-01-01: PostgreSQL's timestamp zero."""
_NULL = b"\xff\xff\xff\xff"
_TO_US = {"s": 1_000_000, "ms": 1_000, "us": 1}


def sql_type(t: pa.DataType) -> str:
    """The PostgreSQL column type an Arrow type is stored as (and encoded for)."""
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if t == pa.uint64():
        return NUMERIC_U64
    if pa.types.is_integer(t):
        return "INTEGER" if t.bit_width <= 32 and t != pa.uint32() else "BIGINT"
    if pa.types.is_floating(t):
        return "REAL" if t.bit_width <= 32 else "DOUBLE PRECISION"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    return "TEXT"


_WIRE = {"BOOLEAN": ("?", pa.bool_()), "INTEGER": (">i4", pa.int32()),
         "BIGINT": (">i8", pa.int64()), "REAL": (">f4", pa.float32()),
         "DOUBLE PRECISION": (">f8", pa.float64())}


SLICE_ROWS = 8192
"""Rows encoded into one buffer. A chunk (65,536 rows) encoded whole kept the server idle
after each of the database sink's commits until the whole chunk was encoded (~15 ms); in
slices the server starts on the first rows at once (sink alone: 0.90 -> 0.95-0.96 of a bare
COPY; the bare COPY itself did not change)."""


def encode(table: pa.Table | pa.RecordBatch) -> Iterator[memoryview]:
    """The rows of ``table`` as binary COPY data, one buffer per ``SLICE_ROWS`` rows
    (without ``HEADER`` and ``TRAILER``)."""
    batches = table.to_batches() if isinstance(table, pa.Table) else [table]
    for batch in batches:
        for start in range(0, batch.num_rows, SLICE_ROWS):
            yield _encode_batch(batch.slice(start, SLICE_ROWS))


def _encode_batch(batch: pa.RecordBatch) -> memoryview:
    n = batch.num_rows
    pieces: list[pa.Array] = []
    run: list[tuple[str, np.ndarray]] = [("count", np.full(n, batch.num_columns, ">i2"))]
    for col in batch.columns:
        kind = sql_type(col.type)
        values = _fixed_values(col, kind, n)
        if values is not None and col.null_count == 0:
            run.append(("len", np.full(n, values.dtype.itemsize, ">i4")))
            run.append(("value", values))
            continue
        if run:
            pieces.append(_records(run, n))
            run = []
        if values is not None:  # a fixed-width column with NULLs: 4 or 4 + width bytes a row
            full = _records([("len", np.full(n, values.dtype.itemsize, ">i4")),
                             ("value", values)], n)
            valid = col.is_valid()
            pieces.append(pc.if_else(valid, full, pa.scalar(_NULL, pa.binary())))
        else:
            pieces.extend(_text_pieces(col, n))
    if run:
        pieces.append(_records(run, n))
    rows = pc.binary_join_element_wise(*pieces, b"") if len(pieces) > 1 else pieces[0]
    offsets = np.frombuffer(rows.buffers()[1], np.int32, n + 1, rows.offset * 4)
    data = rows.buffers()[2]
    return memoryview(data)[int(offsets[0]):int(offsets[-1])]  # type: ignore[arg-type]


def _fixed_values(col: pa.Array, kind: str, n: int) -> np.ndarray | None:
    """The values of a fixed-width column in wire byte order (NULLs as zeros), or None for
    a column sent as text."""
    if kind in ("TIMESTAMP", "TIMESTAMPTZ"):
        unit = col.type.unit
        raw = col.view(pa.int64()).fill_null(0).to_numpy()
        us = raw * _TO_US[unit] if unit != "ns" else (raw + 500) // 1000
        return (us - _PG_EPOCH_US).astype(">i8")
    if kind == NUMERIC_U64:
        return _numeric_u64(col.fill_null(0).to_numpy(), n)
    wire = _WIRE.get(kind)
    if wire is None:
        return None
    dtype, arrow = wire
    if col.type != arrow:
        col = col.cast(arrow)  # safe: an out-of-range value fails loudly, as in text COPY
    if col.null_count:
        col = col.fill_null(False if kind == "BOOLEAN" else 0)
    return col.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _numeric_u64(values: np.ndarray, n: int) -> np.ndarray:
    """``uint64`` values as PostgreSQL's binary ``numeric``: ndigits 5, weight 4, sign +,
    dscale 0, then five base-10000 digits, most significant first (18 bytes each)."""
    words = np.empty((n, 9), ">i2")
    words[:, :4] = (5, 4, 0, 0)
    rest = values.astype(np.uint64, copy=True)
    for i in range(8, 3, -1):
        words[:, i] = rest % 10000
        rest //= 10000
    return words.view(np.dtype((np.void, 18))).reshape(n)


def _records(fields: list[tuple[str, np.ndarray]], n: int) -> pa.Array:
    """Fixed-width fields side by side, one binary value per row (zero-copy view)."""
    dtype = np.dtype([(f"f{i}", a.dtype) for i, (_, a) in enumerate(fields)])
    rec = np.empty(n, dtype)
    for i, (_, a) in enumerate(fields):
        rec[f"f{i}"] = a
    offsets = np.arange(0, (n + 1) * dtype.itemsize, dtype.itemsize, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets),
                                                   pa.py_buffer(rec)])


def _text_pieces(col: pa.Array, n: int) -> list[pa.Array]:
    """A text column: its length words (-1 for NULL) and its UTF-8 bytes."""
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = _as_string(col)
    if pa.types.is_large_string(col.type):
        col = col.cast(pa.string())
    lengths = pc.binary_length(col).fill_null(-1).to_numpy().astype(">i4")
    if col.null_count:
        col = col.fill_null("")
    words = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(
        np.arange(0, (n + 1) * 4, 4, dtype=np.int32)), pa.py_buffer(lengths)])
    return [words, col.view(pa.binary())]


def _as_string(col: pa.Array) -> pa.Array:
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())
