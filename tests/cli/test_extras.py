"""A configured feature whose optional extra is not installed fails at start, with one line
naming the extra and no traceback. Each test runs the real ``ferry`` command in a subprocess
whose ``PYTHONPATH`` starts with a folder holding a stand-in for the package (``s3fs.py``,
``psycopg/__init__.py``, ...) that raises ``ImportError``, which is what importing a package
that is not installed does; Ferry's own code runs unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT


def hiding(tmp_path: Path, *modules: str) -> dict[str, str]:
    """The environment of a process in which ``modules`` cannot be imported."""
    folder = tmp_path / "not-installed"
    for module in modules:
        package = folder / module
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{module}'\", name='{module}')\n")
    paths = [str(folder), str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def ferry(env: dict[str, str], cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ferry", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def assert_fails_naming(result: subprocess.CompletedProcess[str], line: str) -> None:
    """Exit 1, exactly one line of output containing ``line``, no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert len([text for text in output.splitlines() if line in text]) == 1, output
    assert "HTTP listening" not in output, output


def test_serve_an_s3_repository_without_s3fs(tmp_path: Path) -> None:
    result = ferry(hiding(tmp_path, "s3fs"), tmp_path, "serve", "s3://bucket/models",
                   "--http-port", "0", "--grpc-port", "-1", "--store", "none")
    assert_fails_naming(result, "the repository s3://bucket/models needs s3fs: "
                                "pip install 'ferry[s3]'")


def test_serve_a_postgresql_store_without_psycopg(tmp_path: Path, example_repo: Path) -> None:
    result = ferry(hiding(tmp_path, "psycopg"), tmp_path, "serve", example_repo,
                   "--http-port", "0", "--grpc-port", "-1",
                   "--store", "postgresql://ferry:secret@127.0.0.1:1/ferry")
    assert_fails_naming(result, "the evaluation store postgresql://ferry:***@127.0.0.1:1/ferry "
                                "needs psycopg: pip install 'ferry[postgres]'")
    assert "secret" not in result.stderr
    assert not list(tmp_path.glob("ferry*"))  # nothing spilled, nothing created


@pytest.mark.parametrize("command", [
    ["export", "iris", "-o", "out.parquet"],
    ["monitor", "iris"],
    ["batch", "runs"],
    ["schedule", "list"],
])
def test_read_commands_on_a_postgresql_store_without_psycopg(tmp_path: Path,
                                                             command: list[str]) -> None:
    result = ferry(hiding(tmp_path, "psycopg"), tmp_path, *command,
                   "--store", "postgresql://db.example/ferry")
    assert_fails_naming(result, "postgresql://db.example/ferry needs psycopg: "
                                "pip install 'ferry[postgres]'")


@pytest.fixture()
def rows(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({f"f{i}": rng.random(20) for i in range(4)}), path)
    return path


def test_batch_engine_ray_without_ray(tmp_path: Path, example_repo: Path, rows: Path) -> None:
    result = ferry(hiding(tmp_path, "ray"), tmp_path, "batch", "iris", "--input", rows,
                   "--output", "out.parquet", "--engine", "ray", "--map", "float_input=f{i}",
                   "--repository", example_repo, "--store", "sqlite:///runs.db")
    assert_fails_naming(result, "--engine ray needs ray[data]: pip install 'ferry[ray]'")
    assert not (tmp_path / "out.parquet").exists()


def test_batch_s3_input_without_s3fs(tmp_path: Path, example_repo: Path) -> None:
    result = ferry(hiding(tmp_path, "s3fs"), tmp_path, "batch", "iris", "--input",
                   "s3://bucket/day=1/", "--output", "out.parquet",
                   "--repository", example_repo, "--store", "sqlite:///runs.db")
    assert_fails_naming(result, "--input s3://bucket/day=1/ needs s3fs: "
                                "pip install 'ferry[s3]'")


@pytest.fixture()
def xgb_repo(tmp_path: Path) -> Path:
    """A repository with one XGBoost model (trained here, where xgboost is installed)."""
    import xgboost

    rng = np.random.default_rng(1)
    x = rng.random((200, 4)).astype(np.float32)
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
                            xgboost.DMatrix(x, label=(x[:, 0] > 0.5)), num_boost_round=3)
    (tmp_path / "repo" / "xgb" / "1").mkdir(parents=True)
    booster.save_model(str(tmp_path / "repo" / "xgb" / "1" / "model.json"))
    return tmp_path / "repo"


def test_batch_with_a_model_whose_runtime_is_not_installed(tmp_path: Path, xgb_repo: Path,
                                                           rows: Path) -> None:
    result = ferry(hiding(tmp_path, "xgboost"), tmp_path, "batch", "xgb", "--input", rows,
                   "--output", "out.parquet", "--map", "input=f{i}",
                   "--repository", xgb_repo, "--store", "sqlite:///runs.db")
    assert_fails_naming(result, "the xgboost runtime (model xgb version 1) needs xgboost: "
                                "pip install 'ferry[gbdt]'")


def test_serving_reports_the_extra_a_model_needs(tmp_path: Path, xgb_repo: Path) -> None:
    """A server keeps serving its other models: the version is unavailable, and its reason
    (as ``ferry models``, which loads through the server's manager, shows) names the extra."""
    import json

    result = ferry(hiding(tmp_path, "xgboost"), tmp_path, "models", "--repository", xgb_repo,
                   "--format", "json")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["state"] == "UNAVAILABLE"
    assert row["reason"] == ("the xgboost runtime (model xgb version 1) needs xgboost: "
                             "pip install 'ferry[gbdt]'")


def test_with_the_extra_installed_the_same_commands_get_past_the_check(
        tmp_path: Path, xgb_repo: Path, rows: Path) -> None:
    """The control: nothing hidden, the xgboost run scores (so the failures above come from
    the missing package, not from the command lines)."""
    result = ferry(hiding(tmp_path), tmp_path, "batch", "xgb", "--input", rows,
                   "--output", "out.parquet", "--map", "input=f{i}",
                   "--repository", xgb_repo, "--store", "sqlite:///runs.db", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 20
