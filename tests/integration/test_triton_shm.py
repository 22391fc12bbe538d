"""Triton's system shared memory extension through NVIDIA's own client library, unchanged:
``tritonclient.utils.shared_memory`` makes the regions, ``tritonclient.http`` and
``tritonclient.grpc`` (sync and asyncio) register them and infer through them against a
real ``ferry serve``. The server must create nothing in /dev/shm and keep nothing mapped
once regions are unregistered."""

from __future__ import annotations

import asyncio
import shutil
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm (Linux)")

_SLOW = '''
import time

class Slow:
    """y = 2x, after sleeping x[0, 0] seconds (to hold a region while it runs)."""
    def load(self, version_dir):
        pass
    def predict(self, inputs):
        x = inputs["x"]
        time.sleep(float(x.reshape(-1)[0]))
        return {"y": x * 2}
'''


@pytest.fixture(scope="module")
def dev_shm_before() -> set[str]:
    return set(p.name for p in SHM.iterdir())


@pytest.fixture(scope="module")
def shm_server(example_repo: Path, tmp_path_factory: pytest.TempPathFactory,
               dev_shm_before: set[str]) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("shmrepo")
    for name in ("iris", "mlp"):
        shutil.copytree(example_repo / name, root / name)
    (root / "slow" / "1").mkdir(parents=True)
    (root / "slow" / "1" / "model.py").write_text(textwrap.dedent(_SLOW))
    (root / "slow" / "model.yaml").write_text(textwrap.dedent("""\
        runtime: python
        execution: thread
        max_batch_size: 8
        inputs: [{name: x, datatype: FP32, shape: [-1, 2]}]
        outputs: [{name: y, datatype: FP32, shape: [-1, 2]}]
    """))
    proc = ServerProcess(root)
    yield proc
    proc.stop()


class Regions:
    """Client-side regions made with tritonclient.utils.shared_memory, destroyed after."""

    def __init__(self) -> None:
        self.handles: list[shm.SharedMemoryRegion] = []

    def make(self, byte_size: int) -> tuple[shm.SharedMemoryRegion, str]:
        key = f"/ferry-shm-test-{uuid.uuid4().hex[:10]}"
        handle = shm.create_shared_memory_region(key[1:], key, byte_size, create_only=True)
        self.handles.append(handle)
        return handle, key

    def destroy(self) -> None:
        for handle in self.handles:
            shm.destroy_shared_memory_region(handle)


@pytest.fixture()
def regions() -> Iterator[Regions]:
    made = Regions()
    yield made
    made.destroy()


CODES = {"http": {400: "400", 404: "404", "exists": "400"},
         "grpc": {400: "StatusCode.INVALID_ARGUMENT", 404: "StatusCode.NOT_FOUND",
                  "exists": "StatusCode.ALREADY_EXISTS"}}


@pytest.fixture(params=["http", "grpc"])
def proto(request, shm_server):
    """(client module, client, expected error codes) for each protocol."""
    if request.param == "http":
        client = thttp.InferenceServerClient(shm_server.hostport)
        mod = thttp
    else:
        client = tgrpc.InferenceServerClient(shm_server.grpc)
        mod = tgrpc
    yield mod, client, CODES[request.param]
    client.unregister_system_shared_memory()
    client.close()


