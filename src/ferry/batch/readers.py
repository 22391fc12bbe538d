"""Readers: a job's input as numbered chunks of Arrow record batches, in bounded memory.

Chunk numbers are a pure function of the input and ``chunk_rows``, so a resumed run finds the
same chunks. Parquet is read one row group at a time (``ParquetFile.read_row_group``, which
frees each group once dropped; ``iter_batches`` was measured to keep every group alive) and
hands out *slices*, so worker processes read their own chunks; CSV, JSON Lines and SQL
tables are streamed once, in order, by the process that plans the job.

CSV and JSON Lines have no reliable types, so every column is read as text and the model's
inputs are converted per column (a value that does not convert rejects its row, it does not
stop the read).

Paths may be fsspec URLs (``s3://...``, see ``remote``): Parquet is then read through pyarrow
with the fsspec filesystem (footer and the columns read, one row group at a time), CSV and
JSON Lines as streams. A ``ParquetSlice`` holds the URL, so a worker process or a Ray actor
reads its slice from object storage itself.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ferry.batch.job import BatchError, Location
from ferry.batch.remote import is_remote, open_binary, open_text, parquet_file


@dataclass(frozen=True)
class ParquetSlice:
    """Rows ``offset .. offset+length`` of one row group of one Parquet file."""

    path: str
    row_group: int
    offset: int
    length: int


Payload = ParquetSlice | pa.RecordBatch


class Source:
    """An input opened for reading: its schema, and its chunks in order."""

    schema: pa.Schema

    def chunks(self, columns: list[str], skip: set[int]) -> Iterator[tuple[int, Payload]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release files or connections."""


def open_source(location: Location, chunk_rows: int) -> Source:
    if location.is_sql:
        return SqlSource(location, chunk_rows)
    if location.format == "parquet":
        return ParquetSource(location, chunk_rows)
    if location.format == "csv":
        return CsvSource(location, chunk_rows)
    return JsonLinesSource(location, chunk_rows)


class ParquetSource(Source):
    def __init__(self, location: Location, chunk_rows: int) -> None:
        self.paths = location.paths
        self.chunk_rows = chunk_rows
        try:
            self.files = [parquet_file(p) for p in self.paths]
        except (OSError, pa.ArrowInvalid) as exc:
            raise BatchError(f"--input: cannot read Parquet: {exc}") from None
        self.schema = self.files[0].schema_arrow
        for path, f in zip(self.paths[1:], self.files[1:], strict=True):
            missing = set(self.schema.names) - set(f.schema_arrow.names)
            if missing:
                raise BatchError(f"--input {path} lacks column(s) {sorted(missing)} that "
                                 f"{self.paths[0]} has; every file needs the same columns")

    def slices(self) -> Iterator[ParquetSlice]:
        for path, f in zip(self.paths, self.files, strict=True):
            meta = f.metadata
            for g in range(meta.num_row_groups):
                rows = meta.row_group(g).num_rows
                for offset in range(0, rows, self.chunk_rows):
                    yield ParquetSlice(path, g, offset, min(self.chunk_rows, rows - offset))

    def chunks(self, columns: list[str], skip: set[int]) -> Iterator[tuple[int, Payload]]:
        for chunk, piece in enumerate(self.slices()):
            if chunk not in skip:
                yield chunk, piece


class SliceReader:
    """Reads ``ParquetSlice`` s, keeping the last row group for the next slice of it."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self._files: dict[str, pq.ParquetFile] = {}
        self._group: tuple[str, int] | None = None
        self._table: pa.Table | None = None

    def read(self, piece: Payload) -> pa.RecordBatch:
        if isinstance(piece, pa.RecordBatch):
            return piece
        key = (piece.path, piece.row_group)
        if key != self._group:
            f = self._files.get(piece.path)
            if f is None:
                f = self._files[piece.path] = parquet_file(piece.path)
            # use_threads: Arrow's CPU pool decodes (a worker process sizes it to one
            # thread), which took less CPU than decoding on this thread (an mlp bench row
            # group: ~72 vs ~82 ms). Not memory-mapped, though that saved another ~20 ms:
            # the mapped pages stayed in the process's RSS, which then grew with the input.
            self._table = f.read_row_group(piece.row_group, columns=self.columns)
            self._group = key
        assert self._table is not None  # noqa: S101 - set just above
        table = self._table.slice(piece.offset, piece.length)
        return table.combine_chunks().to_batches()[0] if table.num_rows else \
            pa.RecordBatch.from_pylist([], schema=table.schema)


def rebatch(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream of batches into batches of exactly ``rows`` (the last may be short)."""
    pending: list[pa.RecordBatch] = []
    have = 0
    for batch in batches:
        pending.append(batch)
        have += batch.num_rows
        while have >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows).combine_chunks().to_batches()[0]
            rest = table.slice(rows)
            pending = rest.combine_chunks().to_batches() if rest.num_rows else []
            have = rest.num_rows
    if have:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


CSV_BLOCK_BYTES = 1 << 20
"""Block size of Arrow's streaming CSV reader (its own default). The reader reads ahead up to
32 blocks in the background, a limit Python cannot set, so this bounds the raw CSV held in
memory: ~32 MiB. With 4 MiB blocks a CSV under ~128 MiB sat in memory whole, and the
process's peak grew with the file (418 against 298 MiB for 4.8M iris rows). A row wider
than one block cannot be read ("straddles two block boundaries")."""


