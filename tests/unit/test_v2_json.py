"""The KServe V2 JSON codec with Triton's binary tensor extension."""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ferry.errors import (DatatypeMismatch, FerryError, InvalidInput, MalformedRequest,
                          ShapeMismatch)
from ferry.protocols.v2_json import HEADER_LENGTH, decode_infer, encode_infer
from ferry.types import InferRequest, InferResponse, ModelRef, RequestedOutput

MODEL = ModelRef("m", 3)
NUMERIC = ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
           "FP32", "FP64"]
DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
          "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
          "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def tensor(name: str = "x", datatype: str = "FP32", shape: Any = (2,), data: Any = (1, 2),
           **extra: Any) -> dict[str, Any]:
    t = {"name": name, "datatype": datatype, "shape": list(shape) if isinstance(shape, tuple)
         else shape, **extra}
    if data is not None:
        t["data"] = list(data) if isinstance(data, tuple) else data
    return t


def binary_request(doc: dict[str, Any], *chunks: bytes) -> tuple[bytes, str]:
    header = orjson.dumps(doc)
    return header + b"".join(chunks), str(len(header))


def bytes_chunk(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def decode(raw: bytes, header: str | None = None) -> InferRequest:
    return decode_infer(raw, MODEL, header)


# -- decoding JSON tensors ---------------------------------------------------------------

def test_header_name_is_lowercase() -> None:
    assert HEADER_LENGTH == "inference-header-content-length"


def test_nested_data() -> None:
    req = decode(body(tensor(shape=[2, 3], data=[[1, 2, 3], [4, 5, 6.5]])))
    x = req.inputs["x"]
    assert x.dtype == np.float32 and x.shape == (2, 3)
    np.testing.assert_array_equal(x, [[1, 2, 3], [4, 5, 6.5]])
    assert req.model == MODEL


def test_flat_data_is_reshaped_row_major() -> None:
    x = decode(body(tensor(shape=[2, 3], data=[1, 2, 3, 4, 5, 6]))).inputs["x"]
    np.testing.assert_array_equal(x, [[1, 2, 3], [4, 5, 6]])


def test_nested_data_in_another_layout_is_reshaped() -> None:
    x = decode(body(tensor(shape=[3, 2], data=[[1, 2, 3], [4, 5, 6]]))).inputs["x"]
    np.testing.assert_array_equal(x, [[1, 2], [3, 4], [5, 6]])


@pytest.mark.parametrize("datatype", NUMERIC)
def test_every_numeric_datatype(datatype: str) -> None:
    data = [[0, 1], [2, 127]]
    x = decode(body(tensor(datatype=datatype, shape=[2, 2], data=data))).inputs["x"]
    assert x.dtype == DTYPES[datatype]
    np.testing.assert_array_equal(x, np.array(data, dtype=DTYPES[datatype]))


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_float_datatypes_take_fractions(datatype: str) -> None:
    x = decode(body(tensor(datatype=datatype, shape=[3], data=[0.5, -1.25, 3]))).inputs["x"]
    np.testing.assert_array_equal(x, np.array([0.5, -1.25, 3], dtype=DTYPES[datatype]))


@pytest.mark.parametrize("datatype, value", [("INT8", -128), ("INT8", 127), ("UINT8", 255),
                                             ("INT64", -2**63), ("INT64", 2**63 - 1),
                                             ("UINT64", 2**64 - 1), ("UINT32", 2**32 - 1)])
def test_integer_range_limits(datatype: str, value: int) -> None:
    x = decode(body(tensor(datatype=datatype, shape=[1], data=[value]))).inputs["x"]
    assert x.dtype == DTYPES[datatype] and int(x[0]) == value


def test_bool() -> None:
    x = decode(body(tensor(datatype="BOOL", shape=[3], data=[True, False, True]))).inputs["x"]
    assert x.dtype == np.bool_
    np.testing.assert_array_equal(x, [True, False, True])


def test_bytes_from_strings() -> None:
    x = decode(body(tensor(datatype="BYTES", shape=[2, 2],
                           data=[["a", "héllo"], ["", "d"]]))).inputs["x"]
    assert x.dtype == object and x.shape == (2, 2)
    assert x.tolist() == [[b"a", "héllo".encode()], [b"", b"d"]]
    assert all(type(v) is bytes for v in x.reshape(-1))


def test_bytes_flat() -> None:
    x = decode(body(tensor(datatype="BYTES", shape=[1, 2], data=["ab", "c"]))).inputs["x"]
    assert x.tolist() == [[b"ab", b"c"]]


def test_empty_tensor() -> None:
    x = decode(body(tensor(shape=[0, 4], data=[]))).inputs["x"]
    assert x.shape == (0, 4) and x.dtype == np.float32


def test_scalar_shape() -> None:
    x = decode(body(tensor(datatype="INT32", shape=[], data=[7]))).inputs["x"]
    assert x.shape == () and x.dtype == np.int32 and int(x) == 7


def test_several_inputs_keep_their_order() -> None:
    req = decode(body(tensor("b", "INT64", [1], [1]), tensor("a", "FP64", [1], [2.0])))
    assert list(req.inputs) == ["b", "a"]
    assert req.inputs["b"].dtype == np.int64 and req.inputs["a"].dtype == np.float64


def test_id_parameters_and_outputs() -> None:
    req = decode(body(tensor(), id="req-1", parameters={"binary_data_output": True, "k": 1},
                      outputs=[{"name": "y", "parameters": {"binary_data": False}},
                               {"name": "z"}]))
    assert req.id == "req-1"
    assert req.parameters == {"binary_data_output": True, "k": 1}
    assert req.outputs == [RequestedOutput("y", {"binary_data": False}), RequestedOutput("z")]
    assert req.deadline is None


def test_absent_optionals_are_none() -> None:
    req = decode(body(tensor()))
    assert req.id is None and req.parameters is None and req.outputs is None


def test_tensor_parameters_without_binary_size_are_ignored() -> None:
    req = decode(body(tensor(parameters={"content_type": "np"})))
    np.testing.assert_array_equal(req.inputs["x"], [1, 2])


# -- decoding binary tensors ---------------------------------------------------------------

def test_binary_fp32() -> None:
    values = np.array([[1.5, -2.0, 3.25], [np.pi, 1e-30, -0.0]], dtype=np.float32)
    raw, n = binary_request({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3],
                                         "parameters": {"binary_data_size": 24}}]},
                            values.tobytes())
    x = decode(raw, n).inputs["x"]
    assert x.dtype == np.float32 and x.shape == (2, 3)
    assert x.tobytes() == values.tobytes()


