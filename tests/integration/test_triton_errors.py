"""Errors worded as Triton words them, so that Triton's client programs (which match the
start of the message) work against Ferry: ``Request for unknown model: 'x' is not found``
(HTTP 404, gRPC NOT_FOUND) with Ferry's detail after it, and ``failed to load`` for a load
that fails."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.grpc.aio as tga
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess


@pytest.fixture(scope="module")
def server(example_repo: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("errors-repo")
    shutil.copytree(example_repo / "iris", root / "iris")
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx graph")
    proc = ServerProcess(root)
    yield proc
    proc.stop()


@pytest.fixture(scope="module", params=["http", "grpc"])
def client(request, server):
    c = (th.InferenceServerClient(server.hostport) if request.param == "http"
         else tg.InferenceServerClient(server.grpc))
    yield c
    c.close()


def _status(exc: InferenceServerException, client: object) -> None:
    if isinstance(client, tg.InferenceServerClient):
        assert exc.status() == "StatusCode.NOT_FOUND"
    else:
        assert exc.status() in (None, "404")


def test_unknown_model(client):
    for call in (lambda: client.get_model_metadata("foo"), lambda: client.unload_model("foo")):
        with pytest.raises(InferenceServerException) as info:
            call()
        message = info.value.message()
        assert message.startswith("Request for unknown model: 'foo' is not found"), message
        assert "served models: ['broken', 'iris']" in message  # Ferry's own detail
        _status(info.value, client)


def test_unknown_model_on_infer_and_http_status(client, server):
    inp = (th if isinstance(client, th.InferenceServerClient) else tg).InferInput(
        "float_input", [1, 4], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("foo", [inp])
    assert info.value.message().startswith("Request for unknown model: 'foo' is not found")
    response = server.client.get("/v2/models/foo")
    assert response.status_code == 404
    assert response.json()["error"].startswith("Request for unknown model: 'foo' is not found")


def test_unknown_version(client):
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("iris", model_version="99")
    message = info.value.message()
    assert message.startswith("Request for unknown model: 'iris' version 99 is not found")
    assert "served versions: [1, 2]" in message
    _status(info.value, client)


def test_a_failed_load_says_failed_to_load(client):
    for name in ("broken", "nope"):
        with pytest.raises(InferenceServerException) as info:
            client.load_model(name)
        assert f"failed to load '{name}'" in info.value.message(), info.value.message()
    assert client.is_model_ready("iris")


def test_unknown_model_over_grpc_aio(server):
    async def main() -> InferenceServerException:
        c = tga.InferenceServerClient(server.grpc)
        try:
            await c.get_model_metadata("foo")
        except InferenceServerException as exc:
            return exc
        finally:
            await c.close()
        raise AssertionError("no error for an unknown model")

    exc = asyncio.run(main())
    assert exc.message().startswith("Request for unknown model: 'foo' is not found")
    assert exc.status() == "StatusCode.NOT_FOUND"
