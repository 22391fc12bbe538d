"""The classification extension's ranking and its parameter checks, case by case."""

from __future__ import annotations

import numpy as np
import pytest

from ferry.errors import InvalidInput
from ferry.routing.classification import requested, top_k
from ferry.types import RequestedOutput, Signature, TensorSpec

SIG = Signature((TensorSpec("x", "FP32", (-1, 4)),),
                (TensorSpec("p", "FP32", (-1, 4)), TensorSpec("label", "BYTES", (-1,)),
                 TensorSpec("flag", "BOOL", (-1,)), TensorSpec("n", "INT64", (-1, 3))))


@pytest.mark.parametrize(("values", "k", "batched", "labels", "expected"), [
    # Triton's own example: [1, 5, 10, 4] ranks 2, 1, 3, 0
    (np.array([1, 5, 10, 4], np.float32), 2, False, None, ["10.000000:2", "5.000000:1"]),
    (np.array([1, 5, 10, 4], np.int32), 4, False, None, ["10:2", "5:1", "4:3", "1:0"]),
    # k above the number of classes gives them all (as Triton does)
    (np.array([[0.1, 0.7, 0.2]], np.float32), 5, True, None,
     [["0.700000:1", "0.200000:2", "0.100000:0"]]),
    # each row ranked on its own; shape [rows, k]
    (np.array([[0.1, 0.9], [0.8, 0.2]], np.float64), 1, True, None,
     [["0.900000:1"], ["0.800000:0"]]),
    # labels: line i names class i; a class past the last line has none
    (np.array([[0.1, 0.2, 0.7]], np.float32), 3, True, ["cat", "dog"],
     [["0.700000:2", "0.200000:1:dog", "0.100000:0:cat"]]),
    # equal values: lower index first
    (np.array([3, 7, 7, 3], np.uint8), 4, False, None, ["7:1", "7:2", "3:0", "3:3"]),
    # unsigned and minimum integers rank without overflow
    (np.array([0, 2**64 - 1, 5], np.uint64), 2, False, None,
     [f"{2**64 - 1}:1", "5:2"]),
    (np.array([-2**63, 0, -1], np.int64), 3, False, None, ["0:1", "-1:2", f"{-2**63}:0"]),
    # NaN ranks lowest; infinities are values
    (np.array([np.nan, -np.inf, 1.0, np.inf], np.float32), 4, False, None,
     ["inf:3", "1.000000:2", "-inf:1", "nan:0"]),
    # a batching model's row of more dimensions is ranked whole (flattened)
    (np.array([[[1, 9], [5, 3]]], np.int16), 2, True, None, [["9:1", "5:2"]]),
    # a model without a batch dimension ranks the whole tensor
    (np.array([[1, 9], [5, 3]], np.int16), 3, False, None, ["9:1", "5:2", "3:3"]),
    # six decimals, as C's %f
    (np.array([1 / 3, 2e-7, 123456.789], np.float64), 3, False, None,
     ["123456.789000:2", "0.333333:0", "0.000000:1"]),
    (np.array([0.5, 0.25], np.float16), 1, False, ["half", "quarter"], ["0.500000:0:half"]),
])
def test_top_k(values, k, batched, labels, expected):
    out = top_k(values, k, batched, labels)
    assert out.dtype == object
    assert out.tolist() == expected


@pytest.mark.parametrize("values", [np.array([b"a"], dtype=object), np.array([True, False])])
def test_top_k_refuses_non_numeric_values(values):
    with pytest.raises(InvalidInput, match="output 'y'.*numeric"):
        top_k(values, 1, False, None, "y")


@pytest.mark.parametrize(("params", "expected"), [
    ({}, {}),
    ({"binary_data": True}, {}),
    ({"classification": 1}, {"p": 1}),
    ({"classification": 10, "binary_data": False}, {"p": 10}),
])
def test_requested(params, expected):
    assert requested([RequestedOutput("p", params)], SIG) == expected


@pytest.mark.parametrize(("name", "k", "words"), [
    ("p", 0, "output 'p': classification must be a positive integer"),
    ("p", -3, "output 'p': classification must be a positive integer"),
    ("p", 2.5, "output 'p': classification must be a positive integer"),
    ("p", "3", "output 'p': classification must be a positive integer"),
    ("p", True, "output 'p': classification must be a positive integer"),
    ("label", 1, "output 'label' is BYTES; classification ranks numeric outputs only"),
    ("flag", 1, "output 'flag' is BOOL"),
])
def test_requested_refuses(name, k, words):
    with pytest.raises(InvalidInput) as info:
        requested([RequestedOutput(name, {"classification": k})], SIG)
    assert words in info.value.message
    assert info.value.http_status == 400
