"""A new user's first run: a fresh virtualenv, ``pip install`` of this checkout with no
extras, ``ferry serve`` of the bundled examples with the default store (``ferry.db`` in
the working folder), real traffic from ``scripts/traffic.py`` with ``--drift`` and
``--feedback``, and a full monitoring report (drift, quality, performance) from
``ferry monitor iris --format json``.

Slow (about 2 minutes here, most of it pip unpacking wheels from its cache; the first run
on a machine also downloads them): the CI tier runs it with the rest of ``make test``;
deselect it locally with ``-m "not slow"``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def checkout_copy(dest: Path) -> Path:
    """What pip needs to build the package, copied so the build leaves the checkout alone."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "src", dest / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest


def run(cmd: list[str | Path], timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_default_install_serves_examples_and_reports_drift_quality_performance(
        example_repo: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    venv = tmp_path / "venv"
    # a clean environment: nothing of the test run's own packages leaks in
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    run([sys.executable, "-m", "venv", venv], 120, env=env)
    bin_ = venv / "bin"
    run([bin_ / "pip", "install", "-q", checkout_copy(tmp_path / "checkout")], 600, env=env)
    freeze = run([bin_ / "pip", "list", "--format", "json"], 60, env=env).stdout
    installed = {p["name"].lower() for p in json.loads(freeze)}
    assert not installed & {"skl2onnx", "pytest", "httpx", "xgboost", "psycopg"}, \
        "the fresh environment holds more than the default install"
    installed_at = time.monotonic()

    work = tmp_path / "work"  # the user's folder: the default store lands here
    work.mkdir()
    server = subprocess.Popen(
        [bin_ / "ferry", "serve", example_repo, "--http-port", "0", "--grpc-port", "0"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log: list[str] = []
    try:
        url = ""
        deadline = time.monotonic() + 120
        assert server.stderr is not None
        while time.monotonic() < deadline and not url:
            line = server.stderr.readline()
            if not line:
                break
            log.append(line)
            if found := re.search(r"HTTP listening on (http://\S+:\d+)", line):
                url = found.group(1)
        assert url, "server did not start:\n" + "".join(log)
        assert (work / "ferry.db").exists(), "the default store is ferry.db in the cwd"

        traffic = run([bin_ / "python", ROOT / "scripts" / "traffic.py", "--url", url,
                       "--model", "iris", "--requests", "400", "--rate", "0", "--rows", "2",
                       "--drift", "--feedback", "0.5", "--repository", example_repo],
                      300, env=env, cwd=work)
        assert "400 of 400 requests answered" in traffic.stdout, traffic.stdout

        report = json.loads(run([bin_ / "ferry", "monitor", "iris", "--url", url,
                                 "--format", "json"], 120, env=env, cwd=work).stdout)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr is not None:
            log.append(server.stderr.read())
            server.stderr.close()

    assert report["window"]["rows"] == 800, report["window"]
    drift = report["drift"]
    assert drift["reference"].endswith("iris/2/reference.parquet")  # shipped with the example
    # the script shifted the last half of the inputs by 1.5 sigma: exactly those drifted
    assert sorted(drift["drifted_features"]) == ["petal_length", "petal_width"], drift
    assert drift["multivariate"]["drifted"]
    assert drift["multivariate"]["classifier"]["auc"] is not None  # scikit-learn is installed
    quality = report["quality"]
    assert {"petal_length", "petal_width"} <= set(quality["violated_features"]), quality
    performance = report["performance"]
    assert performance["labelled_rows"] > 0, performance
    assert "accuracy" in json.dumps(performance)
    assert not any("Traceback" in line or " ERROR " in line for line in log), "".join(log)
    print(f"\nfresh install: venv + pip {installed_at - started:.0f} s, serve + traffic + "
          f"monitor {time.monotonic() - installed_at:.0f} s")