def _status(client) -> dict[str, dict]:
    status = client.get_system_shared_memory_status()
    if isinstance(status, list):  # HTTP: a list of regions
        return {r["name"]: r for r in status}
    return {name: {"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
            for name, r in status.regions.items()}


def _mapped(server: ServerProcess, key: str) -> bool:
    """Whether the server process maps or holds open the object ``key``."""
    pid = server.proc.pid
    name = key.lstrip("/")
    maps = Path(f"/proc/{pid}/maps").read_text()
    fds = [str(p.readlink()) for p in Path(f"/proc/{pid}/fd").iterdir() if p.is_symlink()]
    return any(line.rstrip().endswith(f"/dev/shm/{name}") or
               line.rstrip().endswith(f"/dev/shm/{name} (deleted)")
               for line in maps.splitlines()) or any(f"/dev/shm/{name}" in fd for fd in fds)


def _reference_mlp(x: np.ndarray, server: ServerProcess) -> tuple[np.ndarray, np.ndarray]:
    client = thttp.InferenceServerClient(server.hostport)
    inp = thttp.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    result = client.infer("mlp", [inp])
    client.close()
    return result.as_numpy("label"), result.as_numpy("probabilities")


def test_server_metadata_lists_the_extension(shm_server):
    http = thttp.InferenceServerClient(shm_server.hostport)
    grpc = tgrpc.InferenceServerClient(shm_server.grpc)
    assert "system_shared_memory" in http.get_server_metadata()["extensions"]
    assert "system_shared_memory" in grpc.get_server_metadata().extensions
    http.close()
    grpc.close()


def test_mlp_inputs_and_outputs_in_shared_memory(proto, shm_server, regions, example_repo):
    import onnxruntime as ort

    mod, client, _ = proto
    x = np.random.default_rng(3).normal(size=(64, 64)).astype(np.float32)
    in_handle, in_key = regions.make(x.nbytes)
    out_size = 64 * 8 + 64 * 10 * 4
    out_handle, out_key = regions.make(out_size)
    shm.set_shared_memory_region(in_handle, [x])
    client.register_system_shared_memory("in", in_key, x.nbytes)
    client.register_system_shared_memory("out", out_key, out_size)
    assert _status(client) == {
        "in": {"name": "in", "key": in_key, "offset": 0, "byte_size": x.nbytes},
        "out": {"name": "out", "key": out_key, "offset": 0, "byte_size": out_size}}
    inp = mod.InferInput("input", [64, 64], "FP32")
    inp.set_shared_memory("in", x.nbytes)
    label = mod.InferRequestedOutput("label")
    label.set_shared_memory("out", 64 * 8)
    proba = mod.InferRequestedOutput("probabilities")
    proba.set_shared_memory("out", 64 * 40, offset=64 * 8)
    result = client.infer("mlp", [inp], outputs=[label, proba])

    session = ort.InferenceSession(str(example_repo / "mlp" / "1" / "model.onnx"))
    want_label, want_proba = session.run(None, {"input": x})
    got_label = shm.get_contents_as_numpy(out_handle, np.int64, [64])
    got_proba = shm.get_contents_as_numpy(out_handle, np.float32, [64, 10], offset=64 * 8)
    np.testing.assert_array_equal(got_label, want_label)
    np.testing.assert_allclose(got_proba, want_proba, rtol=1e-5, atol=1e-6)
    # the response names where the outputs went and carries no data (as Triton's)
    out = result.get_output("probabilities")
    if mod is thttp:
        assert "data" not in out and out["parameters"] == {
            "shared_memory_region": "out", "shared_memory_byte_size": 64 * 40,
            "shared_memory_offset": 64 * 8}
        assert out["shape"] == [64, 10]
    else:
        assert list(out.shape) == [64, 10]
        assert out.parameters["shared_memory_region"].string_param == "out"
        assert out.parameters["shared_memory_offset"].int64_param == 64 * 8
        assert all(raw == b"" for raw in result.get_response().raw_output_contents)
    # the same run with binary tensors over HTTP agrees
    ref_label, ref_proba = _reference_mlp(x, shm_server)
    np.testing.assert_array_equal(got_label, ref_label)
    np.testing.assert_allclose(got_proba, ref_proba, rtol=1e-6)


def test_iris_mixes_shared_memory_and_wire_tensors(proto, regions):
    """One output through shared memory and one on the wire; the wire one must come back
    whole (over gRPC the shared one keeps an empty raw_output_contents slot)."""
    mod, client, _ = proto
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    handle, key = regions.make(4096)
    shm.set_shared_memory_region(handle, [x], offset=1000)
    client.register_system_shared_memory("io", key, 2000, offset=100)  # unaligned offsets
    inp = mod.InferInput("float_input", [2, 4], "FP32")
    inp.set_shared_memory("io", x.nbytes, offset=900)
    proba = mod.InferRequestedOutput("probabilities")
    proba.set_shared_memory("io", 24, offset=0)
    label = mod.InferRequestedOutput("label")
    result = client.infer("iris", [inp], outputs=[proba, label])
    assert result.as_numpy("label").tolist() == [0, 2]
    got = shm.get_contents_as_numpy(handle, np.float32, [2, 3], offset=100)
    np.testing.assert_allclose(got.sum(axis=1), [1, 1], rtol=1e-5)
    assert got[0].argmax() == 0 and got[1].argmax() == 2


def _fails(call, code: str, *words: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        call()
    assert info.value.status() == code, (info.value.status(), info.value.message())
    for word in words:
        assert word in info.value.message(), info.value.message()


def test_bad_regions_and_references(proto, shm_server, regions):
    mod, client, codes = proto
    x = np.ones((2, 4), dtype=np.float32)
    handle, key = regions.make(64)
    shm.set_shared_memory_region(handle, [x])
    # registration: no such object, too small, offset past the end, name taken
    _fails(lambda: client.register_system_shared_memory("r", "/ferry-no-such-object", 8),
           codes[400], "does not exist")
    _fails(lambda: client.register_system_shared_memory("r", key, 65), codes[400],
           "64 bytes, fewer than")
    _fails(lambda: client.register_system_shared_memory("r", key, 8, offset=64), codes[400],
           "fewer than offset 64")
    _fails(lambda: client.register_system_shared_memory("r", "/../etc/passwd", 8), codes[400],
           "not a POSIX shared memory name")
    client.register_system_shared_memory("r", key, 64)
    _fails(lambda: client.register_system_shared_memory("r", key, 32), codes["exists"],
           "already registered")
    assert list(_status(client)) == ["r"]
    _fails(lambda: client.get_system_shared_memory_status("nope"), codes[404], "'nope'")

    def infer(in_offset=0, in_size=32, region="r", out=None):
        inp = mod.InferInput("float_input", [2, 4], "FP32")
        inp.set_shared_memory(region, in_size, offset=in_offset)
        return client.infer("iris", [inp], outputs=out)

    _fails(lambda: infer(in_offset=64), codes[400], "offset 64 is past the end")
    _fails(lambda: infer(in_offset=40), codes[400], "runs past the end")
    _fails(lambda: infer(in_size=16), codes[400], "float_input",
           "shared_memory_byte_size is 16 bytes but shape [2, 4] of FP32 needs 32")
    _fails(lambda: infer(region="never-registered"), codes[404], "never-registered")

    def small_output():
        out = mod.InferRequestedOutput("probabilities")
        out.set_shared_memory("r", 16, offset=32)  # 2x3 floats need 24
        return infer(out=[out])

    _fails(small_output, codes[400], "'probabilities'", "too small")
    assert shm.get_contents_as_numpy(handle, np.float32, [4], offset=32).tolist() == [0] * 4
    # the server goes on serving, over the wire and through the region
    wire = mod.InferInput("float_input", [2, 4], "FP32")
    wire.set_data_from_numpy(x)
    want = client.infer("iris", [wire]).as_numpy("probabilities")
    np.testing.assert_array_equal(infer().as_numpy("probabilities"), want)
    assert shm_server.alive()
    client.unregister_system_shared_memory("r")
    assert _status(client) == {}
    _fails(infer, codes[404], "'r'")
    assert not _mapped(shm_server, key)


def test_unregister_while_in_use(shm_server, regions):
    """The unregister completes at once; the running inference keeps the mapping and
    writes its output; the next request naming the region is refused; then nothing of
    the object stays mapped in the server."""
    client = thttp.InferenceServerClient(shm_server.hostport)
    handle, key = regions.make(16)
    client.register_system_shared_memory("busy", key, 16)
    assert _mapped(shm_server, key)
    x = np.array([[1.5, 2.0]], dtype=np.float32)  # sleeps 1.5 s
    inp = thttp.InferInput("x", [1, 2], "FP32")
    inp.set_data_from_numpy(x)
    out = thttp.InferRequestedOutput("y")
    out.set_shared_memory("busy", 8)
    done: list[object] = []
    runner = threading.Thread(target=lambda: done.append(
        thttp.InferenceServerClient(shm_server.hostport).infer("slow", [inp], outputs=[out])))
    runner.start()
    time.sleep(0.5)
    started = time.monotonic()
    client.unregister_system_shared_memory("busy")
    assert time.monotonic() - started < 0.5  # not waiting for the inference
    assert _status(client) == {}
    assert _mapped(shm_server, key)  # still held by the inference
    _fails(lambda: client.infer("slow", [inp], outputs=[out]), "404", "'busy'")
    runner.join(30)
    assert done and done[0].get_output("y")["parameters"]["shared_memory_region"] == "busy"
    assert shm.get_contents_as_numpy(handle, np.float32, [1, 2]).tolist() == [[3.0, 4.0]]
    assert not _mapped(shm_server, key)
    client.close()


def test_asyncio_clients(shm_server, regions):
    import tritonclient.grpc.aio as agrpc
    import tritonclient.http.aio as ahttp

    x = np.array([[6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    handle, key = regions.make(x.nbytes)
    shm.set_shared_memory_region(handle, [x])

    async def run(mod, address: str) -> list[int]:
        client = mod.InferenceServerClient(address)
        await client.register_system_shared_memory("aio", key, x.nbytes)
        status = await client.get_system_shared_memory_status("aio")
        assert "aio" in (str(status) if mod is agrpc else status[0]["name"])
        inp = mod.InferInput("float_input", [1, 4], "FP32")
        inp.set_shared_memory("aio", x.nbytes)
        result = await client.infer("iris", [inp])
        await client.unregister_system_shared_memory("aio")
        await client.close()
        return result.as_numpy("label").tolist()

    assert asyncio.run(run(ahttp, shm_server.hostport)) == [2]
    assert asyncio.run(run(agrpc, shm_server.grpc)) == [2]


def test_nothing_created_in_dev_shm_and_nothing_left_mapped(shm_server, dev_shm_before):
    """Runs last in this module: every test object is gone (the clients unlinked them; the
    server removed none early and made none of its own), and the server maps or holds
    open nothing in /dev/shm."""
    client = thttp.InferenceServerClient(shm_server.hostport)
    assert _status(client) == {}
    client.close()
    new = set(p.name for p in SHM.iterdir()) - dev_shm_before
    assert not [n for n in new if n.startswith("ferry-shm-test-")]
    pid = shm_server.proc.pid
    maps = Path(f"/proc/{pid}/maps").read_text()
    fds = [str(p.readlink()) for p in Path(f"/proc/{pid}/fd").iterdir() if p.is_symlink()]
    assert "/dev/shm/" not in maps and not [fd for fd in fds if fd.startswith("/dev/shm/")]
    assert shm_server.alive()


def test_stop_with_regions_registered(example_repo, regions):
    """A server stopped with regions registered (one leased by nothing, one unregistered)
    exits cleanly, and the client's objects are still there: the server never unlinks."""
    server = ServerProcess(example_repo)
    try:
        client = thttp.InferenceServerClient(server.hostport)
        keys = [regions.make(64)[1] for _ in range(2)]
        client.register_system_shared_memory("a", keys[0], 64)
        client.register_system_shared_memory("b", keys[1], 32, offset=32)
        client.close()
    finally:
        assert server.stop() == 0
    assert all((SHM / key[1:]).exists() for key in keys)
    assert "Traceback" not in "".join(server.log)
