"""A repository with one model made for monitoring (five named numeric features and one
categorical input), with reference data in its version folder, and helpers to talk to it."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

DRIFTY = '''
import numpy as np

class Drifty:
    """score = mean of x; label = 1 when the score is positive."""
    def load(self, version_dir):
        pass
    def predict(self, inputs):
        x = np.nan_to_num(inputs["x"].astype(np.float64))
        score = x.mean(axis=1).astype(np.float32)
        return {"score": score, "label": (score > 0).astype(np.int64)}
'''

MANIFEST = """\
runtime: python
max_batch_size: 1000
inputs:
  - {name: x, datatype: FP32, shape: [-1, 5], features: [f0, f1, f2, f3, f4]}
  - {name: color, datatype: BYTES, shape: [-1]}
outputs:
  - {name: score, datatype: FP32, shape: [-1]}
  - {name: label, datatype: INT64, shape: [-1]}
"""

COLORS = ["red", "green", "blue"]
REFERENCE_ROWS = 4000


def reference_data(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (REFERENCE_ROWS, 5)).astype(np.float32)
    cols: dict[str, np.ndarray] = {f"f{i}": x[:, i] for i in range(5)}
    cols["color"] = rng.choice(COLORS, REFERENCE_ROWS, p=[0.5, 0.3, 0.2])
    return cols


@pytest.fixture(scope="session")
def monitor_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("monitor-repo")
    (root / "drifty" / "1").mkdir(parents=True)
    (root / "drifty" / "1" / "model.py").write_text(textwrap.dedent(DRIFTY))
    (root / "drifty" / "model.yaml").write_text(MANIFEST)
    (root / "drifty" / "monitoring.yaml").write_text(textwrap.dedent("""\
        alerts:
          - {name: inputs-drifted, when: "drift.feature_share > 0.3", window: 1h}
    """))
    cols = reference_data()
    pq.write_table(pa.table({k: pa.array(v.tolist()) for k, v in cols.items()}),
                   root / "drifty" / "1" / "reference.parquet")
    (root / "plain" / "1").mkdir(parents=True)
    (root / "plain" / "1" / "model.py").write_text(textwrap.dedent(DRIFTY))
    (root / "plain" / "model.yaml").write_text(MANIFEST)
    return root


def infer_request(x: np.ndarray, colors: list[str]) -> tuple[bytes, dict[str, str]]:
    """A V2 request with ``x`` as a binary tensor (so NaN can be sent) and ``color`` as JSON;
    returns the body and the headers to send with it."""
    import orjson

    raw = np.ascontiguousarray(x, dtype=np.float32).tobytes()
    header = orjson.dumps({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": list(x.shape),
         "parameters": {"binary_data_size": len(raw)}},
        {"name": "color", "datatype": "BYTES", "shape": [len(colors)], "data": colors}]})
    return header + raw, {"Inference-Header-Content-Length": str(len(header)),
                          "Content-Type": "application/octet-stream"}


def fresh_postgres(url: str) -> str:
    """A new empty database on the session's PostgreSQL server."""
    name = "t" + uuid.uuid4().hex[:12]
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store: a SQLite file, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ferry.db'}"
    else:
        yield fresh_postgres(request.getfixturevalue("postgres_url"))