def test_binary_int64_little_endian() -> None:
    raw, n = binary_request({"inputs": [{"name": "x", "datatype": "INT64", "shape": [2],
                                         "parameters": {"binary_data_size": 16}}]},
                            struct.pack("<qq", -5, 2**40))
    np.testing.assert_array_equal(decode(raw, n).inputs["x"], [-5, 2**40])


def test_binary_bytes_with_length_prefixes() -> None:
    chunk = bytes_chunk(b"hello", b"", b"\x00\xff")
    raw, n = binary_request({"inputs": [{"name": "s", "datatype": "BYTES", "shape": [3, 1],
                                         "parameters": {"binary_data_size": len(chunk)}}]},
                            chunk)
    s = decode(raw, n).inputs["s"]
    assert s.shape == (3, 1) and s.dtype == object
    assert s.reshape(-1).tolist() == [b"hello", b"", b"\x00\xff"]


def test_mixed_json_and_binary_inputs() -> None:
    a = np.arange(4, dtype=np.float64)
    b = bytes_chunk(b"xy")
    raw, n = binary_request({"inputs": [
        {"name": "a", "datatype": "FP64", "shape": [2, 2],
         "parameters": {"binary_data_size": 32}},
        {"name": "j", "datatype": "INT32", "shape": [2], "data": [7, 8]},
        {"name": "b", "datatype": "BYTES", "shape": [1],
         "parameters": {"binary_data_size": len(b)}},
    ]}, a.tobytes(), b)
    req = decode(raw, n)
    np.testing.assert_array_equal(req.inputs["a"], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(req.inputs["j"], [7, 8])
    assert req.inputs["b"].tolist() == [b"xy"]


def test_header_length_with_no_binary_tensors() -> None:
    raw = body(tensor())
    np.testing.assert_array_equal(decode(raw, str(len(raw))).inputs["x"], [1, 2])


# -- decoding errors ---------------------------------------------------------------------

ERRORS: list[tuple[str, bytes, str | None, type[InvalidInput], str]] = [
    ("invalid json", b'{"inputs": [', None, MalformedRequest, "not valid JSON"),
    ("not utf8", b'\xff\xfe', None, MalformedRequest, "not valid JSON"),
    ("empty body", b"", None, MalformedRequest, "not valid JSON"),
    ("non-object", b"[1, 2]", None, MalformedRequest, "JSON object"),
    ("string doc", b'"inputs"', None, MalformedRequest, "JSON object"),
    ("missing inputs", b"{}", None, MalformedRequest, "'inputs'"),
    ("inputs not a list", b'{"inputs": {"name": "x"}}', None, MalformedRequest, "'inputs'"),
    ("empty inputs", b'{"inputs": []}', None, MalformedRequest, "'inputs'"),
    ("tensor not an object", body(tensor(), 5), None, MalformedRequest, "inputs[1]"),
    ("missing name", body({"datatype": "FP32", "shape": [1], "data": [1]}), None,
     MalformedRequest, "inputs[0].name"),
    ("name not a string", body(tensor(name=3)), None, MalformedRequest, "inputs[0].name"),
    ("empty name", body(tensor(name="")), None, MalformedRequest, "inputs[0].name"),
    ("bad datatype", body(tensor(datatype="FLOAT32")), None, DatatypeMismatch,
     "input 'x': datatype 'FLOAT32'"),
    ("missing datatype", body(tensor(datatype=None)), None, DatatypeMismatch,
     "input 'x': datatype None"),
    ("shape not a list", body(tensor(shape="2")), None, MalformedRequest, "input 'x': shape"),
    ("missing shape", body(tensor(shape=None)), None, MalformedRequest, "input 'x': shape"),
    ("negative shape", body(tensor(shape=[-1])), None, MalformedRequest, "input 'x': shape"),
    ("float shape", body(tensor(shape=[2.0])), None, MalformedRequest, "input 'x': shape"),
    ("bool shape", body(tensor(shape=[True, 2])), None, MalformedRequest, "input 'x': shape"),
    ("no data", body(tensor(data=None)), None, MalformedRequest, "input 'x': no 'data'"),
    ("size vs shape", body(tensor(shape=[2, 2], data=[1, 2, 3])), None, ShapeMismatch,
     "input 'x': data has 3 values but shape [2, 2] needs 4"),
    ("ragged", body(tensor(shape=[3], data=[[1, 2], [3]])), None, ShapeMismatch,
     "input 'x': data is not a regular"),
    ("strings for FP32", body(tensor(data=["1", "2"])), None, DatatypeMismatch,
     "input 'x': datatype is FP32 but data holds strings"),
    ("floats for INT64", body(tensor(datatype="INT64", data=[1.5, 2])), None,
     DatatypeMismatch, "input 'x': datatype is INT64 but data holds floats"),
    ("ints out of range for INT8", body(tensor(datatype="INT8", data=[1, 200])), None,
     DatatypeMismatch, "input 'x': values outside the range of INT8"),
    ("negative for UINT8", body(tensor(datatype="UINT8", data=[-1, 2])), None,
     DatatypeMismatch, "range of UINT8"),
    ("ints for BOOL", body(tensor(datatype="BOOL", data=[1, 0])), None, DatatypeMismatch,
     "datatype is BOOL but data holds integers"),
    ("null values", body(tensor(data=[1, None])), None, DatatypeMismatch,
     "input 'x': datatype is FP32 but data holds null"),
    ("null data", body(tensor(shape=[1], data=[None])), None, DatatypeMismatch, "null"),
    ("object data", body(tensor(data={"a": 1})), None, DatatypeMismatch, "input 'x'"),
    ("number for BYTES", body(tensor(datatype="BYTES", data=["a", 1])), None,
     DatatypeMismatch, "input 'x': datatype is BYTES but data[1] is int"),
    ("duplicate input", body(tensor(), tensor()), None, MalformedRequest,
     "input 'x' appears twice"),
    ("id not a string", body(tensor(), id=5), None, MalformedRequest, "'id'"),
    ("parameters not an object", body(tensor(), parameters=[1]), None, MalformedRequest,
     "'parameters'"),
    ("outputs not a list", body(tensor(), outputs={"name": "y"}), None, MalformedRequest,
     "'outputs'"),
    ("output without name", body(tensor(), outputs=[{"parameters": {}}]), None,
     MalformedRequest, "outputs[0]"),
    ("output parameters not an object", body(tensor(), outputs=[{"name": "y",
                                                                 "parameters": [1]}]),
     None, MalformedRequest, "outputs[0].parameters"),
    # the binary extension
    ("binary size past the end", *binary_request(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2],
                     "parameters": {"binary_data_size": 8}}]}, b"\0" * 4),
     MalformedRequest, "input 'x': binary_data_size 8 runs past the end"),
    ("negative binary size", *binary_request(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                     "parameters": {"binary_data_size": -4}}]}, b"\0" * 4),
     MalformedRequest, "binary_data_size -4"),
    ("non-integer binary size", *binary_request(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                     "parameters": {"binary_data_size": "4"}}]}, b"\0" * 4),
     MalformedRequest, "binary_data_size '4'"),
    ("binary size vs shape", *binary_request(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3],
                     "parameters": {"binary_data_size": 8}}]}, b"\0" * 8),
     ShapeMismatch, "input 'x': binary_data_size is 8 bytes but shape [3] of FP32 needs 12"),
    ("binary bad shape", *binary_request(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": "3",
                     "parameters": {"binary_data_size": 4}}]}, b"\0" * 4),
     MalformedRequest, "input 'x': shape"),
    ("binary bytes truncated prefix", *binary_request(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2],
                     "parameters": {"binary_data_size": 7}}]}, bytes_chunk(b"a") + b"\1\0"),
     MalformedRequest, "input 's': BYTES element 1 has a truncated length prefix"),
    ("binary bytes element too long", *binary_request(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [1],
                     "parameters": {"binary_data_size": 6}}]}, struct.pack("<I", 9) + b"ab"),
     MalformedRequest, "input 's': BYTES element 0 claims 9 bytes but only 2 remain"),
    ("binary bytes count vs shape", *binary_request(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [3],
                     "parameters": {"binary_data_size": 12}}]}, bytes_chunk(b"ab", b"cd")),
     ShapeMismatch, "input 's': binary data holds 2 BYTES elements but shape [3] needs 3"),
    ("header length larger than body", b'{"inputs": []}', "100", MalformedRequest,
     "Inference-Header-Content-Length is 100 but the body has 14 bytes"),
    ("negative header length", b'{"inputs": []}', "-1", MalformedRequest,
     "Inference-Header-Content-Length is -1"),
    ("non-integer header", b'{"inputs": []}', "ten", MalformedRequest,
     "Inference-Header-Content-Length must be an integer, got 'ten'"),
    ("header cuts the JSON", b'{"inputs": []}', "5", MalformedRequest, "not valid JSON"),
    ("binary bytes left over", *binary_request(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                     "parameters": {"binary_data_size": 4}}]}, b"\0" * 6),
     MalformedRequest, ("the binary section has 6 bytes but inputs' binary_data_size add up "
                        "to 4")),
    ("binary bytes but no binary tensor", *binary_request(
        {"inputs": [tensor()]}, b"\0" * 3), MalformedRequest, "binary section has 3 bytes"),
    ("binary_data_size without header", body(
        {"name": "x", "datatype": "FP32", "shape": [1],
         "parameters": {"binary_data_size": 4}}), None, MalformedRequest,
     ("input 'x': binary_data_size given but the request has no "
      "Inference-Header-Content-Length")),
]


