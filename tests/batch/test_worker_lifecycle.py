"""The lifetime of ``--workers N`` processes, through real ``ferry batch`` runs and real
signals: workers exit when their parent is SIGKILLed (idle, or in the middle of a chunk),
and Ctrl-C or SIGTERM stops them quietly, leaving the run interrupted and resumable.

Each run is started in a session of its own, so whatever it leaves behind is killed with
its process group at the end of the test, whether the test passed or not."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.batch.test_local import env, ferry, runs, wait_for_chunks  # noqa: F401

_STUCK = '''
import os
import time
from pathlib import Path

class Stuck:
    """y = x * 2, after marking this process busy and sleeping a minute: a worker that is
    in the middle of a chunk when its parent dies."""
    def load(self, version_dir):
        self.busy = Path(os.environ["FERRY_TEST_BUSY_DIR"])
    def predict(self, inputs):
        (self.busy / str(os.getpid())).touch()
        time.sleep(60)
        return {"y": inputs["x"] * 2}
'''

GONE_WITHIN_S = 5.0  # a worker notices its parent died at once (end of pipe), or within 1 s


@pytest.fixture()
def repo(env: Path, batch_repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    """The batch repository's ``slow`` model plus ``stuck``."""
    root = env / "repo"
    shutil.copytree(batch_repo / "slow", root / "slow")
    shutil.copytree(batch_repo / "slow", root / "stuck")
    (root / "stuck" / "1" / "model.py").write_text(textwrap.dedent(_STUCK))
    monkeypatch.setenv("FERRY_REPOSITORY", str(root))
    return root


@pytest.fixture()
def started(env: Path) -> Iterator[list[subprocess.Popen[str]]]:  # noqa: F811
    """Runs started by the test; each one's process group is killed at the end."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate(timeout=10)


def _start(started: list[subprocess.Popen[str]], root: Path, model: str, chunks: int,
           ) -> subprocess.Popen[str]:
    """``ferry batch MODEL --workers 2`` on ``chunks`` chunks of 64 rows, in a new session."""
    n = 64 * chunks
    pq.write_table(pa.table({"id": np.arange(n), "x": np.arange(n, dtype=np.float32)}),
                   root / "in.parquet", row_group_size=64 * 10)
    cmd = [sys.executable, "-m", "ferry", "batch", model, "--input", str(root / "in.parquet"),
           "--output", str(root / "out.parquet"), "--key", "id", "--chunk-rows", "64",
           "--checkpoint-s", "0", "--workers", "2", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    started.append(proc)
    return proc


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = stat[stat.rindex(")") + 2:].split()[:2]  # the name may hold spaces
    return state, int(ppid)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) and st[1] == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running: not gone and not a zombie (an orphan's new parent may never reap it)."""
    st = _stat(pid)
    return st is not None and st[0] not in "ZX"


def _survivors(pids: list[int], within: float) -> list[int]:
    deadline = time.monotonic() + within
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _workers(proc: subprocess.Popen[str]) -> list[int]:
    workers = _children(proc.pid)
    assert len(workers) >= 2, f"expected the 2 workers among the children, found {workers}"
    return workers


pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def test_workers_exit_when_the_parent_is_sigkilled(
        env: Path, repo: Path, started: list[subprocess.Popen[str]]) -> None:  # noqa: F811
    """The parent dies without a handler running (the OOM killer, kill -9): its workers,
    which were scoring and sending results, must not live on, blocked forever."""
    proc = _start(started, env, "slow", chunks=400)  # ~10 s of work: still running below
    wait_for_chunks(3)
    workers = _workers(proc)
    proc.kill()
    proc.wait(10)
    assert _survivors(workers, GONE_WITHIN_S) == []


def test_workers_in_the_middle_of_a_chunk_exit_when_the_parent_is_sigkilled(
        env: Path, repo: Path, started: list[subprocess.Popen[str]],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Both workers are inside a model call that lasts a minute when the parent dies: they
    must exit now, not after the chunk (nobody is left to take its result)."""
    busy = env / "busy"
    busy.mkdir()
    monkeypatch.setenv("FERRY_TEST_BUSY_DIR", str(busy))
    proc = _start(started, env, "stuck", chunks=8)
    deadline = time.monotonic() + 30
    while len(list(busy.iterdir())) < 2:
        assert time.monotonic() < deadline, "the workers never started scoring"
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    workers = _workers(proc)
    assert {int(p.name) for p in busy.iterdir()} <= set(workers)
    proc.kill()
    proc.wait(10)
    assert _survivors(workers, GONE_WITHIN_S) == []


def _interrupt_and_resume(env: Path, started: list[subprocess.Popen[str]],  # noqa: F811
                          send: str) -> None:
    """Interrupt a ``--workers 2`` run part-way (``send``: "group-sigint" as a terminal's
    Ctrl-C does, "sigterm" to the parent only), check it stopped quietly and completely,
    then resume it: every row out once."""
    chunks = 80  # ~2 s of work with 2 workers; interrupted after 5
    proc = _start(started, env, "slow", chunks=chunks)
    wait_for_chunks(5)
    workers = _workers(proc)
    if send == "group-sigint":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    [run] = runs(env)
    assert run["status"] == "interrupted"
    assert err.strip() == (f"ferry batch: run {run['run_id']} interrupted: interrupted "
                           f"(Ctrl-C or SIGTERM). Continue it with `ferry batch --resume "
                           f"{run['run_id']}`")
    assert 5 <= run["chunks_done"] < chunks
    assert _survivors(workers, GONE_WITHIN_S) == []  # the parent stopped its workers
    ferry("batch", "--resume", run["run_id"], "-q")
    [resumed] = runs(env)
    assert (resumed["status"], resumed["rows_in"], resumed["chunks_done"]) == (
        "succeeded", 64 * chunks, chunks)
    out = pq.read_table(env / "out.parquet")
    assert sorted(out["id"].to_pylist()) == list(range(64 * chunks))


def test_ctrl_c_stops_the_workers_quietly_and_the_run_resumes(
        env: Path, repo: Path, started: list[subprocess.Popen[str]]) -> None:  # noqa: F811
    """A terminal's Ctrl-C reaches the whole process group: the workers leave it to the
    parent, which marks the run interrupted and stops them (no worker tracebacks)."""
    _interrupt_and_resume(env, started, "group-sigint")


def test_sigterm_stops_the_workers_quietly_and_the_run_resumes(
        env: Path, repo: Path, started: list[subprocess.Popen[str]]) -> None:  # noqa: F811
    """SIGTERM to the parent (a scheduler, systemd): it marks the run interrupted and
    terminates its workers, which die of it quietly."""
    _interrupt_and_resume(env, started, "sigterm")
