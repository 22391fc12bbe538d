"""ChunkScorer packs each model batch into one reused buffer: outputs stay right when a model
hands back its input, with and without rejected rows, in-process and in workers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.batch.test_local import ferry

_ECHO = '''
class Echo:
    """y = x, the very array it was given."""
    def load(self, version_dir):
        pass
    def predict(self, inputs):
        return {"y": inputs["x"]}
'''

_MANIFEST = """\
    runtime: python
    max_batch_size: 64
    inputs: [{name: x, datatype: FP32, shape: [-1, 3]}]
    outputs: [{name: y, datatype: FP32, shape: [-1, 3]}]
"""


@pytest.fixture()
def echo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = tmp_path / "repo"
    (repo / "echo" / "1").mkdir(parents=True)
    (repo / "echo" / "1" / "model.py").write_text(textwrap.dedent(_ECHO))
    (repo / "echo" / "model.yaml").write_text(textwrap.dedent(_MANIFEST))
    monkeypatch.setenv("FERRY_REPOSITORY", str(repo))
    monkeypatch.setenv("FERRY_BATCH_STORE", f"sqlite:///{tmp_path / 'runs.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_model_returning_its_input_keeps_every_batch(echo_env: Path, workers: str) -> None:
    n = 23
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    b = pa.array(x[:, 1], mask=np.isin(np.arange(n), [4, 17]))  # two rows rejected
    pq.write_table(pa.table({"id": np.arange(n), "a": x[:, 0], "b": b, "c": x[:, 2]}),
                   echo_env / "in.parquet", row_group_size=10)
    ferry("batch", "echo", "--input", echo_env / "in.parquet", "--output",
          echo_env / "out.parquet", "--map", "x=a,b,c", "--key", "id", "--batch-rows", "2",
          "--workers", workers, "-q")
    out = pq.read_table(echo_env / "out.parquet")
    kept = np.setdiff1d(np.arange(n), [4, 17])
    np.testing.assert_array_equal(out["id"].to_numpy(), kept)
    got = np.stack([out[f"y_{j}"].to_numpy() for j in range(3)], axis=1)
    np.testing.assert_array_equal(got, x[kept])
    assert pq.read_table(echo_env / "out.rejects.parquet").num_rows == 2