@pytest.mark.parametrize("raw, header, error, fragment",
                         [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_decode_errors(raw: bytes, header: str | None, error: type[InvalidInput],
                       fragment: str) -> None:
    with pytest.raises(error) as info:
        decode(raw, header)
    assert fragment in info.value.message
    assert isinstance(info.value, InvalidInput)
    assert info.value.http_status == 400


@pytest.mark.parametrize("datatype, value", [("FP32", 1e300), ("FP16", 1e10), ("FP16", 70000)])
def test_floats_out_of_range_are_rejected(datatype: str, value: float) -> None:
    with pytest.raises(DatatypeMismatch, match="range"):
        decode(body(tensor(datatype=datatype, shape=[1], data=[value])))


@pytest.mark.parametrize("case", ["json-64-dims", "json-huge-empty", "binary-64-dims",
                                  "binary-huge-empty"])
def test_impossible_shapes_are_invalid_input(case: str) -> None:
    shape = [1] * 70 if case.endswith("64-dims") else [0, 2**62]
    if case.startswith("json"):
        raw, header = body(tensor(shape=shape, data=[1.0] if 1 in shape else [])), None
    else:
        size = 4 if 1 in shape else 0
        raw, header = binary_request({"inputs": [{"name": "x", "datatype": "FP32",
                                                  "shape": shape,
                                                  "parameters": {"binary_data_size": size}}]},
                                     b"\0" * size)
    with pytest.raises(InvalidInput):
        decode(raw, header)


# -- encoding ------------------------------------------------------------------------------

def request(**kw: Any) -> InferRequest:
    return InferRequest(MODEL, {}, **kw)


def response(outputs: dict[str, np.ndarray], **kw: Any) -> InferResponse:
    return InferResponse("m", "3", outputs, **kw)


def split_body(raw: bytes, header: str | None) -> tuple[dict[str, Any], bytes]:
    if header is None:
        return orjson.loads(raw), b""
    n = int(header)
    return orjson.loads(raw[:n]), raw[n:]


def test_encode_json_outputs_flat_row_major() -> None:
    y = np.arange(6, dtype=np.float32).reshape(2, 3) / 2
    label = np.array([1, 0], dtype=np.int64)
    raw, header = encode_infer(response({"y": y, "label": label}, id="r1"), request())
    assert header is None
    doc = orjson.loads(raw)
    assert doc == {"model_name": "m", "model_version": "3", "id": "r1", "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [2, 3], "data": [0, 0.5, 1, 1.5, 2, 2.5]},
        {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 0]}]}


