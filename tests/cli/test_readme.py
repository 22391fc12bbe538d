"""The README's quick-start blocks run against a real server over the bundled examples
(the port is rewritten to the test server's)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServerProcess

README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


@pytest.fixture(scope="module")
def examples_server(example_repo: Path):
    proc = ServerProcess(example_repo)
    yield proc
    proc.stop()


def test_python_blocks_run(examples_server):
    python = blocks("python")
    assert python, "the README should show a python client example"
    for code in python:
        code = code.replace("127.0.0.1:8000", examples_server.hostport)
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[0]"


def test_quick_start_shell_commands_run(examples_server, example_repo):
    ran = 0
    for block in blocks("bash"):
        for command in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = command.split("#", 1)[0].strip()
            if command.startswith("curl "):
                args = shlex.split(command.replace("localhost:8000", examples_server.hostport))
            elif command.startswith(".venv/bin/ferry "):
                args = [sys.executable, "-m", "ferry", *shlex.split(command)[1:]]
                if args[3] == "predict":
                    args += ["--url", examples_server.url]
                if args[3] == "models":
                    args += ["--repository", str(example_repo)]
                if args[3] == "monitor":
                    args += ["--url", examples_server.url]
            elif command.startswith(".venv/bin/python scripts/traffic.py "):
                args = [sys.executable, str(ROOT / "scripts" / "traffic.py"),
                        *shlex.split(command)[2:], "--url", examples_server.url,
                        "--repository", str(example_repo), "--rate", "0"]
            else:
                continue
            result = subprocess.run(args, capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, (command, result.stderr)
            assert result.stdout.strip(), command
            ran += 1
    assert ran >= 3
