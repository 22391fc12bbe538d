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


def test_predict_names_a_data_file_it_cannot_read(tmp_path):
    missing = tmp_path / "missing.json"
    result = CliRunner().invoke(cli, ["predict", "iris", "--data", f"@{missing}"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert f"cannot read {missing}: No such file or directory" in result.output


def test_serve_resolves_and_logs_its_working_folder_paths(example_repo, tmp_path, monkeypatch):
    from tests.conftest import ServerProcess

    monkeypatch.chdir(tmp_path)
    proc = ServerProcess(example_repo, "--store", "sqlite:///rel.db", "--log-level", "info")
    try:
        log = "".join(proc.log)
        assert f"evaluation store: sqlite:///{tmp_path / 'rel.db'}\n" in log
        assert f"spill folder (used while the database is down): {tmp_path / 'rel.db-spill'}\n" \
            in log
    finally:
        assert proc.stop() == 0
    assert (tmp_path / "rel.db").is_file()


def test_export_and_monitor_refuse_a_store_file_that_does_not_exist(tmp_path, monkeypatch):
    """Run outside the server's folder, they used to open a new, empty ferry.db there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FERRY_STORE", raising=False)
    export = CliRunner().invoke(cli, ["export", "iris", "-o", "out.parquet"])
    assert export.exit_code == 1
    assert f"no evaluation store at {tmp_path / 'ferry.db'} (--store sqlite:///ferry.db)" \
        in export.output
    # monitor reads FERRY_STORE, as serve and export do (before: only the server at --url)
    monitor = CliRunner().invoke(cli, ["monitor", "iris"],
                                 env={"FERRY_STORE": "sqlite:///elsewhere.db"})
    assert monitor.exit_code == 1
    assert f"no evaluation store at {tmp_path / 'elsewhere.db'}" in monitor.output
    assert list(tmp_path.iterdir()) == []


def test_reference_sends_the_admin_token(example_repo, tmp_path):
    from tests.conftest import ServerProcess

    data = tmp_path / "train.csv"
    data.write_text("sepal_length,sepal_width,petal_length,petal_width\n" + "".join(
        f"{5 + i % 3},{3 + i % 2},{1 + i % 5},{0.2 + i % 2}\n" for i in range(100)))
    proc = ServerProcess(example_repo, "--admin-token", "s3cret")
    try:
        args = ["reference", "iris", str(data), "--url", proc.url]
        refused = CliRunner().invoke(cli, args, env={"FERRY_ADMIN_TOKEN": None})
        assert refused.exit_code == 1 and "401" in refused.output
        flag = CliRunner().invoke(cli, [*args, "--admin-token", "s3cret"])
        assert flag.exit_code == 0, flag.output
        assert "reference of 100 rows, 4 feature(s)" in flag.output
        env = CliRunner().invoke(cli, args, env={"FERRY_ADMIN_TOKEN": "s3cret"})
        assert env.exit_code == 0, env.output
    finally:
        proc.stop()


def test_schedules_go_to_the_store_ferry_serve_reads_them_from(tmp_path, monkeypatch):
    """With only FERRY_STORE set, `ferry schedule add` writes where `ferry serve` (whose
    schedules default to its evaluation store) looks; FERRY_BATCH_STORE still wins."""
    from ferry.batch.records import RunStore

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FERRY_BATCH_STORE", raising=False)
    command = ["--cron", "0 2 * * *", "--", "batch", "iris", "--input", "a.parquet", "--output",
               "b.parquet"]
    added = CliRunner().invoke(cli, ["schedule", "add", "nightly", *command],
                               env={"FERRY_STORE": "sqlite:///served.db"})
    assert added.exit_code == 0, added.output
    other = CliRunner().invoke(cli, ["schedule", "add", "hourly", *command],
                               env={"FERRY_STORE": "sqlite:///served.db",
                                    "FERRY_BATCH_STORE": "sqlite:///runs.db"})
    assert other.exit_code == 0, other.output
    for file, name in (("served.db", "nightly"), ("runs.db", "hourly")):
        store = RunStore(f"sqlite:///{tmp_path / file}")
        try:
            assert [s["name"] for s in store.list_schedules()] == [name]
        finally:
            store.close()
    assert not (tmp_path / "ferry.db").exists()