def test_encode_non_contiguous_output() -> None:
    y = np.arange(6, dtype=np.int32).reshape(2, 3).T  # Fortran order
    doc = orjson.loads(encode_infer(response({"y": y}), request())[0])
    assert doc["outputs"][0]["shape"] == [3, 2]
    assert doc["outputs"][0]["data"] == [0, 3, 1, 4, 2, 5]


@pytest.mark.parametrize("datatype", list(DTYPES))
def test_encode_every_datatype_as_json(datatype: str) -> None:
    arr = np.array([[0, 1], [1, 0]], dtype=DTYPES[datatype])
    doc = orjson.loads(encode_infer(response({"y": arr}), request())[0])
    out = doc["outputs"][0]
    assert out["datatype"] == datatype
    assert out["data"] == arr.reshape(-1).tolist()


def test_encode_no_id_no_parameters() -> None:
    doc = orjson.loads(encode_infer(response({"y": np.zeros(1)}), request())[0])
    assert "id" not in doc and "parameters" not in doc


def test_encode_response_parameters() -> None:
    doc = orjson.loads(encode_infer(response({"y": np.zeros(1)}, parameters={"a": 1}),
                                    request())[0])
    assert doc["parameters"] == {"a": 1}


def test_encode_fp16_json() -> None:
    y = np.array([0.5, -1.25, 65504], dtype=np.float16)
    out = orjson.loads(encode_infer(response({"y": y}), request())[0])["outputs"][0]
    assert out["datatype"] == "FP16" and out["data"] == [0.5, -1.25, 65504.0]


