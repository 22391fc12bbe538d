"""One compact blob per record for its named tensors, and fast decoding of many at once.

Layout: ``u32 header length | header | data``. The header is JSON
``[[name, dtype, shape], ...]``; the data is each tensor's C-order bytes in header order,
except object (BYTES) tensors, stored as a JSON list of strings (dtype ``"json"``).

Why this shape: a record is one row in the database however wide the model (no row per
value), encoding is a ``tobytes`` per tensor, and records that share a header (same model,
same shapes: the usual case) decode together in one ``np.frombuffer`` per tensor, which is
what makes a monitor over a million rows cheap (``decode_many``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import orjson

from ferry.types import Tensors

_U32 = struct.Struct("<I")


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


_HEADS: dict[tuple[object, ...], bytes] = {}
"""Encoded headers of numeric-only tensor sets, by (name, dtype, shape)...: the usual
record repeats one header, so it is built once."""


def encode(tensors: Tensors) -> bytes:
    """The blob of ``tensors`` (any dtypes; object arrays become JSON strings)."""
    try:
        key = tuple((name, a.dtype.str, a.shape) for name, a in tensors.items())
    except AttributeError:
        key = ()
    prefix = _HEADS.get(key) if key else None
    if prefix is not None:
        return prefix + b"".join([a.tobytes() for a in tensors.values()])
    blob = _encode(tensors)
    if key and all(a.dtype.kind not in "OSU" for a in tensors.values()) and len(_HEADS) < 4096:
        _HEADS[key] = blob[:4 + _U32.unpack_from(blob, 0)[0]]
    return blob


def _encode(tensors: Tensors) -> bytes:
    header = []
    parts = []
    for name, array in tensors.items():
        array = np.asarray(array)
        if array.dtype.kind in "OSU":
            data = orjson.dumps([_text(v) for v in array.reshape(-1).tolist()])
            header.append([name, "json", list(array.shape), len(data)])
        else:
            data = np.ascontiguousarray(array).tobytes()
            header.append([name, array.dtype.str, list(array.shape), len(data)])
        parts.append(data)
    head = orjson.dumps(header)
    return _U32.pack(len(head)) + head + b"".join(parts)


def encode_columns(tensors: Sequence[tuple[str, np.dtype, tuple[int, ...], Sequence[object]]]
                   ) -> bytes:
    """The blob of tensors given in pieces, ``(name, dtype, shape, pieces)``: byte for byte
    ``encode`` of the tensors the pieces make up when stacked along the first axis. Numeric
    pieces are C-ordered buffers (``bytes``, contiguous arrays) joined with one copy,
    instead of a concatenation, a ``tobytes`` and a join (the writer's hot path). Text
    (dtype kind ``O``/``S``/``U``) pieces are arrays, stored as JSON strings like
    ``encode`` does."""
    header = []
    parts: list[object] = []
    for name, dtype, shape, pieces in tensors:
        if dtype.kind in "OSU":
            values = np.concatenate([np.asarray(x).reshape(-1) for x in pieces]) \
                if pieces else np.zeros(0, dtype=object)
            data = orjson.dumps([_text(v) for v in values.tolist()])
            header.append([name, "json", list(shape), len(data)])
            parts.append(data)
            continue
        size = dtype.itemsize
        for d in shape:
            size *= d
        header.append([name, dtype.str, list(shape), size])
        parts.extend(pieces)
    head = orjson.dumps(header)
    return b"".join([_U32.pack(len(head)), head, *parts])


def _split(blob: bytes) -> tuple[bytes, memoryview]:
    size = _U32.unpack_from(blob, 0)[0]
    view = memoryview(blob)
    return bytes(view[4:4 + size]), view[4 + size:]


def decode(blob: bytes) -> Tensors:
    """The tensors of one blob."""
    head, data = _split(blob)
    out: Tensors = {}
    offset = 0
    for name, dtype, shape, size in orjson.loads(head):
        chunk = data[offset:offset + size]
        offset += size
        if dtype == "json":
            out[name] = np.array(orjson.loads(bytes(chunk)), dtype=object).reshape(shape)
        else:
            out[name] = np.frombuffer(chunk, dtype=np.dtype(dtype)).reshape(shape)
    return out


def _decode_alike(blobs: Sequence[bytes]) -> tuple[Tensors, np.ndarray] | None:
    """``decode_many`` when every blob has the first one's header and size (one model
    version's numeric traffic): one ``uint8`` matrix, one column slice per tensor, no
    per-blob Python. None otherwise."""
    if not blobs or len(set(map(len, blobs))) != 1:
        return None
    size = _U32.unpack_from(blobs[0], 0)[0]
    spec = orjson.loads(bytes(blobs[0][4:4 + size]))
    if any(dtype == "json" for _, dtype, _, _ in spec):
        return None
    n, width = len(blobs), 4 + size
    full = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(n, -1)
    if not (full[:, :width] == full[0, :width]).all():
        return None
    n_rows = int(spec[0][2][0]) if spec and spec[0][2] else 1
    out: Tensors = {}
    offset = width
    for name, dtype, shape, nbytes in spec:
        tail = tuple((list(shape) or [1])[1:])
        block = np.ascontiguousarray(full[:, offset:offset + nbytes])
        out[name] = block.view(np.dtype(dtype)).reshape(n * (list(shape) or [1])[0], *tail)
        offset += nbytes
    return out, np.full(n, n_rows, dtype=np.int64)


def decode_many(blobs: Sequence[bytes]) -> tuple[Tensors, np.ndarray]:
    """Decode many blobs and stack each tensor along the first (batch) axis.

    Returns the stacked tensors and, per blob, its number of rows (first dimension of its
    first tensor; 1 for scalars). Tensors whose trailing shapes differ between blobs are
    left out. Blobs sharing one header are decoded with one ``frombuffer`` per tensor.
    """
    alike = _decode_alike(blobs)
    if alike is not None:
        return alike
    groups: dict[bytes, list[int]] = {}
    datas: list[memoryview] = [memoryview(b"")] * len(blobs)
    prefix = b""
    if blobs:
        size = _U32.unpack_from(blobs[0], 0)[0]
        prefix = bytes(blobs[0][:4 + size])
        length = len(blobs[0])
    for i, blob in enumerate(blobs):
        if prefix and blob.startswith(prefix) and len(blob) == length:
            # the common case: same header and size as the first blob, no split needed
            groups.setdefault(prefix[4:], []).append(i)
            datas[i] = memoryview(blob)[len(prefix):]
            continue
        head, data = _split(blob)
        datas[i] = data
        groups.setdefault(head, []).append(i)
    rows = np.zeros(len(blobs), dtype=np.int64)
    pieces: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    trailing: dict[str, tuple[int, ...]] = {}
    for head, members in groups.items():
        spec = orjson.loads(head)
        n_rows = int(spec[0][2][0]) if spec and spec[0][2] else 1
        rows[members] = n_rows
        order = np.asarray(members)
        if prefix and head == prefix[4:] and len(members) == len(blobs):
            joined = b"".join(blobs)  # every blob alike: cut the headers out as columns
            full = np.frombuffer(joined, dtype=np.uint8).reshape(len(members), -1)
            raw_all = full[:, len(prefix):]
        else:
            raw_all = None
            joined = b"".join(datas[i] for i in members)
        stride = sum(s[3] for s in spec)
        raw = raw_all if raw_all is not None else np.frombuffer(
            joined, dtype=np.uint8).reshape(len(members), stride)
        offset = 0
        for name, dtype, shape, size in spec:
            shape = list(shape) or [1]
            tail = tuple(shape[1:])
            if trailing.setdefault(name, tail) != tail:
                offset += size
                continue
            if dtype == "json":
                values = [v for i in members for v in orjson.loads(
                    bytes(datas[i][offset:offset + size]))]
                arr = np.array(values, dtype=object).reshape(len(members) * shape[0], *tail)
            else:
                block = np.ascontiguousarray(raw[:, offset:offset + size])
                arr = block.view(np.dtype(dtype)).reshape(len(members) * shape[0], *tail)
            offset += size
            pieces.setdefault(name, []).append((order, arr))
    out: Tensors = {}
    for name, parts in pieces.items():
        if len(parts) == 1:
            out[name] = parts[0][1]
            continue
        # restore blob order across groups: sort the groups' rows by their blob index
        index = np.concatenate([np.repeat(order, rows[order]) for order, _ in parts])
        stacked = np.concatenate([arr for _, arr in parts])
        out[name] = stacked[np.argsort(index, kind="stable")]
    return out, rows


def encode_many(many: Sequence[Tensors]) -> list[bytes]:
    """``[encode(t) for t in many]``, byte for byte when the items are alike.

    The writer's fast path: when every item has the same names, dtypes and shapes (one
    model version's traffic), the blobs are the rows of one ``uint8`` matrix (header
    prefix, then each tensor's bytes) cut into ``bytes`` objects: one copy per tensor name
    instead of one ``encode`` per item. Anything else (object tensors, differing shapes or
    dtypes) is encoded item by item.
    """
    blobs = encode_alike(many)
    return blobs if blobs is not None else [encode(t) for t in many]


def encode_alike(many: Sequence[Tensors]) -> list[bytes] | None:
    """The blobs of ``many`` when all share one numeric header (see ``encode_many``), else
    None."""
    if len(many) < 2:
        return None
    first = many[0]
    n = len(many)
    try:
        key = tuple((name, a.dtype.str, a.shape) for name, a in first.items())
        prefix = _HEADS.get(key)
        if prefix is None:
            encode(first)  # caches the header when it is cacheable (numeric tensors)
            prefix = _HEADS.get(key)
        if prefix is None:
            return None
        columns = [np.broadcast_to(np.frombuffer(prefix, dtype=np.uint8), (n, len(prefix)))]
        for name, a in first.items():
            arrays = [t[name] for t in many]
            dtype = a.dtype
            if any(x.dtype != dtype for x in arrays):
                return None
            stacked = np.stack(arrays)  # ValueError when shapes differ
            columns.append(np.ascontiguousarray(stacked).reshape(n, -1).view(np.uint8))
        width = len(first)
        if any(len(t) != width for t in many):
            return None
    except (KeyError, ValueError, AttributeError, TypeError):
        return None
    matrix = np.concatenate(columns, axis=1)
    stride = matrix.shape[1]
    flat = matrix.tobytes()
    return [flat[i:i + stride] for i in range(0, n * stride, stride)]
