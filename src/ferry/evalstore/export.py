"""Exports for retraining: a window of logged rows as a Parquet table.

Columns: ``request_id``, ``ts``, ``version``, every input feature and prediction column
(named as in ``evalstore.features``; output columns get a ``pred:`` prefix when they clash
with an input's name), and with feedback ``label`` and ``reward``, keeping only rows that
have feedback. Versions are read one at a time and concatenated.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ferry.errors import NotFound
from ferry.evalstore.features import FeatureLayout
from ferry.evalstore.windows import load_layouts, read_window, versions_in


def export_table(engine: Any, model: str, since_s: float, version: int | None = None,
                 with_feedback: bool = False) -> Any:
    """A ``pyarrow.Table`` of the rows (see the module docstring)."""
    import pyarrow as pa  # a dependency of the default install

    end = time.time() + 1e-3
    start = end - since_s
    layouts = load_layouts(engine, model)
    if not layouts:
        raise NotFound(f"the evaluation store has nothing for model {model!r}")
    wanted = [version] if version is not None else versions_in(engine, model, start, end)
    tables = []
    for v in wanted:
        if v not in layouts:
            continue
        layout = FeatureLayout.from_json(layouts[v])
        data = read_window(engine, model, start, end, v, with_feedback=with_feedback)
        if not data.rows:
            continue
        cols: dict[str, Any] = {"request_id": data.request_ids.astype(str), "ts": data.ts,
                                "version": np.full(data.rows, v, dtype=np.int64)}
        inputs = {f.name for f in layout.inputs}
        for name, values in layout.columns(data.inputs, data.outputs).items():
            key = f"pred:{name}" if name in inputs and name in cols else name
            if values.dtype.kind == "O":
                values = np.array([x.decode() if isinstance(x, bytes) else x for x in values],
                                  dtype=object)
            cols[key] = values
        if with_feedback:
            labels = data.labels if data.labels is not None else np.full(data.rows, None,
                                                                         dtype=object)
            rewards = data.rewards if data.rewards is not None else np.full(data.rows, np.nan)
            keep = np.array([x is not None for x in labels]) | ~np.isnan(rewards)
            cols = {k: np.asarray(c)[keep] for k, c in cols.items()}
            cols["label"] = [None if x is None else str(x) for x in labels[keep]]
            cols["reward"] = rewards[keep]
        tables.append(pa.table({k: pa.array(list(c) if isinstance(c, list) or
                                           np.asarray(c).dtype.kind == "O" else c)
                                for k, c in cols.items()}))
    if not tables:
        return pa.table({"request_id": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="default")


def export_parquet(engine: Any, model: str, since_s: float, path: str,
                   version: int | None = None, with_feedback: bool = False) -> int:
    """Write the export to ``path``; returns the number of rows."""
    import pyarrow.parquet as pq

    table = export_table(engine, model, since_s, version, with_feedback)
    pq.write_table(table, path)
    return int(table.num_rows)
