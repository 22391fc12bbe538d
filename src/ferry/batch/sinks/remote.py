"""Remote sink: a file or folder output on object storage (``--output s3://b/scores.parquet``,
``--output s3://b/scores/``, any fsspec URL), staged on this machine and uploaded on publish.

The rows go through the local sink of the same kind (``FileSink`` for a file, ``FolderSink``
for a folder), pointed at a run-scoped mirror ``<cache>/batch/<run>/`` (``FERRY_CACHE_DIR``,
default ``~/.cache/ferry``): checkpoints, workers writing their own parts and ``--resume``
work as for a local output (a Ray actor on another node, where the mirror is not, sends its
rows back to be written here instead). ``publish`` first completes the local output,
records its chunks and their counts in ``published.json``, then uploads, then drops the
mirror; a run that fails while uploading is resumed (on the same machine) by uploading
again, without rescoring.

Upload (rejects first, then the predictions, so predictions never appear without them):

- a file goes to a temporary key beside its target (``.<name>.ferry-<run>.tmp``), then is
  moved onto the target (S3: a server-side copy, then the temporary key is deleted);
- a folder's objects go to a temporary prefix (``.<name>.ferry-<run>/``); then its
  ``_ferry.json`` is overwritten with ``{"run_id": ..., "state": "publishing"}``, the parts
  are copied onto the folder, parts of the earlier run that this run did not write are
  deleted, and the run's own ``_ferry.json`` is copied last.

What S3 guarantees: each object is replaced atomically (a reader gets the old object or the
whole new one, never a part; reads after a write are strongly consistent), but there is no
rename and nothing spans two objects. So a single-file output is atomic; a folder is not:
while it is replaced, a reader listing it may see parts of both runs, and its ``_ferry.json``
says ``"state": "publishing"`` until the end. A folder on object storage is only replaced
when it is empty or holds a ``_ferry.json`` (Ferry wrote it), as for a local folder.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ferry.batch.job import BatchError, Location
from ferry.batch.remote import filesystem, is_remote
from ferry.batch.scoring import ChunkResult
from ferry.batch.sinks.base import (
    ChunkCounts,
    ChunkWriter,
    Durable,
    PublishInfo,
    Sink,
    SinkError,
)
from ferry.batch.sinks.folder import MARKER

STATE = "published.json"
"""In the mirror: the chunks of a run whose output is complete locally, not yet uploaded:
``{"chunks": [...], "counts": [[rows_in, rows_out, rows_rejected] or null, ...]}`` (no
``counts`` when an older Ferry wrote it)."""


def cache_root() -> Path:
    base = os.environ.get("FERRY_CACHE_DIR") or Path.home() / ".cache" / "ferry"
    return Path(base) / "batch"


def default_rejects(output: Location) -> str:
    """Beside the output, as for local outputs: ``x.rejects.parquet`` or ``x.rejects/``."""
    if output.folder:
        return f"{output.target}.rejects"
    stem, suffix = posixpath.splitext(output.target)
    return f"{stem}.rejects{suffix}"


@dataclass(frozen=True)
class MirrorWriter:
    """The local sink's chunk writer, used only where the mirror is: a worker process on
    this machine, or a Ray actor on a node sharing the file system. An actor on another node
    (the mirror is not there) hands its rows back to the driver, which writes them."""

    inner: ChunkWriter
    mirror: str

    def __call__(self, result: ChunkResult) -> ChunkResult:
        return self.inner(result) if os.path.isdir(self.mirror) else result


class RemoteSink(Sink):
    """Wraps the local sink that ``make_local(output, rejects)`` opens on the mirror."""

    def __init__(self, output: Location, rejects: str | None, run_id: str,
                 make_local: Callable[[Location, str], Sink]) -> None:
        self.run_id, self.folder = run_id, output.folder
        self.mirror = cache_root() / run_id
        suffix = "" if output.folder else posixpath.splitext(output.target)[1]
        rejects = rejects or default_rejects(output)
        # (local path the inner sink writes, remote URL or None when it is local already)
        self.out = (self.mirror / f"out{suffix}", output.target) if is_remote(output.target) \
            else (Path(output.target), None)
        self.rej = (self.mirror / f"out.rejects{suffix}", rejects) if is_remote(rejects) \
            else (Path(rejects), None)
        self.inner = make_local(replace(output, target=str(self.out[0])), str(self.rej[0]))
        self._durable: Durable = {}
        self._pending: dict[int, ChunkCounts] = {}
        self._local_done = False

    # -- staging: the local sink does the work -------------------------------------------
    def open(self, resume: bool) -> Durable:
        state = self.mirror / STATE
        if not resume:
            shutil.rmtree(self.mirror, ignore_errors=True)
        self.mirror.mkdir(parents=True, exist_ok=True)
        for _, url in (self.out, self.rej):
            if url is not None:
                self._check_writable(url)
        if resume and state.exists() and self.out[0].exists():
            self._local_done = True  # scored and published locally: only the upload is left
            kept = json.loads(state.read_text())
            counts = kept.get("counts") or [None] * len(kept["chunks"])
            self._durable = {chunk: None if c is None else ChunkCounts(*c)
                             for chunk, c in zip(kept["chunks"], counts, strict=True)}
            return dict(self._durable)
        state.unlink(missing_ok=True)
        self._durable = dict(self.inner.open(resume))
        return dict(self._durable)

    def chunk_writer(self) -> ChunkWriter | None:
        inner = self.inner.chunk_writer()
        return None if inner is None else MirrorWriter(inner, str(self.mirror))

    def write(self, result: ChunkResult) -> list[int]:
        self._pending[result.chunk] = ChunkCounts.of(result)
        return self._made_durable(self.inner.write(result))

    def flush(self) -> list[int]:
        if self._local_done:
            return []
        return self._made_durable(self.inner.flush())

    def _made_durable(self, done: list[int]) -> list[int]:
        for chunk in done:
            self._durable[chunk] = self._pending.pop(chunk)
        return done

    def publish(self, info: PublishInfo) -> None:
        if not self._local_done:
            self.inner.publish(info)
            tmp = self.mirror / f".{STATE}.tmp"
            chunks = sorted(self._durable)
            counts = [None if (c := self._durable[k]) is None else c.as_list() for k in chunks]
            tmp.write_text(json.dumps({"chunks": chunks, "counts": counts}))
            os.replace(tmp, self.mirror / STATE)
            self._local_done = True
        for local, url in (self.rej, self.out):
            if url is None:
                continue
            try:
                if self.folder:
                    self._upload_folder(local, url)
                else:
                    self._upload_file(local, url)
            except (OSError, ValueError) as exc:
                raise SinkError(f"--output: uploading {url} failed: {exc}; the scored rows are "
                                f"kept in {self.mirror} and --resume uploads them") from exc
        shutil.rmtree(self.mirror, ignore_errors=True)

    def close(self) -> None:
        self.inner.close()

    def discard(self) -> None:
        self.inner.discard()
        shutil.rmtree(self.mirror, ignore_errors=True)

    # -- object storage ------------------------------------------------------------------
    def _tmp(self, path: str) -> str:
        parent, name = posixpath.split(path.rstrip("/"))
        return f"{parent}/.{name}.ferry-{self.run_id}" + ("" if self.folder else ".tmp")

    def _check_writable(self, url: str) -> None:
        """Fail before scoring when the target cannot be written (no bucket, no rights) or
        is a folder Ferry did not write."""
        fs, path = filesystem(url, "--output")
        if "/" not in path.strip("/"):
            raise BatchError(f"--output {url}: name a file or folder inside the bucket, "
                             f"e.g. {url.rstrip('/')}/scores/")
        probe = self._tmp(path) + ".probe"
        try:
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)
            if self.folder:
                fs.invalidate_cache()
                found = [p for p in fs.find(path) if not p.endswith("/")]
                if found and not fs.exists(f"{path}/{MARKER}"):
                    raise BatchError(f"--output {url}/ holds objects Ferry did not write (no "
                                     f"{MARKER}); refusing to replace it. Pick a new or "
                                     f"empty folder")
        except BatchError:
            raise
        except (OSError, ValueError) as exc:
            raise BatchError(f"--output {url}: cannot write there: {exc}") from None

    def _upload_file(self, local: Path, url: str) -> None:
        fs, path = filesystem(url, "--output")
        fs.invalidate_cache()
        if not local.exists():  # no rejects this run: an earlier run's must not pass for ours
            if fs.exists(path):
                fs.rm_file(path)
            return
        tmp = self._tmp(path)
        fs.put_file(str(local), tmp)
        fs.mv(tmp, path)

    def _upload_folder(self, local: Path, url: str) -> None:
        fs, path = filesystem(url, "--output")
        fs.invalidate_cache()
        old = {p[len(path) + 1:] for p in fs.find(path)} if fs.exists(path) else set()
        if not local.exists():  # no rejects this run
            if old:
                fs.rm([f"{path}/{rel}" for rel in old])
            return
        tmp = self._tmp(path)
        files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
        for rel in files:
            fs.put_file(str(local / rel), f"{tmp}/{rel}")
        marker: dict[str, Any] = {"run_id": self.run_id, "state": "publishing"}
        fs.pipe_file(f"{path}/{MARKER}", json.dumps(marker).encode())
        for rel in files:
            if rel != MARKER:
                fs.copy(f"{tmp}/{rel}", f"{path}/{rel}")
        stale = sorted(old - set(files))
        if stale:
            fs.rm([f"{path}/{rel}" for rel in stale])
        fs.copy(f"{tmp}/{MARKER}", f"{path}/{MARKER}")
        fs.rm(tmp, recursive=True)
