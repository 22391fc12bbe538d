"""Progress output of ``ferry batch`` through the real CLI in a subprocess: plain lines when
stderr is a pipe, a live bar on a terminal (a pseudo-terminal here), nothing with -q."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ferry.cli._progress import PlainProgress
from tests.batch.conftest import iris_table, write_parquet


def _input(tmp_path: Path) -> Path:
    table = iris_table(20_000)
    bad = pa.array([i % 1000 == 0 for i in range(20_000)])  # 20 rows with a null feature
    table = table.set_column(2, "sepal_length", pc.if_else(bad, None, table["sepal_length"]))
    return write_parquet(table, tmp_path / "in.parquet", row_group=2000)


def _cmd(tmp_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ferry", "batch", "iris", "--input",
            str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out.parquet"),
            "--chunk-rows", "2000", *extra]


def _env(tmp_path: Path, batch_repo: Path) -> dict[str, str]:
    return {**os.environ, "FERRY_REPOSITORY": str(batch_repo),
            "FERRY_BATCH_STORE": f"sqlite:///{tmp_path / 'runs.db'}"}


def test_plain_progress_lines_when_stderr_is_not_a_terminal(tmp_path: Path,
                                                            batch_repo: Path) -> None:
    _input(tmp_path)
    env = _env(tmp_path, batch_repo)
    done = subprocess.run(_cmd(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("progress: ")]
    # ten chunks of a tenth each: one line per tenth, no bar drawing characters
    assert len(lines) == 10, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    shares = [int(re.search(r"\((\d+)%\)", ln).group(1)) for ln in lines]  # type: ignore[union-attr]
    assert shares == list(range(10, 101, 10))
    assert re.fullmatch(r"progress: 20,000/20,000 rows \(100%\), [\d,]+ rows/s, 20 rejected, "
                        r"ETA 0:00:00", lines[-1]), lines[-1]
    assert "succeeded" in done.stdout

    quiet = subprocess.run(_cmd(tmp_path, "-q"), env=env, capture_output=True, text=True,
                           timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_a_live_bar_on_a_terminal(tmp_path: Path, batch_repo: Path) -> None:
    _input(tmp_path)
    master, slave = pty.openpty()
    proc = subprocess.Popen(_cmd(tmp_path), env={**_env(tmp_path, batch_repo), "TERM": "xterm",
                                                 "COLUMNS": "160"},
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(120) == 0
    screen = b"".join(chunks).decode()
    assert "\x1b[" in screen and "━" in screen  # drawn in place, with rich's bar
    assert "20,000/20,000 rows" in screen and "20 rejected" in screen and "ETA" in screen
    assert "progress: " not in screen


def test_plain_progress_without_a_known_total_prints_every_few_seconds() -> None:
    out = io.StringIO()
    show = PlainProgress(stream=out, every_s=0.0)
    show(500, None, 3)
    assert re.fullmatch(r"progress: 500 rows, [\d,]+ rows/s, 3 rejected\n", out.getvalue())
    quiet = io.StringIO()
    show = PlainProgress(base=400, stream=quiet, every_s=3600.0)
    show(500, None, 0)  # under the period and no total to take tenths of: nothing yet
    assert quiet.getvalue() == ""
