"""Fixtures for batch scoring: a repository with the example models plus python models that
sleep or crash, real input files, and an independent reference scorer (ONNX Runtime
called directly, not through Ferry)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import RAISER_MODEL

_SLOW = '''
import time
import numpy as np

class Slow:
    """y = x * 2, slowly: lets a test interrupt a run part-way."""
    def load(self, version_dir):
        pass
    def predict(self, inputs):
        time.sleep(0.05)
        return {"y": inputs["x"] * 2}
'''

_CRASH = '''
import os
from pathlib import Path
import numpy as np

class Crash:
    """Kills its process on a row with x == -1: always, or only the first time when
    the CRASH_ONCE file names a marker path."""
    def load(self, version_dir):
        self.marker = Path(os.environ.get("FERRY_TEST_CRASH_MARKER", "/nonexistent/x"))
    def predict(self, inputs):
        x = inputs["x"]
        if (x == -1).any():
            if not self.marker.parent.exists():
                os._exit(3)
            if not self.marker.exists():
                self.marker.write_text("crashed once")
                os._exit(3)
        return {"y": x * 2}
'''

_PY_MANIFEST = """\
    runtime: python
    max_batch_size: 64
    inputs: [{name: x, datatype: FP32, shape: [-1]}]
    outputs: [{name: y, datatype: FP32, shape: [-1]}]
"""


@pytest.fixture(scope="session")
def batch_repo(example_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batchrepo")
    for name in ("iris", "tabular"):
        shutil.copytree(example_repo / name, root / name)
    for name, code in (("slow", _SLOW), ("crash", _CRASH), ("raiser", RAISER_MODEL)):
        (root / name / "1").mkdir(parents=True)
        (root / name / "1" / "model.py").write_text(textwrap.dedent(code))
        (root / name / "model.yaml").write_text(textwrap.dedent(_PY_MANIFEST))
    return root


IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def iris_table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.uniform([4, 2, 1, 0.1], [8, 4.5, 7, 2.5], size=(n, 4)).astype(np.float32)
    cols = {"id": pa.array([f"row-{i}" for i in range(n)]),
            "region": pa.array(rng.choice(["north", "south"], n))}
    for j, f in enumerate(IRIS_FEATURES):
        cols[f] = pa.array(x[:, j])
    return pa.table(cols)


def reference(model_path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime on the whole matrix, outside Ferry."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    label, probs = session.run(None, {session.get_inputs()[0].name: x})
    return label, probs


def features(table: pa.Table, names: list[str]) -> np.ndarray:
    return np.stack([table[c].to_numpy().astype(np.float32) for c in names], axis=1)


def write_parquet(table: pa.Table, path: Path, row_group: int = 1000) -> Path:
    pq.write_table(table, path, row_group_size=row_group)
    return path


def drop_postgres_tables(url: str, prefix: str) -> None:
    """Drop the tables a test wrote to the session's PostgreSQL (names starting with
    ``prefix``, their staging and chunk tables included) and their ``batch_tables`` rows,
    so the next test finds the database as it was."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as c:
            c.execute(sa.text("SET LOCAL lock_timeout = '20s'"))
            for name in sa.inspect(c).get_table_names():
                if name.startswith(prefix):
                    c.execute(sa.text(f'DROP TABLE "{name}"'))
            c.execute(sa.text("DELETE FROM batch_tables WHERE table_name LIKE :p"),
                      {"p": prefix + "%"})
    finally:
        engine.dispose()
