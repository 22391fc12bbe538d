"""KServe V2 gRPC messages <-> ``ferry.types``.

Messages come from ``ferry._pb.grpc_service_pb2``, generated (``make protos``) from
Triton's ``grpc_service.proto``, so the wire format is the one Triton's clients speak. Inputs may
arrive as typed ``contents`` or as ``raw_input_contents`` (what ``tritonclient.grpc``
sends); outputs always go back as ``raw_output_contents``, as Triton answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ferry.datatypes import v2_datatype
from ferry.errors import MalformedRequest, VersionNotFound
from ferry.protocols._arrays import (check_shape, dtype_of, from_binary, from_json, shaped,
                                     to_binary)
from ferry._pb import grpc_service_pb2 as pb
from ferry.protocols.shared_memory import TensorRef, tensor_ref
from ferry.types import InferRequest, InferResponse, ModelRef, RequestedOutput

if TYPE_CHECKING:
    from ferry.protocols.shared_memory import SharedMemoryRegistry

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


def decode_infer(request: Any, shm: SharedMemoryRegistry | None = None) -> InferRequest:
    """A ``ModelInferRequest`` as an ``InferRequest``; errors name the field. Inputs with
    ``shared_memory_*`` parameters are read from ``shm``'s regions and, as in Triton, take
    no entry in ``raw_input_contents``."""
    if not request.inputs:
        raise MalformedRequest("'inputs' must hold at least one tensor")
    refs = [tensor_ref(parameters_of(t.parameters), f"input {t.name!r}") if t.parameters
            else None for t in request.inputs]
    in_raw = len(refs) - sum(ref is not None for ref in refs)
    raw = request.raw_input_contents
    if raw and len(raw) != in_raw:
        raise MalformedRequest(f"raw_input_contents has {len(raw)} entries but {in_raw} inputs "
                               f"are not in shared memory; give one per input")
    inputs: dict[str, np.ndarray] = {}
    next_raw = 0
    for i, tensor in enumerate(request.inputs):
        field = f"input {tensor.name!r}"
        if not tensor.name:
            raise MalformedRequest(f"inputs[{i}].name must be a non-empty string")
        if tensor.name in inputs:
            raise MalformedRequest(f"{field} appears twice in inputs")
        dtype_of(tensor.datatype, field)
        shape = check_shape(list(tensor.shape), field)
        ref = refs[i]
        if ref is not None:
            if tensor.HasField("contents"):
                raise MalformedRequest(f"{field}: give either shared memory parameters or "
                                       f"contents, not both")
            if shm is None:
                raise MalformedRequest(f"{field}: shared memory is not served here")
            arr = shm.read_input(ref, tensor.datatype, shape, field)
        elif raw:
            arr = from_binary(memoryview(raw[next_raw]), tensor.datatype, shape, field)
            next_raw += 1
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


def encode_infer(response: InferResponse, request: InferRequest | None = None) -> Any:
    """An ``InferResponse`` as a ``ModelInferResponse`` with raw output contents. An output
    the request asked for in shared memory (already written there) gets, as in Triton, an
    empty ``raw_output_contents`` entry and its shared-memory parameters."""
    message = pb.ModelInferResponse(model_name=response.model_name,
                                    model_version=response.model_version, id=response.id or "")
    shared = _shared_outputs(request) if request is not None and request.outputs else None
    for name, arr in response.outputs.items():
        datatype = v2_datatype(arr.dtype)
        output = message.outputs.add(name=name, datatype=datatype, shape=arr.shape)
        ref = shared.get(name) if shared else None
        if ref is not None:
            set_parameters(output.parameters, ref.parameters())
            message.raw_output_contents.append(b"")
        else:
            message.raw_output_contents.append(to_binary(arr, datatype))
    if response.parameters:
        set_parameters(message.parameters, response.parameters)
    return message


def _shared_outputs(request: InferRequest) -> dict[str, TensorRef]:
    return {o.name: ref for o in request.outputs or ()
            if (ref := tensor_ref(o.parameters, o.name)) is not None}
