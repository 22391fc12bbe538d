"""A bounded on-disk spill for prediction rows the database could not take.

Each spill is one JSON-lines file of encoded rows (blobs as base64), written to a temporary
name, fsynced and renamed, so a crash leaves whole files only. Files are replayed oldest
first. ``write`` refuses (returns False) once the folder would exceed ``max_bytes``; the
caller counts those rows as dropped. The folder is created on first use, so a healthy store
leaves nothing on disk.

Thread-safety: used by the writer thread only, except ``request_ids``/``contains``, which
read a set that the writer updates (safe under the GIL).
"""

from __future__ import annotations

import base64
import itertools
import os
import time
from pathlib import Path
from typing import Any

import orjson

_BLOBS = ("inputs", "outputs")


class Spill:
    """The spill folder of one store."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._seq = itertools.count()
        self._ids: set[str] = set()
        self._bytes = 0
        if folder.is_dir():
            for path in self.files():
                self._bytes += path.stat().st_size
                self._ids.update(r["request_id"] for r in self._load(path))

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.jsonl"))

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def contains(self, request_id: str) -> bool:
        return request_id in self._ids

    def write(self, rows: list[Any]) -> bool:
        """Persist ``rows``; False (nothing written) when the spill is full."""
        from ferry.evalstore.writer import COLUMNS

        lines = []
        for row in rows:
            doc = dict(row) if isinstance(row, dict) else dict(zip(COLUMNS, row, strict=True))
            for key in _BLOBS:
                if doc.get(key) is not None:
                    doc[key] = base64.b64encode(doc[key]).decode()
            lines.append(orjson.dumps(doc))
        data = b"\n".join(lines) + b"\n"
        if self._bytes + len(data) > self.max_bytes:
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{next(self._seq):06d}"
        tmp = self.folder / (name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(self.folder / (name + ".jsonl"))
        self._bytes += len(data)
        self._ids.update(r["request_id"] if isinstance(r, dict) else r[0] for r in rows)
        return True

    @staticmethod
    def _load(path: Path) -> list[dict[str, Any]]:
        rows = []
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            doc = orjson.loads(line)
            for key in _BLOBS:
                if doc.get(key) is not None:
                    doc[key] = base64.b64decode(doc[key])
            rows.append(doc)
        return rows

    def read(self, path: Path) -> list[dict[str, Any]]:
        return self._load(path)

    def remove(self, path: Path, rows: list[dict[str, Any]]) -> None:
        """Forget a replayed file (call after its rows are committed)."""
        size = path.stat().st_size
        path.unlink()
        self._bytes -= size
        for row in rows:
            self._ids.discard(row["request_id"])
