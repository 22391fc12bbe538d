"""TF Serving's REST predict format: ``instances`` (row) and ``inputs`` (columnar)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pytest

from ferry.errors import DatatypeMismatch, InvalidInput, MalformedRequest, ShapeMismatch
from ferry.protocols.tfserving_json import decode_predict, encode_predict
from ferry.types import InferResponse, ModelRef, Signature, TensorSpec

MODEL = ModelRef("m")
ONE = Signature((TensorSpec("x", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (-1,)),))
TWO = Signature((TensorSpec("a", "FP64", (-1, 2)), TensorSpec("n", "INT64", (-1,))),
                (TensorSpec("y", "FP32", (-1,)),))
TEXT = Signature((TensorSpec("s", "BYTES", (-1,)),), (TensorSpec("n", "INT64", (-1,)),))
MIXED = Signature((TensorSpec("s", "BYTES", (-1,)), TensorSpec("k", "INT32", (-1,))), ())


def decode(doc: Any, signature: Signature = ONE) -> tuple[dict[str, np.ndarray], bool]:
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    request, row_format = decode_predict(raw, MODEL, signature)
    assert request.model == MODEL
    return request.inputs, row_format


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


# -- row format ----------------------------------------------------------------------

def test_instances_single_input() -> None:
    inputs, row = decode({"instances": [[1, 2, 3], [4, 5, 6.5]]})
    assert row is True
    assert list(inputs) == ["x"]
    assert inputs["x"].dtype == np.float32 and inputs["x"].shape == (2, 3)
    np.testing.assert_array_equal(inputs["x"], [[1, 2, 3], [4, 5, 6.5]])


def test_instances_single_input_named_rows() -> None:
    inputs, row = decode({"instances": [{"x": [1, 2, 3]}, {"x": [4, 5, 6]}]})
    assert row is True
    np.testing.assert_array_equal(inputs["x"], [[1, 2, 3], [4, 5, 6]])


def test_instances_multiple_inputs() -> None:
    inputs, row = decode({"instances": [{"a": [1.5, 2], "n": 7}, {"a": [3, 4], "n": 8}]}, TWO)
    assert row is True
    assert inputs["a"].dtype == np.float64 and inputs["a"].shape == (2, 2)
    np.testing.assert_array_equal(inputs["a"], [[1.5, 2], [3, 4]])
    assert inputs["n"].dtype == np.int64
    np.testing.assert_array_equal(inputs["n"], [7, 8])


def test_instances_empty_list_single_input() -> None:
    inputs, row = decode({"instances": []})
    assert row is True and inputs["x"].shape == (0,) and inputs["x"].dtype == np.float32


def test_instances_bytes_from_plain_strings() -> None:
    inputs, _ = decode({"instances": ["hello", "wörld"]}, TEXT)
    assert inputs["s"].dtype == object
    assert inputs["s"].tolist() == [b"hello", "wörld".encode()]


def test_instances_b64_inside_named_rows() -> None:
    inputs, _ = decode({"instances": [{"s": b64(b"\x00\xffhi"), "k": 1},
                                      {"s": "plain", "k": 2}]}, MIXED)
    assert inputs["s"].tolist() == [b"\x00\xffhi", b"plain"]
    assert inputs["k"].dtype == np.int32
    np.testing.assert_array_equal(inputs["k"], [1, 2])


def test_instances_b64_rows_single_input() -> None:
    inputs, row = decode({"instances": [b64(b"hello"), b64(b"\x01\x02"), "plain"]}, TEXT)
    assert row is True
    assert inputs["s"].tolist() == [b"hello", b"\x01\x02", b"plain"]


# -- columnar format -------------------------------------------------------------------

def test_inputs_single_value() -> None:
    inputs, row = decode({"inputs": [[1, 2, 3]]})
    assert row is False
    assert inputs["x"].shape == (1, 3) and inputs["x"].dtype == np.float32


def test_inputs_dict() -> None:
    inputs, row = decode({"inputs": {"a": [[1, 2], [3, 4], [5, 6]], "n": [1, 2, 3]}}, TWO)
    assert row is False
    assert inputs["a"].shape == (3, 2) and inputs["n"].tolist() == [1, 2, 3]


def test_inputs_single_input_given_by_name() -> None:
    inputs, _ = decode({"inputs": {"x": [[1, 2, 3]]}})
    assert inputs["x"].shape == (1, 3)


def test_inputs_b64_value_for_single_bytes_input() -> None:
    inputs, _ = decode({"inputs": b64(b"raw\x00")}, TEXT)
    assert inputs["s"].shape == () and inputs["s"].item() == b"raw\x00"


def test_inputs_b64_list_for_single_bytes_input() -> None:
    inputs, _ = decode({"inputs": [b64(b"a"), b64(b"bc"), "d"]}, TEXT)
    assert inputs["s"].tolist() == [b"a", b"bc", b"d"]


def test_inputs_b64_inside_dict() -> None:
    inputs, _ = decode({"inputs": {"s": [b64(b"xy")], "k": [5]}}, MIXED)
    assert inputs["s"].tolist() == [b"xy"] and inputs["k"].tolist() == [5]


def test_unknown_input_names_pass_through_for_the_checks() -> None:
    inputs, _ = decode({"inputs": {"zzz": [1, 2]}})
    assert list(inputs) == ["zzz"]  # check_inputs later says UnknownInput


# -- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("doc, signature, error, fragment", [
    (b"{not json", ONE, MalformedRequest, "not valid JSON"),
    ([1, 2], ONE, MalformedRequest, "exactly one of 'instances'"),
    ({}, ONE, MalformedRequest, "exactly one of 'instances'"),
    ({"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, ONE, MalformedRequest,
     "exactly one of 'instances'"),
    ({"instance": [[1, 2, 3]]}, ONE, MalformedRequest, "exactly one of"),
    ({"instances": {"x": [1, 2, 3]}}, ONE, MalformedRequest, "'instances' must be a list"),
    ({"instances": [[1, 2], 3]}, TWO, MalformedRequest, "instances[0] must be an object"),
    ({"instances": [{"a": [1, 2], "n": 1}, [1, 2]]}, TWO, MalformedRequest,
     "instances[1] must be an object"),
    ({"instances": [{"a": [1, 2], "n": 1}, {"a": [3, 4]}]}, TWO, ShapeMismatch,
     "instances[1] has inputs ['a'] but instances[0] has ['a', 'n']"),
    ({"instances": [{"a": [1, 2], "n": 1}, {"a": [3, 4], "m": 1}]}, TWO, ShapeMismatch,
     "instances[1] has inputs"),
    ({"inputs": [[1, 2]]}, TWO, MalformedRequest, "'inputs' must be an object keyed by input"),
    ({"inputs": {"s": {"b64": "not base64!"}}}, TEXT, MalformedRequest,
     "input 's': 'b64' is not valid base64"),
    ({"inputs": {"s": {"b64": 12}}}, TEXT, MalformedRequest, "input 's': 'b64'"),
    ({"instances": [[1, 2, 3], [4, 5]]}, ONE, ShapeMismatch, "input 'x': data is not a regular"),
    ({"instances": [["a", "b", "c"]]}, ONE, DatatypeMismatch,
     "input 'x': datatype is FP32 but data holds strings"),
    ({"instances": [{"a": [1, 2], "n": 1.5}]}, TWO, DatatypeMismatch,
     "input 'n': datatype is INT64 but data holds floats"),
    ({"instances": [1, 2]}, TEXT, DatatypeMismatch, "input 's': datatype is BYTES"),
])
def test_decode_errors(doc: Any, signature: Signature, error: type[InvalidInput],
                       fragment: str) -> None:
    with pytest.raises(error) as info:
        decode(doc, signature)
    assert fragment in info.value.message
    assert isinstance(info.value, InvalidInput)


# -- encoding -------------------------------------------------------------------------------

def response(**outputs: np.ndarray) -> InferResponse:
    return InferResponse("m", "1", dict(outputs))


def test_encode_row_format_single_output() -> None:
    y = np.array([[0.5, 1.0], [2.0, 3.5]], dtype=np.float32)
    assert orjson.loads(encode_predict(response(y=y), True)) == {
        "predictions": [[0.5, 1.0], [2.0, 3.5]]}


def test_encode_row_format_single_vector_output() -> None:
    y = np.array([1, 0, 2], dtype=np.int64)
    assert orjson.loads(encode_predict(response(label=y), True)) == {"predictions": [1, 0, 2]}


def test_encode_row_format_multiple_outputs() -> None:
    label = np.array([1, 0], dtype=np.int64)
    proba = np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float64)
    assert orjson.loads(encode_predict(response(label=label, proba=proba), True)) == {
        "predictions": [{"label": 1, "proba": [0.25, 0.75]},
                        {"label": 0, "proba": [1.0, 0.0]}]}


def test_encode_columnar_single_output() -> None:
    y = np.arange(6, dtype=np.int32).reshape(3, 2)
    assert orjson.loads(encode_predict(response(y=y), False)) == {
        "outputs": [[0, 1], [2, 3], [4, 5]]}


def test_encode_columnar_multiple_outputs() -> None:
    label = np.array([1, 0], dtype=np.int64)
    proba = np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32)
    assert orjson.loads(encode_predict(response(label=label, proba=proba), False)) == {
        "outputs": {"label": [1, 0], "proba": [[0.25, 0.75], [1.0, 0.0]]}}


def test_encode_bytes_non_finite_and_fp16() -> None:
    s = np.array([[b"ab"], [b"c"]], dtype=object)
    f = np.array([np.nan, 0.5], dtype=np.float16)
    doc = orjson.loads(encode_predict(response(s=s, f=f), True))
    assert doc == {"predictions": [{"s": ["ab"], "f": "nan"}, {"s": ["c"], "f": 0.5}]}
    doc = orjson.loads(encode_predict(response(s=s), False))
    assert doc == {"outputs": [["ab"], ["c"]]}


def test_row_round_trip_through_the_codec() -> None:
    x = np.array([[1.5, -2, 3], [4, 5, 6]], dtype=np.float32)
    body = encode_predict(response(x=x), True)
    inputs, _ = decode({"instances": orjson.loads(body)["predictions"]})
    np.testing.assert_array_equal(inputs["x"], x)
