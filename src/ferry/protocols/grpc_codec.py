"""KServe V2 gRPC messages <-> ``ferry.types``.

Messages come from ``ferry._pb.grpc_service_pb2``, generated (``make protos``) from
Triton's ``grpc_service.proto``, so the wire format is the one Triton's clients speak. Inputs may
arrive as typed ``contents`` or as ``raw_input_contents`` (what ``tritonclient.grpc``
sends); outputs always go back as ``raw_output_contents``, as Triton answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ferry.datatypes import v2_datatype
from ferry.errors import MalformedRequest, VersionNotFound
from ferry.protocols._arrays import (check_shape, dtype_of, from_binary, from_json, shaped,
                                     to_binary)
from ferry._pb import grpc_service_pb2 as pb
from ferry.types import InferRequest, InferResponse, ModelRef, RequestedOutput

_CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def version_of(text: str) -> int | None:
    """A request's ``model_version``: empty means the latest."""
    if not text:
        return None
    if not text.isascii() or not text.isdigit():
        raise VersionNotFound(f"version {text!r} is not an integer; versions are folder numbers")
    return int(text)


def parameters_of(params: Any) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as a plain dict."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, choice) if choice else None
    return out


def set_parameters(target: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        else:
            param.string_param = str(value)


def decode_infer(request: Any) -> InferRequest:
    """A ``ModelInferRequest`` as an ``InferRequest``; errors name the field."""
    if not request.inputs:
        raise MalformedRequest("'inputs' must hold at least one tensor")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise MalformedRequest(f"raw_input_contents has {len(raw)} entries but there are "
                               f"{len(request.inputs)} inputs; give one per input")
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        field = f"input {tensor.name!r}"
        if not tensor.name:
            raise MalformedRequest(f"inputs[{i}].name must be a non-empty string")
        if tensor.name in inputs:
            raise MalformedRequest(f"{field} appears twice in inputs")
        dtype_of(tensor.datatype, field)
        shape = check_shape(list(tensor.shape), field)
        if raw:
            arr = from_binary(memoryview(raw[i]), tensor.datatype, shape, field)
        else:
            name = _CONTENTS_FIELD.get(tensor.datatype)
            if name is None:
                raise MalformedRequest(f"{field}: {tensor.datatype} data must be sent in "
                                       f"raw_input_contents")
            values = list(getattr(tensor.contents, name))
            arr = shaped(from_json(values, tensor.datatype, field), shape, field)
        inputs[tensor.name] = arr
    outputs = [RequestedOutput(o.name, parameters_of(o.parameters)) for o in request.outputs]
    params = parameters_of(request.parameters)
    return InferRequest(ModelRef(request.model_name, version_of(request.model_version)), inputs,
                        request.id or None, params or None, outputs or None)


def encode_infer(response: InferResponse) -> Any:
    """An ``InferResponse`` as a ``ModelInferResponse`` with raw output contents."""
    message = pb.ModelInferResponse(model_name=response.model_name,
                                    model_version=response.model_version, id=response.id or "")
    for name, arr in response.outputs.items():
        datatype = v2_datatype(arr.dtype)
        message.outputs.add(name=name, datatype=datatype, shape=arr.shape)
        message.raw_output_contents.append(to_binary(arr, datatype))
    if response.parameters:
        set_parameters(message.parameters, response.parameters)
    return message
