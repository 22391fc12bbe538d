"""Random bodies and headers at every POST route: never a 5xx, and the server stays up."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DATATYPES = ["FP32", "FP64", "INT64", "INT8", "BOOL", "BYTES", "UINT8", "FP16", "nope", 3]
ROUTES = ["/v2/models/iris/infer", "/v2/models/tabular/versions/1/infer",
          "/v2/models/strings/infer", "/v2/models/fixed/infer", "/v1/models/iris:predict",
          "/v1/models/strings:predict", "/v2/repository/index", "/v2/models/echo/infer"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=30)

shapes = st.lists(st.integers(-2, 70), max_size=4) | json_values
tensors = st.fixed_dictionaries(
    {"name": st.sampled_from(["float_input", "input", "x", "text", "m", "?"]) | json_values,
     "shape": shapes, "datatype": st.sampled_from(DATATYPES)},
    optional={"data": json_values | st.lists(st.floats(allow_nan=False), max_size=300),
              "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-5, 64)})
              | json_values})
v2_bodies = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=3) | json_values},
    optional={"id": json_values, "parameters": json_values,
              "outputs": st.lists(st.fixed_dictionaries({"name": json_values}), max_size=2)
              | json_values})
tf_bodies = st.dictionaries(st.sampled_from(["instances", "inputs", "x"]), json_values,
                            max_size=2)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(ROUTES), body=v2_bodies | tf_bodies | json_values,
       binary=st.binary(max_size=64), header=st.none() | st.integers(-3, 400))
def test_random_bodies_never_5xx(server, route, body, binary, header):
    content = json.dumps(body).encode() + binary
    headers = {} if header is None else {"Inference-Header-Content-Length": str(header)}
    response = server.client.post(route, content=content, headers=headers)
    assert response.status_code < 500 or response.status_code == 503, response.text
    assert isinstance(response.json(), (dict, list))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=200))
def test_random_bytes_never_5xx(server, raw):
    response = server.client.post("/v2/models/iris/infer", content=raw)
    assert 400 <= response.status_code < 500


def test_server_alive_after_fuzzing(server):
    assert server.alive()
