"""protocols/shared_memory.py: the pure checks by enumeration, and the registry over real
POSIX shared memory objects in /dev/shm (made here with os.open, removed after each test)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from ferry.errors import (Forbidden, MalformedRequest, RegionExists, RegionNotFound,
                          ShapeMismatch, SharedMemoryError, Unauthorized)
from ferry.protocols.shared_memory import (SHM_DIR, SharedMemoryRegistry, TensorRef,
                                           check_caller, check_key, check_span, tensor_ref)
from ferry.types import RequestedOutput

pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir(), reason="needs /dev/shm (Linux)")


# -- pure checks ---------------------------------------------------------------------------
@pytest.mark.parametrize("key, name", [("/in0", "in0"), ("in0", "in0"), ("/a.b-c_1", "a.b-c_1"),
                                       ("/" + "x" * 255, "x" * 255)])
def test_check_key_accepts_posix_names(key, name):
    assert check_key(key) == name


@pytest.mark.parametrize("key", ["", "/", "//", "/a/b", "a/b", "../etc/passwd", "/..", ".",
                                 "/.", "/a\0b", "/" + "x" * 256, None, 5, b"/in0"])
def test_check_key_refuses_everything_else(key):
    with pytest.raises(SharedMemoryError, match="key"):
        check_key(key)


R, S, OFF = "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"


@pytest.mark.parametrize("params, expected", [
    (None, None), ({}, None), ({"binary_data_size": 4}, None), ({"binary_data": True}, None),
    ({R: "in", S: 16}, TensorRef("in", 0, 16)),
    ({R: "in", S: 16, OFF: 32}, TensorRef("in", 32, 16)),
    ({R: "in", S: 0, OFF: 0, "binary_data": False}, TensorRef("in", 0, 0)),
])
def test_tensor_ref_reads_the_parameters(params, expected):
    assert tensor_ref(params, "input 'x'") == expected


@pytest.mark.parametrize("params, message", [
    ({S: 16}, "need shared_memory_region"),
    ({OFF: 0}, "need shared_memory_region"),
    ({S: 16, OFF: 0}, "need shared_memory_region"),
    ({R: "in"}, "needs shared_memory_byte_size"),
    ({R: "in", OFF: 8}, "needs shared_memory_byte_size"),
    ({R: "", S: 16}, "region name"),
    ({R: 3, S: 16}, "region name"),
    ({R: "in", S: -1}, "byte_size must be an integer >= 0"),
    ({R: "in", S: True}, "byte_size must be an integer"),
    ({R: "in", S: "16"}, "byte_size must be an integer"),
    ({R: "in", S: 1.5}, "byte_size must be an integer"),
    ({R: "in", S: 16, OFF: -8}, "offset must be an integer >= 0"),
    ({R: "in", S: 16, OFF: None}, "offset must be an integer"),
])
def test_tensor_ref_refuses_partial_or_mistyped_parameters(params, message):
    with pytest.raises(MalformedRequest, match=message) as info:
        tensor_ref(params, "input 'x'")
    assert "input 'x'" in info.value.message


@pytest.mark.parametrize("size, offset, byte_size, ok", [
    (64, 0, 64, True), (64, 0, 0, True), (64, 63, 1, True), (64, 32, 32, True),
    (64, 0, 65, False), (64, 63, 2, False), (64, 64, 0, False), (64, 64, 1, False),
    (64, 1000, 8, False), (0, 0, 0, False),
])
def test_check_span(size, offset, byte_size, ok):
    if ok:
        check_span("r", size, offset, byte_size, "input 'x'")
    else:
        with pytest.raises(SharedMemoryError, match="past the end of region 'r'"):
            check_span("r", size, offset, byte_size, "input 'x'")


@pytest.mark.parametrize("host, authorization, token, outcome", [
    ("127.0.0.1", None, None, None), ("127.0.0.2", None, None, None), ("::1", None, None, None),
    ("[::1]", None, None, None), ("localhost", None, "t", None),
    ("10.0.0.5", None, None, Forbidden), (None, None, None, Forbidden),
    ("example.org", None, None, Forbidden),
    ("10.0.0.5", "Bearer t", "t", None), ("10.0.0.5", None, "t", Unauthorized),
    ("10.0.0.5", "Bearer x", "t", Unauthorized), ("10.0.0.5", "t", "t", Unauthorized),
])
def test_check_caller(host, authorization, token, outcome):
    if outcome is None:
        check_caller(host, authorization, token)
    else:
        with pytest.raises(outcome):
            check_caller(host, authorization, token)


# -- the registry over real objects --------------------------------------------------------
@pytest.fixture()
def objects() -> Iterator[callable]:
    made: list[str] = []

    def make(size: int, data: bytes = b"") -> str:
        key = f"/ferry-test-{uuid.uuid4().hex[:12]}"
        fd = os.open(SHM_DIR / key[1:], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            os.pwrite(fd, data, 0)
        finally:
            os.close(fd)
        made.append(key)
        return key

    yield make
    for key in made:
        (SHM_DIR / key[1:]).unlink(missing_ok=True)


def test_register_status_unregister(objects):
    key = objects(4096)
    reg = SharedMemoryRegistry()
    reg.register("a", key, 0, 4096)
    reg.register("b", key, 100, 16)  # two regions of one object
    assert reg.status() == [{"name": "a", "key": key, "offset": 0, "byte_size": 4096},
                            {"name": "b", "key": key, "offset": 100, "byte_size": 16}]
    assert reg.status("b") == [{"name": "b", "key": key, "offset": 100, "byte_size": 16}]
    reg.unregister("a")
    reg.unregister("a")  # unknown: nothing to do, as in Triton
    assert [r["name"] for r in reg.status()] == ["b"]
    with pytest.raises(RegionNotFound, match="'a'"):
        reg.status("a")
    reg.unregister()
    assert reg.status() == []
    assert (SHM_DIR / key[1:]).exists()  # the object is the client's: never removed


def test_register_refusals_leave_nothing_behind(objects, tmp_path):
    key = objects(128)
    reg = SharedMemoryRegistry()
    reg.register("a", key, 0, 64)
    cases = [
        (("a", key, 0, 64), RegionExists, "already registered"),
        (("m", "/ferry-test-missing-object", 0, 8), SharedMemoryError, "does not exist"),
        (("s", key, 0, 129), SharedMemoryError, "has 128 bytes, fewer than"),
        (("o", key, 128, 1), SharedMemoryError, "fewer than offset 128"),
        (("z", key, 0, 0), SharedMemoryError, "byte_size must be an integer >= 1"),
        (("n", key, -1, 8), SharedMemoryError, "offset must be"),
        (("t", key, "0", 8), SharedMemoryError, "offset must be"),
        (("p", "/../etc/passwd", 0, 8), SharedMemoryError, "not a POSIX shared memory name"),
        (("", key, 0, 8), SharedMemoryError, "name"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            reg.register(*args)
    assert [r["name"] for r in reg.status()] == ["a"]


def test_register_refuses_a_symlink_in_dev_shm(objects, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"s" * 64)
    link = SHM_DIR / f"ferry-test-link-{uuid.uuid4().hex[:8]}"
    link.symlink_to(secret)
    try:
        with pytest.raises(SharedMemoryError, match="cannot open"):
            SharedMemoryRegistry().register("l", "/" + link.name, 0, 8)
    finally:
        link.unlink()


def test_read_input_copies_at_any_offset(objects):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    key = objects(8192, b"\0" * 5000 + x.tobytes())  # past a page: an unaligned map offset
    reg = SharedMemoryRegistry()
    reg.register("in", key, 4999, 1000)
    arr = reg.read_input(TensorRef("in", 1, x.nbytes), "FP32", [3, 4], "input 'x'")
    np.testing.assert_array_equal(arr, x)
    fd = os.open(SHM_DIR / key[1:], os.O_RDWR)
    os.pwrite(fd, b"\xff" * 48, 5000)  # the client writes its next request
    os.close(fd)
    np.testing.assert_array_equal(arr, x)  # the decoded tensor is a copy
    reg.close()


def test_read_input_refusals(objects):
    key = objects(64)
    reg = SharedMemoryRegistry()
    reg.register("in", key, 0, 64)
    with pytest.raises(ShapeMismatch, match="shared_memory_byte_size is 32 bytes but shape"):
        reg.read_input(TensorRef("in", 0, 32), "FP32", [2, 2], "input 'x'")
    with pytest.raises(SharedMemoryError, match="offset 64 is past the end"):
        reg.read_input(TensorRef("in", 64, 16), "FP32", [2, 2], "input 'x'")
    with pytest.raises(SharedMemoryError, match="runs past the end"):
        reg.read_input(TensorRef("in", 56, 16), "FP32", [2, 2], "input 'x'")
    with pytest.raises(RegionNotFound, match="'nope'"):
        reg.read_input(TensorRef("nope", 0, 16), "FP32", [2, 2], "input 'x'")
    with pytest.raises(MalformedRequest, match="BYTES element"):  # a truncated prefix
        reg.read_input(TensorRef("in", 0, 6), "BYTES", [1], "input 'x'")


def test_bytes_in_and_out(objects):
    from ferry.protocols._arrays import to_binary

    words = np.array([b"ab", b"", b"ferry"], dtype=object)
    raw = to_binary(words, "BYTES")
    key = objects(256, raw)
    reg = SharedMemoryRegistry()
    reg.register("r", key, 0, 256)
    assert reg.read_input(TensorRef("r", 0, len(raw)), "BYTES", [3], "x").tolist() == \
        [b"ab", b"", b"ferry"]
    leases = reg.lease_outputs([RequestedOutput("y", {R: "r", S: 100, OFF: 100})])
    reg.write_outputs(leases, {"y": np.array([b"xyz"], dtype=object)})
    reg.release(leases)
    assert reg.read_input(TensorRef("r", 100, 7), "BYTES", [1], "x").tolist() == [b"xyz"]


def test_output_leases_keep_an_unregistered_region_mapped(objects):
    key = objects(64)
    reg = SharedMemoryRegistry()
    reg.register("out", key, 0, 64)
    leases = reg.lease_outputs([RequestedOutput("y", {R: "out", S: 16}),
                                RequestedOutput("z", {})])
    assert leases is not None and [lease.name for lease in leases] == ["y"]
    region = leases[0].region
    reg.unregister("out")  # completes at once ...
    assert reg.status() == []
    with pytest.raises(RegionNotFound):
        reg.lease_outputs([RequestedOutput("y", {R: "out", S: 16})])
    assert not region._map.closed  # ... while the in-flight inference keeps its mapping
    reg.write_outputs(leases, {"y": np.arange(4, dtype=np.float32)})
    reg.release(leases)
    assert region._map.closed
    with open(SHM_DIR / key[1:], "rb") as f:
        assert np.frombuffer(f.read(16), np.float32).tolist() == [0, 1, 2, 3]


def test_output_too_small_writes_nothing(objects):
    key = objects(64)
    reg = SharedMemoryRegistry()
    reg.register("out", key, 0, 64)
    leases = reg.lease_outputs([RequestedOutput("a", {R: "out", S: 8}),
                                RequestedOutput("b", {R: "out", S: 4, OFF: 8})])
    with pytest.raises(SharedMemoryError, match="'b': shared_memory_byte_size 4 is too small"):
        reg.write_outputs(leases, {"a": np.ones(2, np.float32), "b": np.ones(2, np.float32)})
    reg.release(leases)
    with open(SHM_DIR / key[1:], "rb") as f:
        assert f.read(16) == b"\0" * 16
    assert leases[0].region.leases == 0


def test_a_failed_lease_releases_the_ones_taken(objects):
    key = objects(64)
    reg = SharedMemoryRegistry()
    reg.register("out", key, 0, 64)
    with pytest.raises(RegionNotFound):
        reg.lease_outputs([RequestedOutput("a", {R: "out", S: 8}),
                           RequestedOutput("b", {R: "gone", S: 8})])
    with pytest.raises(SharedMemoryError, match="past the end"):
        reg.lease_outputs([RequestedOutput("a", {R: "out", S: 8}),
                           RequestedOutput("b", {R: "out", S: 8, OFF: 60})])
    reg.unregister("out")
    assert reg._regions == {}


def test_close_unmaps_everything_and_turned_off_refuses(objects):
    key = objects(64)
    reg = SharedMemoryRegistry()
    reg.register("a", key, 0, 64)
    leases = reg.lease_outputs([RequestedOutput("y", {R: "a", S: 8})])
    reg.close()
    assert leases[0].region._map.closed and reg.status() == []
    with pytest.raises(Forbidden, match="turned off"):
        SharedMemoryRegistry(enabled=False).authorize("127.0.0.1", None)


# -- the codecs' hooks ---------------------------------------------------------------------
def test_grpc_raw_contents_skip_shared_memory_inputs(objects):
    """As in Triton (and what tritonclient.grpc sends): an input in shared memory takes no
    raw_input_contents entry, so the raw entries belong to the other inputs in order."""
    from tritonclient.grpc import service_pb2 as pb

    from ferry.protocols.grpc_codec import decode_infer, encode_infer
    from ferry.types import InferResponse

    a = np.arange(4, dtype=np.float32)
    key = objects(64, a.tobytes())
    reg = SharedMemoryRegistry()
    reg.register("in", key, 0, 64)
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="w", datatype="INT32", shape=[2])
    shared = request.inputs.add(name="a", datatype="FP32", shape=[4])
    shared.parameters[R].string_param = "in"
    shared.parameters[S].int64_param = 16
    request.inputs.add(name="z", datatype="INT64", shape=[1])
    request.raw_input_contents.extend([np.array([7, 8], np.int32).tobytes(),
                                       np.array([9], np.int64).tobytes()])
    decoded = decode_infer(request, reg)
    assert decoded.inputs["w"].tolist() == [7, 8] and decoded.inputs["z"].tolist() == [9]
    assert decoded.inputs["a"].tolist() == [0, 1, 2, 3]
    request.raw_input_contents.append(b"\0" * 8)  # one per wire input, not one per input
    with pytest.raises(MalformedRequest, match="3 entries but 2 inputs"):
        decode_infer(request, reg)
    del request.raw_input_contents[2]
    shared.contents.fp32_contents.extend([1, 2, 3, 4])
    with pytest.raises(MalformedRequest, match="'a': give either shared memory"):
        decode_infer(request, reg)
    shared.ClearField("contents")
    with pytest.raises(MalformedRequest, match="not served"):
        decode_infer(request, None)
    # outputs: the shared one keeps an empty slot so the wire ones stay aligned
    decoded.outputs = [RequestedOutput("p", {R: "in", S: 16}), RequestedOutput("q", {})]
    message = encode_infer(InferResponse("m", "1", {"p": a, "q": a + 1}), decoded)
    assert list(message.raw_output_contents) == [b"", (a + 1).tobytes()]
    assert message.outputs[0].parameters[R].string_param == "in"


def test_v2_json_refuses_shared_memory_and_data_together(objects):
    import orjson

    from ferry.protocols.v2_json import decode_infer
    from ferry.types import ModelRef

    key = objects(64)
    reg = SharedMemoryRegistry()
    reg.register("in", key, 0, 64)
    tensor = {"name": "a", "datatype": "FP32", "shape": [2],
              "parameters": {R: "in", S: 8}}
    body = orjson.dumps({"inputs": [tensor]})
    assert decode_infer(body, ModelRef("m"), None, reg).inputs["a"].tolist() == [0, 0]
    with pytest.raises(MalformedRequest, match="not served"):
        decode_infer(body, ModelRef("m"))
    with pytest.raises(MalformedRequest, match="either shared memory parameters or data"):
        decode_infer(orjson.dumps({"inputs": [{**tensor, "data": [1, 2]}]}), ModelRef("m"),
                     None, reg)
    with pytest.raises(MalformedRequest, match="needs shared_memory_byte_size"):
        decode_infer(orjson.dumps({"inputs": [{**tensor, "parameters": {R: "in"}}]}),
                     ModelRef("m"), None, reg)