def test_encode_bytes_json() -> None:
    y = np.array([b"ab", "héllo".encode(), b""], dtype=object)
    out = orjson.loads(encode_infer(response({"y": y}), request())[0])["outputs"][0]
    assert out == {"name": "y", "datatype": "BYTES", "shape": [3], "data": ["ab", "héllo", ""]}


def test_encode_unicode_string_array_as_bytes() -> None:
    y = np.array(["setosa", "virginica"])
    out = orjson.loads(encode_infer(response({"y": y}), request())[0])["outputs"][0]
    assert out["datatype"] == "BYTES" and out["data"] == ["setosa", "virginica"]


def test_encode_non_finite_floats() -> None:
    y = np.array([1.5, np.nan, np.inf, -np.inf], dtype=np.float32)
    out = orjson.loads(encode_infer(response({"y": y}), request())[0])["outputs"][0]
    assert out["data"] == [1.5, "nan", "inf", "-inf"]


def test_encode_binary_when_request_asks_for_all() -> None:
    y = np.array([[1.5, 2.5]], dtype=np.float32)
    z = np.array([7, -8], dtype=np.int64)
    raw, header = encode_infer(response({"y": y, "z": z}),
                               request(parameters={"binary_data_output": True}))
    assert header is not None and int(header) < len(raw)
    doc, tail = split_body(raw, header)
    assert [o["parameters"] for o in doc["outputs"]] == [{"binary_data_size": 8},
                                                         {"binary_data_size": 16}]
    assert all("data" not in o for o in doc["outputs"])
    assert doc["outputs"][0]["shape"] == [1, 2] and doc["outputs"][0]["datatype"] == "FP32"
    assert tail == y.tobytes() + struct.pack("<qq", 7, -8)


