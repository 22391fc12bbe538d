"""A version's ``sha256:`` pin in ``model.yaml`` holds for ``ferry batch`` as it does for
``ferry serve``: both check and load versions through ``ferry.lifecycle.loader``, so a
mismatch fails with the message the server reports, and a matching pin scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ferry.cli.main import cli
from tests.batch.conftest import IRIS_FEATURES, features, iris_table, reference, write_parquet
from tests.conftest import ServerProcess

WRONG = "0" * 64


@pytest.fixture()
def repo(tmp_path: Path, example_repo: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(example_repo / "iris", root / "iris")
    return root


def pin(repo: Path, version: int, sha256: str) -> None:
    manifest = repo / "iris" / "model.yaml"
    manifest.write_text(manifest.read_text() + f"sha256: {{{version}: '{sha256}'}}\n")


def batch(repo: Path, tmp_path: Path, version: int) -> object:
    write_parquet(iris_table(300), tmp_path / "in.parquet")
    args = ["batch", "iris", "--version", str(version), "--input", str(tmp_path / "in.parquet"),
            "--output", str(tmp_path / "out.parquet"), "--map",
            f"float_input={','.join(IRIS_FEATURES)}", "--repository", str(repo),
            "--store", f"sqlite:///{tmp_path / 'runs.db'}", "-q"]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_a_pin_that_does_not_match_fails_the_run_as_it_fails_serving(repo: Path,
                                                                     tmp_path: Path) -> None:
    pin(repo, 2, WRONG)
    server = ServerProcess(repo)
    try:
        index = {e["version"]: e for e in server.client.post("/v2/repository/index").json()}
    finally:
        server.stop()
    assert index["1"]["state"] == "READY" and index["2"]["state"] == "UNAVAILABLE"
    served_reason = index["2"]["reason"]
    assert f"model.yaml expects {WRONG}" in served_reason

    result = batch(repo, tmp_path, 2)
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {served_reason}"
    assert not (tmp_path / "out.parquet").exists()
    runs = CliRunner().invoke(cli, ["batch", "runs", "--format", "json", "--store",
                                    f"sqlite:///{tmp_path / 'runs.db'}"])
    assert json.loads(runs.output) == []  # refused before a run started


def test_a_matching_pin_scores(repo: Path, tmp_path: Path) -> None:
    listed = CliRunner().invoke(cli, ["models", "--repository", str(repo), "--format", "json"])
    sha = {row["version"]: row["sha256"] for row in json.loads(listed.output)}[2]
    pin(repo, 2, sha.upper())  # a pin is compared without case, as serving does
    result = batch(repo, tmp_path, 2)
    assert result.exit_code == 0, result.output
    out = pq.read_table(tmp_path / "out.parquet")
    label, _ = reference(repo / "iris" / "2" / "model.onnx",
                         features(iris_table(300), IRIS_FEATURES))
    assert out["label"].to_pylist() == label.tolist()
