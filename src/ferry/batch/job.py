"""``BatchJob``: everything one batch run needs, as plain data (stored with the run record
so ``--resume RUN_ID`` replays the same job), and the parsing of ``--input`` / ``--output``.

Locations: a file path or glob (``data/*.csv``, ``day=1/``: a folder of files), the same on
object storage (``s3://bucket/day=1/``, any fsspec URL: see ``remote``), or a SQLAlchemy URL
(``sqlite:///x.db``, ``postgresql://host/db``) whose table comes from ``?table=NAME`` or
``--table``. The format of a file comes from its suffix unless given.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ferry.errors import InvalidInput

FILE_FORMATS = ("parquet", "csv", "jsonl")
OUTPUT_FORMATS = ("parquet", "csv")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv",
             ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_DB_SCHEMES = ("sqlite", "postgresql", "postgres")


class BatchError(InvalidInput):
    """A batch job that cannot run as asked: bad location, missing column, too many rejects."""


@dataclass(frozen=True)
class Location:
    """Where rows come from or go to: a set of files of one format, or a database table."""

    kind: str
    """``file`` or ``sql``."""
    format: str
    """``parquet``, ``csv``, ``jsonl`` for files; the dialect (``sqlite``, ``postgresql``)
    for sql."""
    paths: tuple[str, ...] = ()
    """Files, for ``file`` inputs (expanded from globs and folders, sorted)."""
    target: str = ""
    """The file path for a file output; the SQLAlchemy URL (without ``table``) for sql."""
    table: str = ""
    """The table, for sql."""
    folder: bool = False
    """A file output written as a folder of part files (``--output preds/``)."""

    @property
    def is_sql(self) -> bool:
        return self.kind == "sql"

    def describe(self) -> str:
        if self.is_sql:
            return f"{redact_url(self.target)} table {self.table}"
        return self.target or ", ".join(self.paths)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _sql_location(text: str, table: str | None) -> Location:
    base, _, raw_query = text.partition("?")
    query = dict(parse_qsl(raw_query))
    name = query.pop("table", None) or table
    if not name:
        raise BatchError(f"{redact_url(text)}: which table? add ?table=NAME to the URL or --table")
    scheme, sep, rest = base.partition("://")
    dialect = scheme.split("+")[0]
    if dialect in ("postgresql", "postgres"):
        # psycopg 3 is the driver Ferry installs (ferry[postgres]); COPY needs it
        base, dialect = f"postgresql+psycopg{sep}{rest}", "postgresql"
    url = base + (f"?{urlencode(query)}" if query else "")
    return Location("sql", dialect, target=url, table=name)


def is_sql_url(text: str) -> bool:
    return urlsplit(text).scheme.split("+")[0] in _DB_SCHEMES


def parse_input(text: str, fmt: str | None = None, table: str | None = None) -> Location:
    """``--input``: a SQL URL, a file, a folder of files or a glob."""
    from ferry.batch import remote

    if is_sql_url(text):
        return _sql_location(text, table)
    if remote.is_remote(text):
        paths = remote.expand(text)
    else:
        paths = _local_inputs(remote.local_path(text))
    if not paths:
        raise BatchError(f"--input {text!r} matches no file")
    formats = {fmt or _format_of(p, "--input") for p in paths}
    if len(formats) > 1:
        raise BatchError(f"--input {text!r} mixes formats {sorted(formats)}; give one "
                         f"format per job (or --input-format)")
    found = formats.pop()
    if found not in FILE_FORMATS:
        raise BatchError(f"--input-format {found!r}: use one of {', '.join(FILE_FORMATS)}")
    return Location("file", found, paths=tuple(paths), target=text)


def _local_inputs(text: str) -> list[str]:
    if any(c in text for c in "*?["):
        paths = sorted(glob.glob(text, recursive=True))
    elif os.path.isdir(text):
        paths = sorted(str(p) for p in Path(text).rglob("*") if p.is_file()
                       and not p.name.startswith((".", "_")))
    else:
        paths = [text]
    for p in paths:
        if not os.path.isfile(p):
            raise BatchError(f"--input {p!r}: no such file")
    return paths


def parse_output(text: str, fmt: str | None = None, table: str | None = None) -> Location:
    """``--output``: a SQL URL (with a table), a ``.parquet`` / ``.csv`` file, or a folder
    of part files (a path ending in ``/``, or an existing folder; Parquet unless ``fmt``)."""
    from ferry.batch import remote

    if is_sql_url(text):
        return _sql_location(text, table)
    if remote.is_remote(text):
        is_dir = text.endswith("/") or remote.is_folder(text)
    else:
        text = remote.local_path(text)
        is_dir = text.endswith(("/", os.sep)) or os.path.isdir(text)
    if is_dir:
        found = fmt or "parquet"
        if found not in OUTPUT_FORMATS:
            raise BatchError(f"--output-format {found!r}: use one of {', '.join(OUTPUT_FORMATS)}")
        return Location("file", found, target=text.rstrip("/" + os.sep) or text, folder=True)
    found = fmt or _format_of(text, "--output")
    if found not in OUTPUT_FORMATS:
        raise BatchError(f"--output {text!r}: format {found!r} is not writable; use "
                         f"{', '.join(OUTPUT_FORMATS)} or a database URL")
    return Location("file", found, target=text)


def _format_of(path: str, option: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise BatchError(f"{option} {path!r}: cannot tell the format from the suffix "
                         f"{suffix or '(none)'}; use one of {', '.join(sorted(_SUFFIXES))} "
                         f"or a database URL, or pass {option}-format")
    return _SUFFIXES[suffix]


@dataclass
class BatchJob:
    """One scoring job. Stored as JSON in the run record; ``--resume`` runs it again."""

    model: str
    input: Location
    output: Location
    repository: str
    version: int | None = None
    """None = the newest version the model's version policy makes live."""
    keys: list[str] = field(default_factory=list)
    """Key columns copied to the output (and indexed in a database output)."""
    passthrough: list[str] = field(default_factory=list)
    """Other input columns copied to the output."""
    mapping: dict[str, str] = field(default_factory=dict)
    """``--map``: feature or input name -> input column (or a ``{i}`` pattern for a
    [-1, k] input)."""
    mode: str = "replace"
    """Database outputs: ``replace`` swaps the table in; ``append`` adds this run's rows."""
    rejects: str | None = None
    """Where rejected rows go: a file, or a table in the output database. Default: beside
    the output."""
    max_reject_rate: float = 1.0
    """Fail the run when more than this share of rows is rejected (1.0 = never)."""
    chunk_rows: int = 65536
    """Rows per chunk: the unit of work, progress and resume. Parquet row groups are cut to it."""
    batch_rows: int | None = None
    """Rows per model call; None = chosen from the input width (8192 for 32 features)."""
    workers: int = 1
    """Scoring processes; 1 scores in this process with reading and writing on threads.
    With the Ray engine: actors in the pool, 0 = one per CPU of the Ray cluster."""
    engine: str = "local"
    """``local`` (this machine) or ``ray`` (Ray Data; needs ``ferry[ray]``)."""
    ray_address: str | None = None
    """The Ray cluster (``auto``, ``ray://host:10001``); None starts a local Ray."""
    checkpoint_s: float = 30.0
    """Seconds between durable checkpoints of the output (what a resume can skip)."""
    trust_pickles: bool = False
    schedule: str | None = None
    """The schedule that started the run, if any."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> BatchJob:
        raw = dict(raw)
        for name in ("input", "output"):
            loc = dict(raw[name])
            loc["paths"] = tuple(loc.get("paths", ()))
            raw[name] = Location(**loc)
        return cls(**raw)
