"""Stored batch predictions, read by key (served as ``GET /ferry/v1/predictions/{table}/{key}``
by ``protocols/prediction_routes.py``).

Reads the database in ``FERRY_PREDICTIONS_URL`` (``ServerSettings.predictions_url``). Only
tables that ``ferry batch`` wrote with ``--key`` are served (they are listed in that
database's ``batch_tables``), by their single key column. The answer holds the row's
columns, the run id, the model version, ``scored_at`` and ``age_s``; a table with several
rows for the key (``--mode append``) answers the newest.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ferry.errors import NotFound, PredictionsUnavailable


class PredictionStore:
    """Looks up one row by key; blocking, so the route runs it on a thread."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        if url.startswith(("postgresql://", "postgres://")):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        self.engine = sa.create_engine(url)
        self._tables: dict[str, list[str]] = {}

    def _keys(self, table: str) -> list[str]:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            try:
                row = c.execute(sa.text("SELECT key_columns FROM batch_tables WHERE "
                                        "table_name = :t"), {"t": table}).first()
            except sa.exc.SQLAlchemyError:
                row = None
        if row is None or not row[0]:
            raise NotFound(f"no predictions table {table!r}: tables are served once "
                           f"`ferry batch ... --key COLUMN` has written them")
        return str(row[0]).split(",")

    def lookup(self, table: str, key: str) -> dict[str, Any]:
        import sqlalchemy as sa

        keys = self._keys(table)
        if len(keys) != 1:
            raise NotFound(f"table {table!r} has a composite key {keys}; this route reads "
                           f"single-column keys")
        with self.engine.connect() as c:
            t = sa.Table(table, sa.MetaData(), autoload_with=c)
            column = t.c[keys[0]]
            value: Any = key
            kind = column.type.python_type
            if kind in (int, Decimal):  # Decimal: a uint64 key, numeric(20) in PostgreSQL
                if not key.lstrip("-").isdigit():
                    raise NotFound(f"no prediction for {keys[0]}={key!r} in {table!r}")
                value = kind(key)
            query = sa.select(t).where(column == value)
            if "scored_at" in t.c:
                query = query.order_by(t.c.scored_at.desc())
            row = c.execute(query.limit(1)).mappings().first()
        if row is None:
            raise NotFound(f"no prediction for {keys[0]}={key!r} in table {table!r}")
        values = {str(k): _plain(row[k]) for k in row.keys()}
        scored = _as_datetime(row.get("scored_at"))
        age = (datetime.now(UTC) - scored).total_seconds() if scored else None
        return {"table": table, "key": {keys[0]: values[keys[0]]},
                "run_id": values.get("run_id"), "model_version": values.get("model_version"),
                "scored_at": scored.isoformat() if scored else None,
                "age_s": round(age, 3) if age is not None else None, "prediction": values}


def _as_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _as_datetime(value).isoformat()  # type: ignore[union-attr]
    if isinstance(value, Decimal):  # uint64 columns in PostgreSQL: NUMERIC(20), integers
        return int(value) if value == value.to_integral_value() else float(value)
    return value


async def lookup(store: PredictionStore | None, table: str, key: str) -> dict[str, Any]:
    """``store.lookup`` on the default thread pool; ``PredictionsUnavailable`` when the
    server has no predictions database (``store`` is None)."""
    if store is None:
        raise PredictionsUnavailable("this server has no predictions database; start it "
                                     "with FERRY_PREDICTIONS_URL=sqlite:///preds.db (or a "
                                     "postgresql:// URL)")
    return await asyncio.get_running_loop().run_in_executor(None, store.lookup, table, key)
