"""Folder sink: the output is a folder of part files, one per chunk, in chunk order
(``part-000000.parquet``, ...), the layout Spark, Dask, DuckDB and ``pyarrow.dataset`` read
as one table.

Each chunk is written by whichever process scored it (``ChunkFileWriter`` is picklable), so
``--workers N`` writes in parallel and the main process never touches the rows. A chunk is
durable once its part file is renamed into the staging folder. Its rejects part and its
counts file (``part-NNNNNN.json``: rows in, out, rejected) are written first, so a durable
chunk has both; ``--resume`` skips chunks whose part exists and counts them from their
counts files (a chunk staged by an older Ferry has none: its counts are unknown).

Staging is ``.<name>.ferry-<run>/`` (rejects in ``.<name>.ferry-<run>.rejects/``, counts in
``.<name>.ferry-<run>.counts/``, which is never published) beside the target. Publish swaps
the staged folder in with renames: the old folder is renamed aside, the new one into place,
then the old one is deleted. A folder is only ever replaced when it is empty or was written
by Ferry (it holds ``_ferry.json``, which readers of datasets skip like every
``_``-prefixed file).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ferry.batch.job import BatchError
from ferry.batch.scoring import ChunkResult
from ferry.batch.sinks.base import ChunkCounts, ChunkWriter, Durable, PublishInfo, Sink
from ferry.batch.sinks.files import dictionary_columns

MARKER = "_ferry.json"


@dataclass
class ChunkFileWriter:
    """Writes one chunk's part files (atomically, by rename) into the staging folders."""

    fmt: str
    staging: Path
    rejects_staging: Path
    counts_staging: Path
    _dictionary: list[str] | None = field(default=None, repr=False)

    def part(self, chunk: int) -> Path:
        return self.staging / f"part-{chunk:06d}.{self.fmt}"

    def __call__(self, result: ChunkResult) -> ChunkResult:
        assert result.output is not None and result.rejects is not None  # noqa: S101
        if result.rejects.num_rows:
            self._write(result.rejects, self.rejects_staging / self.part(result.chunk).name)
        # before the part: a chunk is durable (its part exists) only with its counts
        (self.counts_staging / f"part-{result.chunk:06d}.json").write_text(
            json.dumps(ChunkCounts.of(result).as_list()))
        self._write(result.output, self.part(result.chunk))
        return result.counts_only()

    def _write(self, table: pa.Table, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        if self.fmt == "parquet":
            if self._dictionary is None and table.num_rows:
                self._dictionary = dictionary_columns(table)
            pq.write_table(table, tmp, row_group_size=max(1, table.num_rows),
                           use_dictionary=self._dictionary or False)
        else:
            pacsv.write_csv(table, tmp)
        os.replace(tmp, path)


class FolderSink(Sink):
    def __init__(self, fmt: str, target: Path, rejects: Path, run_id: str) -> None:
        self.fmt, self.target, self.rejects, self.run_id = fmt, target, rejects, run_id
        staging = target.parent / f".{target.name}.ferry-{run_id}"
        self.writer = ChunkFileWriter(fmt, staging, staging.with_name(staging.name + ".rejects"),
                                      staging.with_name(staging.name + ".counts"))

    def open(self, resume: bool) -> Durable:
        if not self.target.parent.is_dir():
            raise BatchError(f"--output {self.target}/: folder {self.target.parent} does not "
                             f"exist")
        for folder in (self.target, self.rejects):
            _check_replaceable(folder)
        w = self.writer
        staged = (w.staging, w.rejects_staging, w.counts_staging)
        if not resume:
            for folder in staged:
                shutil.rmtree(folder, ignore_errors=True)
        for folder in staged:
            folder.mkdir(exist_ok=True)
            for stray in folder.glob(".*.tmp"):  # a write cut short by a crash
                stray.unlink()
        parts = {p.name.split(".")[0] for p in w.staging.glob(f"part-*.{self.fmt}")}
        for folder in (w.rejects_staging, w.counts_staging):
            for stray in folder.glob("part-*"):  # of a chunk that never became durable
                if stray.name.split(".")[0] not in parts:
                    stray.unlink()
        done: Durable = {}
        for name in parts:
            counts = w.counts_staging / f"{name}.json"
            done[int(name.split("-")[1])] = (ChunkCounts(*json.loads(counts.read_text()))
                                             if counts.exists() else None)  # older Ferry
        return done

    def chunk_writer(self) -> ChunkWriter:
        return self.writer

    def write(self, result: ChunkResult) -> list[int]:
        if not result.stored:
            self.writer(result)
        return [result.chunk]

    def flush(self) -> list[int]:
        return []

    def publish(self, info: PublishInfo) -> None:
        marker = {"run_id": info.run_id, "model": info.model, "version": info.version,
                  "keys": info.keys, "rows": info.rows}
        (self.writer.staging / MARKER).write_text(json.dumps(marker))
        _swap(self.writer.staging, self.target)
        if any(self.writer.rejects_staging.iterdir()):
            (self.writer.rejects_staging / MARKER).write_text(json.dumps(marker))
            _swap(self.writer.rejects_staging, self.rejects)
        else:
            shutil.rmtree(self.writer.rejects_staging, ignore_errors=True)
            if self.rejects.exists():  # rejects of an earlier run must not pass for this one's
                shutil.rmtree(self.rejects)
        shutil.rmtree(self.writer.counts_staging, ignore_errors=True)

    def discard(self) -> None:
        for folder in (self.writer.staging, self.writer.rejects_staging,
                       self.writer.counts_staging):
            shutil.rmtree(folder, ignore_errors=True)


def _check_replaceable(folder: Path) -> None:
    if not folder.exists():
        return
    if not folder.is_dir():
        raise BatchError(f"--output {folder}/: a file of that name exists; a folder output "
                         f"replaces only a folder")
    if any(folder.iterdir()) and not (folder / MARKER).exists():
        raise BatchError(f"--output {folder}/ is a folder with files Ferry did not write (no "
                         f"{MARKER}); refusing to replace it. Pick a new or empty folder")


def _swap(staged: Path, target: Path) -> None:
    old: Any = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{staged.name.rsplit('-', 1)[-1]}")
        os.replace(target, old)
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