def test_encode_binary_per_output() -> None:
    y = np.array([1, 2], dtype=np.int32)
    z = np.array([3.0], dtype=np.float64)
    req = request(outputs=[RequestedOutput("y", {"binary_data": True}), RequestedOutput("z")])
    raw, header = encode_infer(response({"y": y, "z": z}), req)
    doc, tail = split_body(raw, header)
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert doc["outputs"][1]["data"] == [3.0]
    assert tail == struct.pack("<ii", 1, 2)


def test_per_output_false_overrides_request_default() -> None:
    y, z = np.array([1], dtype=np.int8), np.array([2], dtype=np.int8)
    req = request(parameters={"binary_data_output": True},
                  outputs=[RequestedOutput("y", {"binary_data": False}), RequestedOutput("z")])
    doc, tail = split_body(*encode_infer(response({"y": y, "z": z}), req))
    assert doc["outputs"][0]["data"] == [1]
    assert doc["outputs"][1]["parameters"] == {"binary_data_size": 1}
    assert tail == b"\x02"


def test_encode_binary_fp16_and_bytes() -> None:
    h = np.array([0.5, -2.0], dtype=np.float16)
    s = np.array([[b"abc"], [b""]], dtype=object)
    raw, header = encode_infer(response({"h": h, "s": s}),
                               request(parameters={"binary_data_output": True}))
    doc, tail = split_body(raw, header)
    assert doc["outputs"][0]["datatype"] == "FP16"
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 4
    assert doc["outputs"][1]["datatype"] == "BYTES" and doc["outputs"][1]["shape"] == [2, 1]
    expected_s = struct.pack("<I", 3) + b"abc" + struct.pack("<I", 0)
    assert doc["outputs"][1]["parameters"]["binary_data_size"] == len(expected_s)
    assert tail == h.astype("<f2").tobytes() + expected_s


def test_encode_binary_big_endian_array_is_written_little_endian() -> None:
    y = np.array([1, 256], dtype=">i4")
    _, tail = split_body(*encode_infer(response({"y": y}),
                                       request(parameters={"binary_data_output": True})))
    assert tail == struct.pack("<ii", 1, 256)


def test_binary_response_decodes_as_a_binary_request() -> None:
    """What we send is what we accept: rename outputs -> inputs and decode it."""
    y = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    s = np.array([b"a", b"bc"], dtype=object)
    raw, header = encode_infer(response({"y": y, "s": s}),
                               request(parameters={"binary_data_output": True}))
    doc, tail = split_body(raw, header)
    again = decode(*binary_request({"inputs": doc["outputs"]}, tail))
    assert again.inputs["y"].tobytes() == y.tobytes()
    assert again.inputs["s"].tolist() == [b"a", b"bc"]


# -- properties ----------------------------------------------------------------------------

float32_arrays = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    elements=st.floats(width=32, allow_nan=True, allow_infinity=True))


@settings(max_examples=150, deadline=None)
@given(float32_arrays)
def test_binary_float32_round_trip(arr: np.ndarray) -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(arr.shape),
                       "parameters": {"binary_data_size": arr.nbytes}}]}
    x = decode(*binary_request(doc, arr.tobytes())).inputs["x"]
    assert x.dtype == np.float32 and x.shape == arr.shape
    assert x.tobytes() == arr.tobytes()  # bit-exact, NaN payloads and -0.0 included


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4),
                  elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_json_float32_output_round_trips_as_input(arr: np.ndarray) -> None:
    doc = orjson.loads(encode_infer(response({"x": arr}), request())[0])
    x = decode(orjson.dumps({"inputs": doc["outputs"]})).inputs["x"]
    assert x.dtype == np.float32 and x.shape == arr.shape
    np.testing.assert_array_equal(x, arr)


