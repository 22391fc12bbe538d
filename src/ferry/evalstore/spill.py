"""A bounded on-disk spill for prediction batches the database could not take.

Each spill is one JSON-lines file of batches (``evalstore.batches.Batch``, one per line,
blobs as base64), written to a temporary
name, fsynced and renamed, so a crash leaves whole files only. Files are replayed oldest
first. ``write`` refuses (returns False) once the folder would exceed ``max_bytes``; the
caller counts those records as dropped. Files left by an older Ferry (one line per record,
schema v1 columns) are read too: their records are rebuilt into batches. The folder is
created on first use, so a healthy store leaves nothing on disk.

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

from ferry.evalstore.batches import Batch, build_batches, from_doc, records_of

_BLOBS = ("meta", "inputs", "outputs")
_LEGACY_BLOBS = ("inputs", "outputs")


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
                for batch in self._load(path):
                    self._ids.update(batch.ids())

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.jsonl"))

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def contains(self, request_id: str) -> bool:
        return request_id in self._ids

    def write(self, batches: list[Batch]) -> bool:
        """Persist ``batches``; False (nothing written) when the spill is full."""
        lines = []
        for batch in batches:
            doc = batch.row()
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
        for batch in batches:
            self._ids.update(batch.ids())
        return True

    @staticmethod
    def _load(path: Path) -> list[Batch]:
        batches: list[Batch] = []
        legacy: list[dict[str, Any]] = []
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            doc = orjson.loads(line)
            if "request_ids" not in doc:  # a v1 record line
                for key in _LEGACY_BLOBS:
                    if doc.get(key) is not None:
                        doc[key] = base64.b64decode(doc[key])
                legacy.append(doc)
                continue
            for key in _BLOBS:
                if doc.get(key) is not None:
                    doc[key] = base64.b64decode(doc[key])
            batches.append(from_doc(doc))
        if legacy:
            batches.extend(build_batches(records_of(legacy)))
        return batches

    def read(self, path: Path) -> list[Batch]:
        return self._load(path)

    def remove(self, path: Path, batches: list[Batch]) -> None:
        """Forget a replayed file (call after its batches are committed)."""
        size = path.stat().st_size
        path.unlink()
        self._bytes -= size
        for batch in batches:
            self._ids.difference_update(batch.ids())