class _StreamSource(Source):
    def __init__(self, location: Location, chunk_rows: int) -> None:
        self.location = location
        self.chunk_rows = chunk_rows

    def _batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError

    def chunks(self, columns: list[str], skip: set[int]) -> Iterator[tuple[int, Payload]]:
        for chunk, batch in enumerate(rebatch(self._batches(columns), self.chunk_rows)):
            if chunk not in skip:
                yield chunk, batch


class CsvSource(_StreamSource):
    def __init__(self, location: Location, chunk_rows: int) -> None:
        super().__init__(location, chunk_rows)
        names: list[str] | None = None
        for path in location.paths:
            with _csv_input(path) as source:
                try:
                    reader = pacsv.open_csv(source, parse_options=self._parse(path))
                except (OSError, pa.ArrowInvalid) as exc:
                    raise BatchError(f"--input {path}: cannot read CSV: {exc}") from None
                found = reader.schema.names
                reader.close()
            if names is None:
                names = found
            elif set(names) - set(found):
                raise BatchError(f"--input {path} lacks column(s) "
                                 f"{sorted(set(names) - set(found))}")
        self.schema = pa.schema([pa.field(n, pa.string()) for n in names or []])

    @staticmethod
    def _parse(path: str) -> pacsv.ParseOptions:
        return pacsv.ParseOptions(delimiter="\t" if path.lower().endswith(".tsv") else ",")

    def _batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in self.schema.names},
                                       include_columns=columns, strings_can_be_null=True)
        for path in self.location.paths:
            with _csv_input(path) as source:
                try:
                    reader = pacsv.open_csv(source,
                                            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                                            parse_options=self._parse(path),
                                            convert_options=convert)
                    yield from reader
                except pa.ArrowInvalid as exc:
                    raise BatchError(f"--input {path}: unreadable CSV: {exc}") from None


@contextlib.contextmanager
def _csv_input(path: str) -> Iterator[Any]:
    """What ``pyarrow.csv`` reads: the path of a local file (Arrow's own I/O), else an fsspec
    file object, closed afterwards."""
    if not is_remote(path):
        yield path
        return
    try:
        fh = open_binary(path)
    except OSError as exc:
        raise BatchError(f"--input {path}: {exc}") from None
    with fh:
        yield fh


class JsonLinesSource(_StreamSource):
    """One JSON object per line; values become text (nested ones as JSON)."""

    def __init__(self, location: Location, chunk_rows: int) -> None:
        super().__init__(location, chunk_rows)
        names: dict[str, None] = {}
        for path in location.paths:
            for _, row in zip(range(1000), self._rows(path), strict=False):
                names.update(dict.fromkeys(row))
        self.schema = pa.schema([pa.field(n, pa.string()) for n in names])

    @staticmethod
    def _rows(path: str) -> Iterator[dict[str, Any]]:
        try:
            fh = open_text(path)
        except OSError as exc:
            raise BatchError(f"--input {path}: {exc}") from None
        with fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BatchError(f"--input {path} line {number}: not JSON: {exc}") from None
                if not isinstance(row, dict):
                    raise BatchError(f"--input {path} line {number}: expected an object")
                yield row

    def _batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        for path in self.location.paths:
            rows: list[dict[str, Any]] = []
            for row in self._rows(path):
                rows.append(row)
                if len(rows) >= self.chunk_rows:
                    yield _text_batch(rows, columns)
                    rows = []
            if rows:
                yield _text_batch(rows, columns)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def _text_batch(rows: list[dict[str, Any]], columns: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([_text(r.get(c)) for r in rows], pa.string()) for c in columns], names=columns)


class SqlSource(Source):
    """``SELECT`` the table's columns, streamed with a server-side cursor."""

    def __init__(self, location: Location, chunk_rows: int) -> None:
        import sqlalchemy as sa

        self.chunk_rows = chunk_rows
        self.engine = sa.create_engine(location.target)
        try:
            table = sa.Table(location.table, sa.MetaData(), autoload_with=self.engine)
        except sa.exc.NoSuchTableError:
            raise BatchError(f"--input: no table {location.table!r} in "
                             f"{location.describe()}") from None
        except sa.exc.SQLAlchemyError as exc:
            raise BatchError(f"--input {location.describe()}: {exc}") from None
        self.table = table
        self.schema = pa.schema([pa.field(c.name, _arrow_type(c.type)) for c in table.columns])

    def chunks(self, columns: list[str], skip: set[int]) -> Iterator[tuple[int, Payload]]:
        import sqlalchemy as sa

        query = sa.select(*[self.table.c[c] for c in columns])
        fields = [self.schema.field(c) for c in columns]
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True,
                                            yield_per=self.chunk_rows).execute(query)
            chunk = 0
            while rows := result.fetchmany(self.chunk_rows):
                if chunk not in skip:
                    arrays = [_column([r[j] for r in rows], f.type) for j, f in enumerate(fields)]
                    yield chunk, pa.RecordBatch.from_arrays(arrays, names=columns)
                chunk += 1

    def close(self) -> None:
        self.engine.dispose()


def _arrow_type(sql_type: Any) -> pa.DataType:
    import sqlalchemy as sa

    for cls, arrow in ((sa.Boolean, pa.bool_()), (sa.Integer, pa.int64()),
                       (sa.Float, pa.float64()), (sa.Numeric, pa.float64()),
                       (sa.DateTime, pa.timestamp("us"))):
        if isinstance(sql_type, cls):
            return arrow
    return pa.string()


def _column(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # SQLite's dynamic typing: fall back to text
        return pa.array([_text(v) for v in values], pa.string())
