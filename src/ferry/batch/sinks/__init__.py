"""Sinks: where scored chunks go (one file in ``files``, a folder of part files in
``folder``, database tables in ``database``, any of the first two on object storage in
``remote``); the contract every sink keeps is in ``base``."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ferry.batch.job import BatchError, Location
from ferry.batch.remote import is_remote
from ferry.batch.sinks.base import META_TABLE, PublishInfo, Sink, SinkError
from ferry.batch.sinks.database import DbSink
from ferry.batch.sinks.files import FileSink
from ferry.batch.sinks.folder import FolderSink

__all__ = ["META_TABLE", "DbSink", "FileSink", "FolderSink", "PublishInfo", "Sink", "SinkError",
           "open_sink"]


def open_sink(output: Location, rejects: str | None, run_id: str, mode: str,
              schema: pa.Schema, rejects_schema: pa.Schema, checkpoint_s: float = 30.0) -> Sink:
    if output.is_sql:
        return DbSink(output, rejects or f"{output.table}_rejects", run_id, mode, schema,
                      rejects_schema, commit_s=min(10.0, checkpoint_s))
    if mode == "append":
        raise BatchError("--mode append is for database outputs; a file output is replaced")
    if is_remote(output.target) or is_remote(rejects):  # staged locally, uploaded on publish
        from ferry.batch.sinks.remote import RemoteSink

        return RemoteSink(output, rejects, run_id, lambda local, local_rejects: open_sink(
            local, local_rejects, run_id, mode, schema, rejects_schema, checkpoint_s))
    target = Path(output.target)
    if output.folder:
        return FolderSink(output.format, target, Path(rejects or f"{target}.rejects"), run_id)
    if rejects is None:
        rejects = str(target.with_name(f"{target.stem}.rejects{target.suffix}"))
    return FileSink(output.format, target, Path(rejects), run_id, schema, rejects_schema,
                    checkpoint_s)
