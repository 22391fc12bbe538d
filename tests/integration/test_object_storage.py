"""A repository on S3-compatible storage: moto's standalone server on loopback (a real S3
endpoint over HTTP, not a mock of the client), read through fsspec/s3fs."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.conftest import ServerProcess
from tests.integration.test_lifecycle import DIABETES, wait_for

moto_server = pytest.importorskip("moto.server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3:
    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port)
        self.server.start()
        self.client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                   aws_access_key_id="test", aws_secret_access_key="test")
        self.client.create_bucket(Bucket="models")

    def upload(self, local: Path, prefix: str) -> None:
        for file in local.rglob("*"):
            if file.is_file():
                key = f"{prefix}/{file.relative_to(local).as_posix()}"
                self.client.upload_file(str(file), "models", key)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    store = S3()
    yield store
    store.stop()


def test_serves_and_watches_an_s3_repository(s3, example_repo, tmp_path):
    s3.upload(example_repo / "diabetes", "repo/diabetes")
    env = {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "FERRY_CACHE_DIR": str(tmp_path / "cache")}
    proc = ServerProcess("s3://models/repo", "--poll", "0.3", env=env)
    try:
        body = proc.client.post("/v2/models/diabetes/infer", json=DIABETES).json()
        assert body["model_version"] == "1"
        meta = proc.client.get("/v2/models/diabetes").json()
        assert len(meta["ferry"]["versions"][0]["sha256"]) == 64
        # a new version uploaded to the bucket goes live by itself
        s3.upload(example_repo / "diabetes" / "1", "repo/diabetes/2")
        wait_for(lambda: proc.client.post("/v2/models/diabetes/infer", json=DIABETES)
                 .json().get("model_version") == "2")
        assert list((tmp_path / "cache" / "diabetes").iterdir())
        # the endpoint goes away: what is loaded keeps serving, the failures are counted
        s3.stop()
        time.sleep(1.5)
        assert proc.client.post("/v2/models/diabetes/infer", json=DIABETES).status_code == 200
        wait_for(lambda: "ferry_repository_errors_total 0.0" not in
                 proc.client.get("/metrics").text)
        assert proc.alive()
    finally:
        proc.stop()
