"""Sinks: where scored chunks go, staged so a run publishes all of its rows or none.

Contract (every sink):

- ``open(resume)`` prepares the run's staging area and returns the chunks already made
  durable by an earlier attempt of the same run, each with its ``ChunkCounts`` (empty for a
  new run). The counts are kept with the chunk, so a resumed run rebuilds its run record
  from them: the staging, not the run store, is the truth about what the output holds.
  A chunk staged by an older Ferry, which kept no counts, maps to None;
- ``write(result)`` takes one chunk's output and rejects, in chunk order, and returns the
  chunks that this call made durable. A chunk is durable together with its rows and its
  counts: a crash never leaves a chunk counted whose rows are lost, nor rows whose chunk is
  not counted;
- ``flush()`` makes everything written durable and returns those chunks;
- ``publish(info)`` swaps the staged rows in atomically (file rename; one database
  transaction that drops/renames or appends, then drops the staging tables);
- ``close()`` releases resources and keeps staging for ``--resume``; ``discard()`` drops it.

Files are staged as part files in ``.<name>.ferry-<run>/`` beside the output, each with a
sidecar listing its chunks and their counts, replaced into place after the part; a run that
needed one part publishes by renaming it. A folder output keeps one small counts file per
chunk in ``.<name>.ferry-<run>.counts/``, written before the chunk's part is renamed into
place. Databases are staged in ``<table>__stage_<run>`` with ``<table>__chunks_<run>``
holding the durable chunk numbers and counts, written in the same transaction as the rows;
SQLite inserts with ADBC's ingest (``executemany`` where it cannot), PostgreSQL with
``COPY ... FROM STDIN`` (psycopg 3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ferry.batch.job import BatchError
from ferry.batch.scoring import ChunkResult

ChunkWriter = Callable[[ChunkResult], ChunkResult]
"""Stores a chunk's tables and returns its ``counts_only()`` result."""

META_TABLE = "batch_tables"
"""In an output database: which tables Ferry wrote, their key column(s) and last run."""


class SinkError(BatchError):
    """The output could not be written (after a retry); the run is resumable."""

    http_status = 500


@dataclass(frozen=True)
class PublishInfo:
    run_id: str
    model: str
    version: int
    keys: list[str]
    rows: int


@dataclass(frozen=True)
class ChunkCounts:
    """One durable chunk's rows, as the run record counts them."""

    rows_in: int
    rows_out: int
    rows_rejected: int

    @classmethod
    def of(cls, result: ChunkResult) -> ChunkCounts:
        return cls(result.rows_in, result.rows_out, result.rows_rejected)

    def as_list(self) -> list[int]:
        return [self.rows_in, self.rows_out, self.rows_rejected]


Durable = dict[int, ChunkCounts | None]
"""What ``open(resume)`` returns: chunk -> its counts, None where the staging kept none."""


class Sink:
    def open(self, resume: bool) -> Durable:
        raise NotImplementedError

    def write(self, result: ChunkResult) -> list[int]:
        raise NotImplementedError

    def chunk_writer(self) -> ChunkWriter | None:
        """A picklable writer that stores one chunk durably from any process (a scoring
        worker), or None when only this process may write (ordered files, databases). When
        workers store chunks themselves, ``write`` receives results with ``stored`` set."""
        return None

    def flush(self) -> list[int]:
        raise NotImplementedError

    def publish(self, info: PublishInfo) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources; staging stays for ``--resume``."""

    def discard(self) -> None:
        """Drop staging."""
