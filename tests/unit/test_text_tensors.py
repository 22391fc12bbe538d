"""BYTES tensors as text: decoding rules, and the per-request check that keeps a request
holding bytes that are not UTF-8 out of a batch."""

from __future__ import annotations

import numpy as np
import pytest

from ferry.datatypes import as_text
from ferry.errors import DatatypeMismatch
from ferry.scheduler.tensors import check_inputs
from ferry.types import Signature, TensorSpec


def objects(*values: object) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr


@pytest.mark.parametrize(("given", "expected"), [
    (objects(b"12", b"", b"a\x00b", "caf\u00e9".encode()), ["12", "", "a\x00b", "caf\u00e9"]),
    (objects("already", b"mixed"), ["already", "mixed"]),
    (np.array(["x", "y\u65e5"]), ["x", "y\u65e5"]),  # numpy unicode, as from an .npz file
    (objects(), []),
])
def test_as_text_decodes_utf8_exactly(given, expected):
    out = as_text(given, "input 't'")
    assert out.dtype == object and out.tolist() == expected
    assert all(type(v) is str for v in out.tolist())


def test_as_text_keeps_shape_and_returns_decoded_arrays_as_they_are():
    arr = objects(b"a", b"b", b"c", b"d").reshape(2, 2)
    out = as_text(arr, "input 't'")
    assert out.shape == (2, 2) and out.tolist() == [["a", "b"], ["c", "d"]]
    assert as_text(out, "input 't'") is out


@pytest.mark.parametrize(("given", "words"), [
    (objects(b"ok", b"\xff\xfe"), "input 't': element 1 is not valid UTF-8 (invalid start byte"),
    (objects(b"\xc3"), "input 't': element 0 is not valid UTF-8 (unexpected end of data"),
    (objects("ok", 5), "input 't': element 1 is int, not a string"),
])
def test_as_text_names_the_input_and_element(given, words):
    with pytest.raises(DatatypeMismatch) as info:
        as_text(given, "input 't'")
    assert words in info.value.message and info.value.http_status == 400


def test_check_inputs_decodes_text_inputs_only():
    sig = Signature((TensorSpec("t", "BYTES", (-1,), text=True),
                     TensorSpec("raw", "BYTES", (-1,)), TensorSpec("x", "FP32", (-1,))), ())
    inputs = {"t": objects(b"a", b"b"), "raw": objects(b"\xff", b""),
              "x": np.zeros(2, np.float32)}
    x = inputs["x"]
    assert check_inputs(sig, inputs, 8) == 2
    assert inputs["t"].tolist() == ["a", "b"]  # decoded once, here
    assert inputs["raw"].tolist() == [b"\xff", b""]  # not text: bytes as sent
    assert inputs["x"] is x
    with pytest.raises(DatatypeMismatch, match="input 't': element 0 is not valid UTF-8"):
        check_inputs(sig, {**inputs, "t": objects(b"\xff", b"b")}, 8)
