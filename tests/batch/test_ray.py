"""The Ray engine on a local Ray instance: the same rows as the local engine, rejects
included, through the real CLI. The dev extra (what ``make test`` installs) has Ray; in
another environment the module is skipped when Ray Data is not installed (pip install
'ferry[ray]'), but never in CI, where a missing Ray is an install step gone wrong."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.batch.conftest import iris_table, write_parquet
from tests.batch.test_local import env, ferry, runs  # noqa: F401 - env is a fixture

if os.environ.get("CI"):
    import ray
    import ray.data  # noqa: F401
else:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def _rows(path: Path) -> pa.Table:
    table = ds.dataset(path, format="parquet").to_table()  # a file or a folder of parts
    return table.drop([c for c in ("run_id", "scored_at") if c in table.column_names])


def test_ray_writes_the_same_rows_as_local(env: Path) -> None:  # noqa: F811
    table = iris_table(12000, seed=5)
    x = table["sepal_width"].to_pylist()
    x[7] = x[9000] = None  # two rejects, in different chunks
    table = table.set_column(table.schema.get_field_index("sepal_width"), "sepal_width",
                             pa.array(x, pa.float32()))
    write_parquet(table, env / "in.parquet", row_group=2500)
    common = ["--input", env / "in.parquet", "--key", "id", "--passthrough", "region",
              "--chunk-rows", "1000"]
    ferry("batch", "iris", *common, "--output", env / "local.parquet", "--workers", "2")
    ferry("batch", "iris", *common, "--output", env / "ray.parquet", "--engine", "ray")
    assert _rows(env / "ray.parquet").equals(_rows(env / "local.parquet"))
    assert _rows(env / "ray.rejects.parquet").num_rows == 2
    assert _rows(env / "ray.rejects.parquet").equals(_rows(env / "local.rejects.parquet"))
    # to a folder, the actors write the part files themselves
    ferry("batch", "iris", *common, "--output", f"{env / 'parts'}/", "--engine", "ray")
    assert _rows(env / "parts").equals(_rows(env / "local.parquet"))
    assert _rows(env / "parts.rejects").equals(_rows(env / "local.rejects.parquet"))
    parts_run, ray_run, _ = runs(env)
    for run in (ray_run, parts_run):
        assert (run["status"], run["rows_in"], run["rows_out"], run["rows_rejected"],
                run["chunks_done"]) == ("succeeded", 12000, 11998, 2, 14)


def test_ray_to_sqlite_and_two_actors(env: Path) -> None:  # noqa: F811
    import sqlite3

    write_parquet(iris_table(3000, seed=6), env / "in.parquet", row_group=700)
    ferry("batch", "iris", "--input", env / "in.parquet", "--output", "sqlite:///p.db",
          "--table", "scores", "--key", "id", "--engine", "ray", "--workers", "2")
    ferry("batch", "iris", "--input", env / "in.parquet", "--output", env / "l.parquet",
          "--key", "id")
    with sqlite3.connect(env / "p.db") as db:
        got = db.execute("SELECT id, label FROM scores ORDER BY rowid").fetchall()
    local = pq.read_table(env / "l.parquet")
    assert got == list(zip(local["id"].to_pylist(), local["label"].to_pylist(), strict=True))


def test_ray_needs_parquet(env: Path) -> None:  # noqa: F811
    (env / "in.csv").write_text("id,sepal_length,sepal_width,petal_length,petal_width\n"
                                "a,5,3,1.4,0.2\n")
    result = ferry("batch", "iris", "--input", env / "in.csv", "--output", env / "o.parquet",
                   "--engine", "ray", ok=False)
    assert result.exit_code == 1
    assert "--engine ray reads Parquet inputs" in result.output
