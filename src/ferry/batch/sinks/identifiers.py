"""SQL names for the database sinks: one quoting rule, staging names that fit, and the
checks that refuse, before a run scores anything, column names a database would merge,
cut or reject.

- ``quote`` is how every name made from the job enters the sinks' SQL (tables, staging
  and chunks tables, columns, the key index; the fixed names of the chunks table and of
  ``batch_tables`` are plain): always in double quotes, a double quote inside doubled.
  SQLite and PostgreSQL both read that as the name exactly as given, so a column called
  ``order`` or ``select`` is not a keyword, ``Group`` keeps its capital in PostgreSQL (which
  folds unquoted names to lower case) and ``two words`` stays one name.
- ``prefix`` cuts a table's name for the staging names built from it, to whole characters
  and, for PostgreSQL, to bytes: PostgreSQL keeps the first 63 bytes of a name, so a staging
  name longer than that would silently be cut, and two of them could become one.
- ``check`` runs when the sink is made: a NUL character (neither database takes one), two
  columns that differ only in ASCII case (SQLite's names ignore it, so they
  would be one column), and for PostgreSQL an empty name or one over 63 bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from ferry.batch.job import BatchError

PG_NAME_BYTES = 63
"""PostgreSQL's longest name (``NAMEDATALEN - 1``): longer ones are cut to it."""


def quote(name: str) -> str:
    """``name`` as an SQL identifier for SQLite and PostgreSQL: in double quotes, each
    double quote in it doubled (``a "b" c`` is written ``"a ""b"" c"``)."""
    return '"' + name.replace('"', '""') + '"'


def prefix(name: str, n: int, dialect: str) -> str:
    """The first ``n`` characters of ``name``; for PostgreSQL also at most ``n`` bytes in
    UTF-8 (whole characters), so that ``prefix + suffix`` keeps its length in bytes."""
    cut = name[:n]
    if dialect != "sqlite":
        while len(cut.encode()) > n:
            cut = cut[:-1]
    return cut


def fold(dialect: str, name: str) -> str:
    """``name`` as ``dialect`` compares names: SQLite ignores ASCII upper and lower case
    (only ASCII), PostgreSQL compares quoted names exactly."""
    if dialect != "sqlite":
        return name
    return "".join(c.lower() if c.isascii() else c for c in name)


def check(dialect: str, where: str, tables: Iterable[str], columns: dict[str, list[str]]) -> None:
    """Raise a ``BatchError`` naming the table or column that ``dialect`` cannot hold as
    given; ``columns`` maps each table Ferry creates to its column names."""
    for table in tables:
        _check_name(dialect, where, table, f"table {table!r}", "a shorter --table or --rejects")
    for table, names in columns.items():
        seen: dict[str, str] = {}
        for name in names:
            _check_name(
                dialect,
                where,
                name,
                f"column {name!r} of table {table}",
                "the column renamed in the input",
            )
            other = seen.setdefault(fold(dialect, name), name)
            if other != name:
                raise BatchError(
                    f"{where}: columns {other!r} and {name!r} of table {table} would be one "
                    f"column: SQLite's names ignore upper and lower case. Rename one of them "
                    f"in the input (or write to PostgreSQL or a Parquet file)"
                )


def _check_name(dialect: str, where: str, name: str, what: str, fix: str) -> None:
    if "\x00" in name:
        raise BatchError(
            f"{where}: {what} has a NUL character, which {dialect} names cannot hold; use {fix}"
        )
    if dialect == "sqlite":
        return
    if not name:
        raise BatchError(f"{where}: {what} is empty; PostgreSQL needs a name: use {fix}")
    size = len(name.encode())
    if size > PG_NAME_BYTES:
        raise BatchError(
            f"{where}: {what} is {size} bytes long; PostgreSQL keeps the first "
            f"{PG_NAME_BYTES} bytes of a name and would cut it: use {fix}"
        )
