"""Real backing services for tests: a throwaway PostgreSQL cluster on a loopback port.

PostgreSQL refuses to run as root, so when the tests run as root the cluster is created and
started as ``nobody`` through ``runuser``. The binaries come from Debian's ``postgresql``
package (``.ci/run`` installs it); without them the fixture skips, except under CI where a
missing database is an error.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """``initdb`` + ``pg_ctl start`` in a temporary folder; ``url`` for SQLAlchemy."""

    def __init__(self) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="ferry-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "nobody", "nogroup")
            self.root.chmod(0o755)
            self._as_user = ["runuser", "-u", "nobody", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "ferry", "--auth=trust", "-E", "UTF8")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o",
                  f"-p {self.port} -h 127.0.0.1 -k {self.root} -F", "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p",
                               str(self.port)], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "ferry", "ferry")
        self.url = f"postgresql+psycopg://ferry@127.0.0.1:{self.port}/ferry"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as_user, str(self.bindir / tool), *args], check=True,
                       capture_output=True, cwd=self.root)

    def stop(self) -> None:
        subprocess.run([*self._as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                        "-m", "immediate", "stop"], capture_output=True, cwd=self.root)
        shutil.rmtree(self.root, ignore_errors=True)
