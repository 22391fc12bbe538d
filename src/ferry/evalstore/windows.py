"""Windowed reads of the store: the rows monitoring, exports and alerts work on.

``read_window`` returns one ``WindowData`` with every successful prediction of a model in
``[start, end)`` decoded and stacked row-wise (a request of k rows gives k rows), and the
newest feedback of each request joined to its rows. Reads only: safe from any thread.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Engine, func, select

from ferry.errors import InvalidInput
from ferry.evalstore import codec
from ferry.evalstore.features import FeatureLayout
from ferry.evalstore.schema import feedback, model_versions, predictions
from ferry.types import Tensors

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``15m``, ``1h``, ``7d``, ``2w`` or a plain number of seconds."""
    m = _DURATION.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise InvalidInput(f"window {text!r} is not a duration; use e.g. 30s, 15m, 1h, 7d")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class WindowData:
    """One model version's rows in a time window."""

    model: str
    version: int | None
    start: float
    end: float
    requests: int = 0
    inputs: Tensors = field(default_factory=dict)
    outputs: Tensors = field(default_factory=dict)
    ts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per row: the request's timestamp."""
    request_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    labels: np.ndarray | None = None
    """Per row: the label (object array, None where there is none)."""
    rewards: np.ndarray | None = None
    """Per row: the reward (NaN where there is none)."""
    latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per request, successes and failures."""
    errors: int = 0

    @property
    def rows(self) -> int:
        return len(self.ts)


def load_layouts(engine: Engine, model: str) -> dict[int, dict[str, Any]]:
    """Every stored layout document of ``model`` by version."""
    with engine.connect() as conn:
        result = conn.execute(select(model_versions.c.version, model_versions.c.layout)
                              .where(model_versions.c.model == model))
        return {int(v): orjson.loads(doc) for v, doc in result}


def layout_of(engine: Engine, model: str, version: int) -> FeatureLayout | None:
    doc = load_layouts(engine, model).get(version)
    return None if doc is None else FeatureLayout.from_json(doc)


def versions_in(engine: Engine, model: str, start: float, end: float) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(predictions.c.version).distinct().where(
            predictions.c.model == model, predictions.c.ts >= start,
            predictions.c.ts < end)).scalars())


def read_window(engine: Engine, model: str, start: float, end: float | None = None,
                version: int | None = None, with_feedback: bool = True,
                limit: int | None = None) -> WindowData:
    """The successful predictions of ``model`` (one version, or all) in ``[start, end)``."""
    end = time.time() + 1e-3 if end is None else end
    cols = predictions.c
    where = [cols.model == model, cols.ts >= start, cols.ts < end]
    if version is not None:
        where.append(cols.version == version)
    data = WindowData(model, version, start, end)
    marker = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    sql_where = f"model = {marker} AND ts >= {marker} AND ts < {marker}"
    params: list[Any] = [model, start, end]
    if version is not None:
        sql_where += f" AND version = {marker}"
        params.append(version)
    with engine.connect() as conn:
        # the DBAPI cursor: a million rows through SQLAlchemy's Row and type processing
        # cost more than decoding them
        cursor = conn.connection.cursor()
        try:
            if limit:
                cursor.execute(f"SELECT latency_ms, outcome FROM predictions WHERE "
                               f"{sql_where}", params)
                lat = cursor.fetchall()
                cursor.execute(f"SELECT request_id, ts, rows, inputs, outputs FROM "
                               f"predictions WHERE {sql_where} AND outcome = 'success' "
                               f"ORDER BY ts LIMIT {int(limit)}", params)
                rows = cursor.fetchall()
            else:  # one pass: every row, failures filtered out here
                cursor.execute(f"SELECT request_id, ts, rows, inputs, outputs, latency_ms, "
                               f"outcome FROM predictions WHERE {sql_where} ORDER BY ts",
                               params)
                rows = cursor.fetchall()
                lat = [r[5:] for r in rows]
                if any(r[6] != "success" for r in rows):
                    rows = [r for r in rows if r[6] == "success"]
        finally:
            cursor.close()
        if lat:
            latency, outcomes = zip(*lat, strict=True)
            data.latency_ms = np.array(latency, dtype=np.float64)
            data.errors = len(outcomes) - outcomes.count("success")
        fb: dict[str, tuple[Any, Any]] = {}
        if with_feedback and rows:
            q = (select(feedback.c.request_id, feedback.c.label, feedback.c.reward)
                 .join(predictions, predictions.c.request_id == feedback.c.request_id)
                 .where(*where, cols.outcome == "success").order_by(feedback.c.id))
            for rid, label, reward in conn.execute(q):
                fb[rid] = (label, reward)  # newest wins: rows come in id order
    data.requests = len(rows)
    if not rows:
        return data
    rid_list, ts_list, _, in_blobs, out_blobs = list(zip(*rows, strict=True))[:5]
    data.inputs, counts = codec.decode_many([bytes(b) for b in in_blobs]
                                            if not isinstance(in_blobs[0], bytes)
                                            else in_blobs)
    if all(o is not None for o in out_blobs):
        data.outputs, _ = codec.decode_many([bytes(b) for b in out_blobs]
                                            if not isinstance(out_blobs[0], bytes)
                                            else out_blobs)
    data.ts = np.repeat(np.array(ts_list, dtype=np.float64), counts)
    rids = np.array(rid_list, dtype=object)
    data.request_ids = np.repeat(rids, counts)
    if fb:
        labels = np.full(data.rows, None, dtype=object)
        rewards = np.full(data.rows, np.nan)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        for i, rid in enumerate(rids):
            hit = fb.get(rid)
            if hit is None:
                continue
            label, reward = hit
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            if label is not None:
                value = orjson.loads(label)
                if isinstance(value, list) and len(value) == hi - lo:
                    labels[lo:hi] = np.array(value, dtype=object)
                else:
                    labels[lo:hi] = [value] * (hi - lo)
            if reward is not None:
                rewards[lo:hi] = reward
        data.labels, data.rewards = labels, rewards
    return data


def latest_version(engine: Engine, model: str) -> int | None:
    with engine.connect() as conn:
        v = conn.execute(select(func.max(predictions.c.version))
                         .where(predictions.c.model == model)).scalar()
        if v is None:
            v = conn.execute(select(func.max(model_versions.c.version))
                             .where(model_versions.c.model == model)).scalar()
    return None if v is None else int(v)
