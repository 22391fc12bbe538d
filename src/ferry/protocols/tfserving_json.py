"""TF Serving's REST predict API: ``instances`` (row) and ``inputs`` (columnar) JSON.

Row format: ``{"instances": [row, ...]}`` where a row is the value of the only input, or an
object ``{input name: value}`` for several inputs; the answer is ``{"predictions": [...]}``
(one value per row, or one object per row for several outputs). Columnar format:
``{"inputs": value}`` or ``{"inputs": {name: value}}``, answered with ``{"outputs": ...}``.
Binary strings travel as ``{"b64": "..."}``. Datatypes come from the model's signature.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import orjson

from ferry.errors import MalformedRequest, ShapeMismatch
from ferry.protocols._arrays import from_json, to_json_data
from ferry.types import InferRequest, InferResponse, ModelRef, Signature, TensorSpec


def decode_predict(body: bytes, model: ModelRef, signature: Signature
                   ) -> tuple[InferRequest, bool]:
    """The request, and whether it used the row (``instances``) format."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or ("instances" in doc) == ("inputs" in doc):
        raise MalformedRequest("body must be an object with exactly one of 'instances' (row "
                               "format) or 'inputs' (columnar format)")
    specs = signature.inputs
    if "instances" in doc:
        rows = doc["instances"]
        if not isinstance(rows, list):
            raise MalformedRequest("'instances' must be a list with one entry per row")
        if len(specs) == 1 and not (rows and isinstance(rows[0], dict) and not _is_b64(rows[0])):
            columns = {specs[0].name: rows}
        else:
            columns = _columns_from_rows(rows, specs)
        row_format = True
    else:
        value = doc["inputs"]
        if isinstance(value, dict) and not _is_b64(value):
            columns = value
        elif len(specs) == 1:
            columns = {specs[0].name: value}
        else:
            raise MalformedRequest(f"'inputs' must be an object keyed by input name "
                                   f"{[s.name for s in specs]}")
        row_format = False
    inputs = {}
    for name, value in columns.items():
        spec = signature.input(name)
        datatype = spec.datatype if spec is not None else "FP32"  # unknown names fail later
        if datatype == "BYTES":
            value = _unwrap_b64(value, name)
        inputs[name] = from_json(value, datatype, f"input {name!r}")
    return InferRequest(model, inputs), row_format


def _columns_from_rows(rows: list[Any], specs: tuple[TensorSpec, ...]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise MalformedRequest(f"instances[{i}] must be an object keyed by input name "
                                   f"{[s.name for s in specs]}")
        if i and row.keys() != columns.keys():
            raise ShapeMismatch(f"instances[{i}] has inputs {sorted(row)} but instances[0] has "
                                f"{sorted(columns)}")
        for name, value in row.items():
            columns.setdefault(name, []).append(value)
    return columns


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _unwrap_b64(value: Any, name: str) -> Any:
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError):
            raise MalformedRequest(f"input {name!r}: 'b64' is not valid base64") from None
    if isinstance(value, list):
        return [_unwrap_b64(v, name) for v in value]
    return value


def encode_predict(response: InferResponse, row_format: bool) -> bytes:
    """``{"predictions": ...}`` for the row format, ``{"outputs": ...}`` for columnar."""
    outputs = response.outputs
    if row_format:
        if len(outputs) == 1:
            (arr,) = outputs.values()
            return orjson.dumps({"predictions": _nested(arr)}, option=orjson.OPT_SERIALIZE_NUMPY)
        lists = {name: _nested(arr) for name, arr in outputs.items()}
        n = min(len(v) for v in lists.values())
        rows = [{name: v[i] for name, v in lists.items()} for i in range(n)]
        return orjson.dumps({"predictions": rows})
    if len(outputs) == 1:
        (arr,) = outputs.values()
        return orjson.dumps({"outputs": _nested(arr)})
    return orjson.dumps({"outputs": {name: _nested(arr) for name, arr in outputs.items()}})


def _nested(arr: np.ndarray) -> list[Any]:
    flat = to_json_data(arr, check_finite=True)
    if isinstance(flat, np.ndarray):
        return flat.reshape(arr.shape).tolist()  # type: ignore[no-any-return]
    return np.array(flat, dtype=object).reshape(arr.shape).tolist()  # type: ignore[no-any-return]
