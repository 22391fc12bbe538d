"""Random ModelInfer messages over real gRPC: never INTERNAL or UNKNOWN, server stays up."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

DATATYPES = ["FP32", "FP64", "INT64", "INT32", "INT8", "UINT8", "BOOL", "BYTES", "FP16", "X"]
MODELS = ["iris", "tabular", "strings", "fixed", "echo", "nope", ""]
NAMES = ["float_input", "input", "text", "m", "x", ""]

tensors = st.tuples(st.sampled_from(NAMES), st.sampled_from(DATATYPES),
                    st.lists(st.integers(0, 70), max_size=4),
                    st.none() | st.binary(max_size=300),
                    st.lists(st.floats(allow_nan=True, width=32), max_size=40))


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.grpc)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(model=st.sampled_from(MODELS), version=st.sampled_from(["", "1", "2", "x", "99"]),
       items=st.lists(tensors, max_size=3), raw=st.booleans())
def test_random_infer_messages(stub, model, version, items, raw):
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, datatype, shape, blob, floats in items:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            request.raw_input_contents.append(blob or b"")
        else:
            tensor.contents.fp32_contents.extend(floats)
    try:
        stub.ModelInfer(request, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), \
            exc.details()


def test_server_alive_after_grpc_fuzzing(server):
    assert server.alive()
