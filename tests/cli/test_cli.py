"""The ``ferry`` commands: CliRunner in-process, and ``ferry serve`` as a real subprocess."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ferry.cli.main import cli


@pytest.mark.parametrize("command", [[], ["serve"], ["models"], ["predict"]])
def test_every_help_shows_an_example(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "0.1.0" in result.output


def test_models_lists_versions_runtimes_signatures_and_failures(test_repo):
    result = CliRunner().invoke(cli, ["models", "--repository", str(test_repo), "--format",
                                      "json"])
    assert result.exit_code == 0, result.output
    rows = {(r["model"], str(r["version"])): r for r in json.loads(result.output)}
    assert rows[("iris", "2")]["runtime"] == "onnx"
    assert rows[("iris", "2")]["inputs"][0]["shape"] == [-1, 4]
    assert rows[("iris_features", "1")]["runtime"] == "python"
    assert rows[("broken", "1")]["state"] == "UNAVAILABLE"
    table = CliRunner().invoke(cli, ["models", "--repository", str(test_repo)])
    assert "iris  v2  onnx" in table.output and "UNAVAILABLE" in table.output


def test_models_with_env_repository(test_repo):
    result = CliRunner().invoke(cli, ["models"], env={"FERRY_REPOSITORY": str(test_repo)})
    assert result.exit_code == 0 and "diabetes" in result.output


def test_predict_against_a_live_server(server):
    result = CliRunner().invoke(cli, ["predict", "iris", "--data", "[[5.1,3.5,1.4,0.2]]",
                                      "--url", server.url])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["outputs"]["label"] == [0] and body["model_version"] == "2"


def test_predict_from_file_and_version(server, tmp_path):
    rows = tmp_path / "rows.json"
    rows.write_text("[[6.7, 3.0, 5.2, 2.3], [5.1, 3.5, 1.4, 0.2]]")
    result = CliRunner().invoke(cli, ["predict", "iris", "--data", f"@{rows}", "--version", "1"],
                                env={"FERRY_URL": server.url})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"]["label"] == [2, 0]


def test_predict_errors_are_clear(server):
    result = CliRunner().invoke(cli, ["predict", "nope", "--data", "[[1]]", "--url", server.url])
    assert result.exit_code != 0 and "unknown model: 'nope' is not found" in result.output
    result = CliRunner().invoke(cli, ["predict", "iris", "--data", "[[1", "--url", server.url])
    assert result.exit_code != 0 and "not valid JSON" in result.output
    result = CliRunner().invoke(cli, ["predict", "iris", "--data", "[[1]]",
                                      "--url", "http://127.0.0.1:9"])
    assert result.exit_code != 0 and "cannot reach" in result.output


def test_serve_subprocess_serves_the_bundled_examples_and_stops_cleanly(example_repo):
    from tests.conftest import ServerProcess

    proc = ServerProcess(example_repo)
    try:
        assert proc.client.get("/v2/health/ready").json() == {"ready": True}
        index = proc.client.post("/v2/repository/index").json()
        assert {e["name"] for e in index} >= {"iris", "diabetes", "tabular", "mlp",
                                              "iris_features"}
    finally:
        assert proc.stop() == 0


def test_serve_rejects_a_missing_repository(tmp_path):
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "missing")])
    assert result.exit_code != 0 and "is not a folder" in result.output
