"""Folder outputs (``--output preds/``): one part file per chunk, written by the process that
scored it; the same rows as a single-file output, in the same order, with any number of
workers; a folder Ferry did not write is never replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tests.batch.conftest import iris_table, write_parquet
from tests.batch.test_local import env, ferry, runs  # noqa: F401 - fixture and helpers


def _with_nulls(n: int) -> pa.Table:
    table = iris_table(n)
    width = table["sepal_width"].to_numpy().astype(object)
    width[[7, 1500, 2999]] = None
    return table.set_column(table.schema.get_field_index("sepal_width"), "sepal_width",
                            pa.array(width.tolist(), pa.float32()))


def test_two_workers_write_the_same_rows_in_the_same_order(env: Path) -> None:  # noqa: F811
    write_parquet(_with_nulls(3000), env / "in.parquet", row_group=1000)
    args = ("--key", "id", "--passthrough", "region", "--chunk-rows", "400", "-q")
    ferry("batch", "iris", "--input", env / "in.parquet", "--output", env / "one.parquet", *args)
    ferry("batch", "iris", "--input", env / "in.parquet", "--output", f"{env / 'parts'}/",
          "--workers", "2", *args)
    single = pq.read_table(env / "one.parquet")
    names = sorted(p.name for p in (env / "parts").iterdir())
    assert names == ["_ferry.json"] + [f"part-{i:06d}.parquet" for i in range(9)]
    folder = ds.dataset(env / "parts", format="parquet").to_table()
    assert folder.num_rows == 2997
    for column in ("id", "region", "label", "probabilities_0", "probabilities_2",
                   "model_version"):
        assert folder[column].equals(single[column]), column
    [parted, _] = runs(env)
    assert (parted["rows_in"], parted["rows_out"], parted["rows_rejected"]) == (3000, 2997, 3)
    assert parted["chunks_done"] == 9
    assert pc.unique(folder["run_id"]).to_pylist() == [parted["run_id"]]
    marker = json.loads((env / "parts" / "_ferry.json").read_text())
    assert (marker["run_id"], marker["rows"], marker["keys"]) == (parted["run_id"], 2997, ["id"])
    rejects = ds.dataset(env / "parts.rejects", format="parquet").to_table()
    assert sorted(rejects["id"].to_pylist()) == ["row-1500", "row-2999", "row-7"]
    assert all("sepal_width" in r for r in rejects["reject_reason"].to_pylist())
    assert not [p for p in env.iterdir() if ".ferry-" in p.name]  # staging is gone


def test_a_rerun_replaces_the_folder_and_drops_stale_rejects(env: Path) -> None:  # noqa: F811
    write_parquet(_with_nulls(3000), env / "bad.parquet")
    write_parquet(iris_table(500), env / "good.parquet")
    ferry("batch", "iris", "--input", env / "bad.parquet", "--output", f"{env / 'out'}/", "-q")
    assert (env / "out.rejects").is_dir()
    ferry("batch", "iris", "--input", env / "good.parquet", "--output", env / "out",
          "--workers", "2", "-q")  # an existing folder is a folder output without the slash
    assert ds.dataset(env / "out", format="parquet").count_rows() == 500
    assert not (env / "out.rejects").exists()


def test_a_folder_ferry_did_not_write_is_never_replaced(env: Path) -> None:  # noqa: F811
    write_parquet(iris_table(100), env / "in.parquet")
    (env / "mine").mkdir()
    (env / "mine" / "notes.txt").write_text("keep me")
    result = ferry("batch", "iris", "--input", env / "in.parquet", "--output",
                   f"{env / 'mine'}/", ok=False)
    assert result.exit_code != 0
    assert "Ferry did not write" in result.output and "mine" in result.output
    assert [p.name for p in (env / "mine").iterdir()] == ["notes.txt"]
    assert not [p for p in env.iterdir() if ".ferry-" in p.name]