# JSON values; integers stay small enough that a shape made of them is buildable (see
# test_impossible_shapes_are_invalid_input for the shapes that are not)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 300) | st.sampled_from([2**63, -2**63 - 1,
                                                                          2**64, 1e300])
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=12)

KNOWN_DATATYPES = st.sampled_from(["BOOL", "BYTES", *NUMERIC])
datatypes = st.one_of(KNOWN_DATATYPES, KNOWN_DATATYPES, KNOWN_DATATYPES, json_values)
valid_names = st.text(min_size=1, max_size=2)
names = st.one_of(valid_names, valid_names, valid_names, valid_names, json_values)


@st.composite
def consistent_tensors(draw: st.DrawFn) -> dict[str, Any]:
    """Data and shape that agree, of values that may or may not fit the datatype."""
    datatype = draw(datatypes)
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**65, 2**65),
                       st.integers(-3, 300), st.floats(allow_nan=False), st.text(max_size=2))
    leaf = draw(leaves)  # mostly one kind of value per tensor, sometimes a mixture
    values = st.one_of(st.just(leaf), leaves) if draw(st.booleans()) else leaves
    if datatype == "BYTES" and draw(st.booleans()):
        values = st.text(max_size=3)
    data: Any = draw(st.lists(values, min_size=math.prod(shape), max_size=math.prod(shape)))
    if draw(st.booleans()) and shape and math.prod(shape):  # nest it as the shape says
        data = np.array(data, dtype=object).reshape(shape).tolist()
    tensor = {"name": draw(names), "datatype": datatype, "shape": shape, "data": data}
    if draw(st.booleans()):
        del tensor["data"]  # binary instead: as many bytes as the datatype needs, or not
        known = DTYPES.get(datatype, np.int8) if isinstance(datatype, str) else np.int8
        itemsize = 4 if datatype == "BYTES" else np.dtype(known).itemsize
        tensor["parameters"] = {"binary_data_size": draw(st.sampled_from(
            [math.prod(shape) * itemsize, 0, 1, 3]))}
    return tensor


arbitrary_tensors = st.fixed_dictionaries(
    {"name": names, "datatype": datatypes,
     "shape": st.one_of(st.lists(st.integers(-1, 4), max_size=3), json_values)},
    optional={"data": json_values,
              "parameters": st.fixed_dictionaries(
                  {}, optional={"binary_data_size": st.integers(-1, 40) | json_values})})

tensors = st.one_of(consistent_tensors(), consistent_tensors(), arbitrary_tensors)
structured = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(tensors, min_size=1, max_size=3),
                         st.lists(tensors, min_size=1, max_size=3), json_values)},
    optional={"id": st.text(max_size=3) | json_values,
              "parameters": st.dictionaries(st.text(max_size=3), json_values) | json_values,
              "outputs": st.lists(st.fixed_dictionaries({"name": names})) | json_values})
documents = st.one_of(structured, structured, structured, json_values)


def dumps(doc: Any) -> bytes:
    # the standard library writes integers beyond 64 bits, which orjson.dumps refuses
    return json.dumps(doc).encode()


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents, tail=st.binary(max_size=48),
       header=st.sampled_from([None, None, None, "exact", "exact", "exact", "garbage", "-3",
                               "99999"]))
def test_random_json_raises_only_invalid_input(doc: Any, tail: bytes, header: str | None
                                               ) -> None:
    raw = dumps(doc)
    if header is None:
        length = None
    else:
        length = str(len(raw)) if header == "exact" else header
        raw += tail
    try:
        req = decode(raw, length)
    except InvalidInput:
        return
    except FerryError as exc:  # any other Ferry error is a wrong answer too
        raise AssertionError(f"{type(exc).__name__} is not an InvalidInput") from exc
    assert isinstance(req, InferRequest)
    for name, arr in req.inputs.items():
        assert isinstance(name, str) and name
        assert isinstance(arr, np.ndarray)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.none() | st.integers(-2, 70).map(str))
def test_random_bytes_raise_only_invalid_input(raw: bytes, header: str | None) -> None:
    try:
        decode(raw, header)
    except InvalidInput:
        pass
