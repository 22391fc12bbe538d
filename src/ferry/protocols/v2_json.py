"""KServe V2 / Open Inference Protocol JSON, with Triton's binary tensor extension.

``decode_infer`` turns a body (and the ``Inference-Header-Content-Length`` header, when the
binary extension is used) into an ``InferRequest``; ``encode_infer`` turns an
``InferResponse`` back into a body and its extra headers. Nothing else here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import orjson

from ferry.datatypes import v2_datatype
from ferry.errors import MalformedRequest
from ferry.protocols._arrays import (check_shape, dtype_of, from_binary, from_json, shaped,
                                    to_binary, to_json_data)
from ferry.protocols.shared_memory import tensor_ref
from ferry.types import InferRequest, InferResponse, ModelRef, RequestedOutput

if TYPE_CHECKING:
    from ferry.protocols.shared_memory import SharedMemoryRegistry

HEADER_LENGTH = "inference-header-content-length"
_DUMPS_OPTS = orjson.OPT_SERIALIZE_NUMPY


def decode_infer(body: bytes, model: ModelRef, header_length: str | None = None,
                 shm: SharedMemoryRegistry | None = None) -> InferRequest:
    """Parse an infer request body; every error names the field at fault. Inputs with
    ``shared_memory_*`` parameters are read from ``shm``'s regions."""
    binary: memoryview | None = None
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise MalformedRequest(f"Inference-Header-Content-Length must be an integer, got "
                                   f"{header_length!r}") from None
        if n < 0 or n > len(body):
            raise MalformedRequest(f"Inference-Header-Content-Length is {n} but the body has "
                                   f"{len(body)} bytes")
        binary = memoryview(body)[n:]
        body = body[:n]
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedRequest("body must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise MalformedRequest("'inputs' must be a non-empty list of tensors "
                               "({name, shape, datatype, data})")
    inputs = {}
    offset = 0
    for i, tensor in enumerate(raw_inputs):
        if not isinstance(tensor, dict):
            raise MalformedRequest(f"inputs[{i}] must be an object with name, shape, datatype "
                                   f"and data")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise MalformedRequest(f"inputs[{i}].name must be a non-empty string")
        field = f"input {name!r}"
        if name in inputs:
            raise MalformedRequest(f"{field} appears twice in inputs")
        datatype = cast(str, tensor.get("datatype"))
        dtype_of(datatype, field)  # raises unless it is a known V2 name
        shape = tensor.get("shape")
        params = tensor.get("parameters")
        size = None
        if isinstance(params, dict) and params:
            if (ref := tensor_ref(params, field)) is not None:
                inputs[name] = _from_shared_memory(tensor, ref, shm, field)
                continue
            size = params.get("binary_data_size")
        if size is not None:
            if binary is None:
                raise MalformedRequest(f"{field}: binary_data_size given but the request has "
                                       f"no Inference-Header-Content-Length header")
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise MalformedRequest(f"{field}: binary_data_size {size!r} runs past the end of "
                                       f"the binary data ({len(binary) - offset} bytes left)")
            shape = check_shape(shape, field)
            arr = from_binary(binary[offset:offset + size], datatype, shape, field)
            offset += size
        else:
            if "data" not in tensor:
                raise MalformedRequest(f"{field}: no 'data' (and no binary_data_size parameter)")
            arr = shaped(from_json(tensor["data"], datatype, field), shape, field)
        inputs[name] = arr
    if binary is not None and offset != len(binary):
        raise MalformedRequest(f"the binary section has {len(binary)} bytes but inputs' "
                               f"binary_data_size add up to {offset}")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise MalformedRequest("'id' must be a string")
    parameters = doc.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise MalformedRequest("'parameters' must be an object")
    return InferRequest(model, inputs, request_id, parameters, _outputs(doc.get("outputs")))


def _from_shared_memory(tensor: dict[str, Any], ref: Any, shm: SharedMemoryRegistry | None,
                        field: str) -> Any:
    if "data" in tensor or "binary_data_size" in tensor["parameters"]:
        raise MalformedRequest(f"{field}: give either shared memory parameters or data, "
                               f"not both")
    if shm is None:
        raise MalformedRequest(f"{field}: shared memory is not served on this route")
    return shm.read_input(ref, tensor["datatype"], check_shape(tensor.get("shape"), field),
                          field)


def _outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise MalformedRequest("'outputs' must be a list of {name, parameters}")
    wanted = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise MalformedRequest(f"outputs[{i}] must be an object with a string 'name'")
        params = item.get("parameters") or {}
        if not isinstance(params, dict):
            raise MalformedRequest(f"outputs[{i}].parameters must be an object")
        wanted.append(RequestedOutput(item["name"], params))
    return wanted


def encode_infer(response: InferResponse, request: InferRequest) -> tuple[bytes, str | None]:
    """The response body and, when outputs are binary, the JSON header's length."""
    header, chunks = _encode(response, request, False)
    if b"null" in header:  # a NaN or infinity in JSON data: spell it out instead
        header, chunks = _encode(response, request, True)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), str(len(header))


def _encode(response: InferResponse, request: InferRequest, check_finite: bool
            ) -> tuple[bytes, list[bytes]]:
    binary_default = bool((request.parameters or {}).get("binary_data_output", False))
    wanted = {o.name: o.parameters for o in request.outputs} if request.outputs else None
    outputs = []
    chunks: list[bytes] = []
    for name, arr in response.outputs.items():
        datatype = v2_datatype(arr.dtype)
        params = wanted.get(name, {}) if wanted is not None else {}
        item: dict[str, Any] = {"name": name, "datatype": datatype, "shape": arr.shape}
        if params and (ref := tensor_ref(params, name)) is not None:
            item["parameters"] = ref.parameters()  # written into the region: no data
        elif params.get("binary_data", binary_default):
            raw = to_binary(arr, datatype)
            item["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            item["data"] = to_json_data(arr, check_finite)
        outputs.append(item)
    doc: dict[str, Any] = {"model_name": response.model_name,
                           "model_version": response.model_version, "outputs": outputs}
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    return orjson.dumps(doc, option=_DUMPS_OPTS), chunks
