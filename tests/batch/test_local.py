"""The local engine end to end through the real CLI: files in tmp_path, real SQLite and
PostgreSQL, predictions compared with ONNX Runtime run independently."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ferry.batch.records import RunStore
from ferry.cli.main import cli
from tests.batch.conftest import IRIS_FEATURES, features, iris_table, reference, write_parquet


def ferry(*args: str, ok: bool = True) -> object:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture()
def env(tmp_path: Path, batch_repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FERRY_REPOSITORY", str(batch_repo))
    monkeypatch.setenv("FERRY_BATCH_STORE", f"sqlite:///{tmp_path / 'runs.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def runs(env: Path) -> list[dict]:
    return json.loads(ferry("batch", "runs", "--format", "json").output)


def wait_for_chunks(at_least: int, timeout: float = 60.0) -> None:
    """Wait until the newest run in ``FERRY_BATCH_STORE`` has recorded ``at_least`` chunks
    (a run started in the background, about to be interrupted); fails after ``timeout``."""
    store = RunStore(os.environ["FERRY_BATCH_STORE"])
    try:
        deadline = time.monotonic() + timeout
        while not (recorded := store.list_runs(1)) or recorded[0].chunks_done < at_least:
            assert time.monotonic() < deadline, f"fewer than {at_least} chunks recorded"
            time.sleep(0.05)
    finally:
        store.close()


def test_parquet_to_parquet_matches_onnxruntime(env: Path, batch_repo: Path) -> None:
    table = iris_table(5000)
    write_parquet(table, env / "in.parquet", row_group=3000)
    ferry("batch", "iris", "--input", env / "in.parquet", "--output", env / "out.parquet",
          "--key", "id", "--passthrough", "region", "--chunk-rows", "1500")
    out = pq.read_table(env / "out.parquet")
    assert out.column_names == ["id", "region", "label", "probabilities_0", "probabilities_1",
                                "probabilities_2", "model_version", "run_id", "scored_at"]
    label, probs = reference(batch_repo / "iris" / "2" / "model.onnx",
                             features(table, IRIS_FEATURES))
    assert out["id"].to_pylist() == table["id"].to_pylist()
    assert out["region"].to_pylist() == table["region"].to_pylist()
    np.testing.assert_array_equal(out["label"].to_numpy(), label)
    got = np.stack([out[f"probabilities_{k}"].to_numpy() for k in range(3)], axis=1)
    np.testing.assert_allclose(got, probs, rtol=1e-5, atol=1e-6)
    [run] = runs(env)
    assert set(out["run_id"].to_pylist()) == {run["run_id"]}
    assert set(out["model_version"].to_pylist()) == {2}
    assert (run["status"], run["rows_in"], run["rows_out"], run["rows_rejected"]) == (
        "succeeded", 5000, 5000, 0)
    assert run["chunks_done"] == 4  # row groups 3000 + 2000 cut to chunks of <= 1500 rows
    assert not (env / "out.rejects.parquet").exists()


def test_two_workers_write_the_same_rows_as_one(env: Path) -> None:
    write_parquet(iris_table(20000, seed=3), env / "in.parquet", row_group=2500)
    ferry("batch", "iris", "--input", env / "in.parquet", "--output", env / "one.parquet",
          "--key", "id", "--chunk-rows", "1000")
    ferry("batch", "iris", "--input", env / "in.parquet", "--output", env / "two.parquet",
          "--key", "id", "--chunk-rows", "1000", "--workers", "2")
    one = pq.read_table(env / "one.parquet").drop(["run_id", "scored_at"])
    two = pq.read_table(env / "two.parquet").drop(["run_id", "scored_at"])
    assert one.equals(two)


def test_map_pattern_and_version(env: Path, batch_repo: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 32)).astype(np.float32)
    table = pa.table({"uid": pa.array(np.arange(3000))} | {f"f{j}": x[:, j] for j in range(32)})
    write_parquet(table, env / "t.parquet")
    ferry("batch", "tabular", "--input", env / "t.parquet", "--output", env / "t_out.csv",
          "--map", "input=f{i}", "--key", "uid", "--version", "1")
    out = pacsv.read_csv(env / "t_out.csv")
    label, probs = reference(batch_repo / "tabular" / "1" / "model.onnx", x)
    np.testing.assert_array_equal(out["uid"].to_numpy(), np.arange(3000))
    np.testing.assert_array_equal(out["label"].to_numpy(), label)
    np.testing.assert_allclose(out["probabilities_1"].to_numpy(), probs[:, 1], rtol=1e-5,
                               atol=1e-6)


def test_missing_column_names_it_and_lists_found(env: Path) -> None:
    write_parquet(iris_table(10).drop(["petal_width"]), env / "in.parquet")
    result = ferry("batch", "iris", "--input", env / "in.parquet", "--output",
                   env / "o.parquet", ok=False)
    assert result.exit_code == 1
    assert "no column(s) ['petal_width']" in result.output
    assert "columns found: id, region, sepal_length" in result.output
    missing = ferry("batch", "tabular", "--input", env / "in.parquet", "--output",
                    env / "o.parquet", ok=False)
    assert "input[0]" in missing.output and "--map" in missing.output


def test_csv_rejects_bad_rows_with_reasons(env: Path, batch_repo: Path) -> None:
    lines = ["id,sepal_length,sepal_width,petal_length,petal_width"]
    good = []
    for i in range(300):
        row = [5.0 + i % 7 * 0.3, 3.0, 1.5 + i % 5, 0.2 + i % 3 * 0.5]
        if i == 10:
            lines.append(f"r{i},abc,3.0,1.5,0.2")
        elif i == 20:
            lines.append(f"r{i},5.0,,1.5,0.2")
        else:
            good.append((f"r{i}", row))
            lines.append(f"r{i}," + ",".join(str(v) for v in row))
    (env / "in.csv").write_text("\n".join(lines) + "\n")
    ferry("batch", "iris", "--input", env / "in.csv", "--output", env / "o.parquet",
          "--key", "id", "--chunk-rows", "100")
    out = pq.read_table(env / "o.parquet")
    assert out["id"].to_pylist() == [g[0] for g in good]
    label, _ = reference(batch_repo / "iris" / "2" / "model.onnx",
                         np.array([g[1] for g in good], dtype=np.float32))
    np.testing.assert_array_equal(out["label"].to_numpy(), label)
    rejects = pq.read_table(env / "o.rejects.parquet").to_pylist()
    assert [(r["id"], r["sepal_length"]) for r in rejects] == [("r10", "abc"), ("r20", "5.0")]
    assert "'abc' is not a valid FP32" in rejects[0]["reject_reason"]
    assert "column 'sepal_width' is null" in rejects[1]["reject_reason"]
    [run] = runs(env)
    assert (run["rows_in"], run["rows_out"], run["rows_rejected"]) == (300, 298, 2)


def test_max_reject_rate_fails_the_run_and_leaves_no_output(env: Path) -> None:
    rows = ["id,x"] + [f"{i},{'oops' if i % 2 else i}" for i in range(200)]
    (env / "in.csv").write_text("\n".join(rows) + "\n")
    result = ferry("batch", "slow", "--input", env / "in.csv", "--output", env / "o.parquet",
                   "--max-reject-rate", "0.1", "--chunk-rows", "50", ok=False)
    assert result.exit_code == 1
    assert "over --max-reject-rate 10.0%" in result.output
    assert not (env / "o.parquet").exists()
    [run] = runs(env)
    assert run["status"] == "failed" and "rejected" in run["error"]


def test_jsonl_input_to_sqlite_is_atomic_and_indexed(env: Path, batch_repo: Path) -> None:
    table = iris_table(700, seed=5)
    with open(env / "in.jsonl", "w") as fh:
        for row in table.to_pylist():
            fh.write(json.dumps(row) + "\n")
    db = env / "preds.db"
    ferry("batch", "iris", "--input", env / "in.jsonl", "--output", f"sqlite:///{db}",
          "--table", "iris_scores", "--key", "id", "--chunk-rows", "200")
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, label, probabilities_2, run_id FROM iris_scores").fetchall()
    label, probs = reference(batch_repo / "iris" / "2" / "model.onnx",
                             features(table, IRIS_FEATURES))
    assert [r[0] for r in rows] == table["id"].to_pylist()
    assert [r[1] for r in rows] == label.tolist()
    np.testing.assert_allclose([r[2] for r in rows], probs[:, 2], rtol=1e-5, atol=1e-6)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"iris_scores", "iris_scores_rejects", "batch_tables"}  # no staging left
    indexes = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index' "
                                         "AND tbl_name='iris_scores'")]
    assert indexes == ["iris_scores__key"]
    first_run = rows[0][3]
    con.close()
    # a second run that fails leaves the first run's table untouched
    (env / "bad.csv").write_text("id,sepal_length,sepal_width,petal_length,petal_width\n"
                                 "a,x,x,x,x\n")
    failed = ferry("batch", "iris", "--input", env / "bad.csv", "--output", f"sqlite:///{db}",
                   "--table", "iris_scores", "--key", "id", "--max-reject-rate", "0", ok=False)
    assert failed.exit_code == 1
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*), MIN(run_id) FROM iris_scores").fetchone() == (
        700, first_run)
    con.close()


def test_postgres_in_and_out_with_copy(env: Path, batch_repo: Path, postgres_url: str) -> None:
    import sqlalchemy as sa

    table = iris_table(3000, seed=7)
    engine = sa.create_engine(postgres_url)
    with engine.begin() as c:
        c.execute(sa.text("DROP TABLE IF EXISTS flowers"))
        c.execute(sa.text("CREATE TABLE flowers (id TEXT PRIMARY KEY, region TEXT, "
                          "sepal_length REAL, sepal_width REAL, petal_length REAL, "
                          "petal_width REAL)"))
        c.execute(sa.text("INSERT INTO flowers VALUES (:id, :region, :sepal_length, "
                          ":sepal_width, :petal_length, :petal_width)"), table.to_pylist())
    url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    for mode in ("replace", "append"):
        ferry("batch", "iris", "--input", f"{url}?table=flowers", "--output",
              f"{url}?table=flower_scores", "--key", "id", "--passthrough", "region",
              "--chunk-rows", "1000", "--mode", mode)
    label, probs = reference(batch_repo / "iris" / "2" / "model.onnx",
                             features(table, IRIS_FEATURES))
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT id, label, probabilities_0, run_id, scored_at FROM "
                                 "flower_scores ORDER BY id, run_id")).all()
        names = set(sa.inspect(c).get_table_names())
    assert len(rows) == 6000 and len({r.run_id for r in rows}) == 2  # replace, then append
    expected = dict(zip(table["id"].to_pylist(),
                        zip(label.tolist(), probs[:, 0].tolist(), strict=True), strict=True))
    for r in rows:
        assert r.label == expected[r.id][0]
        assert abs(r.probabilities_0 - expected[r.id][1]) < 1e-5
        assert r.scored_at.tzinfo is not None
    assert names == {"flowers", "flower_scores", "flower_scores_rejects", "batch_tables"}
    engine.dispose()


def test_rows_the_model_raises_on_are_rejected_alone(env: Path) -> None:
    x = np.arange(500, dtype=np.float32)
    x[[3, 250]] = -5
    pq.write_table(pa.table({"id": np.arange(500), "x": x}), env / "in.parquet")
    ferry("batch", "raiser", "--input", env / "in.parquet", "--output", env / "o.csv",
          "--key", "id")
    out = pacsv.read_csv(env / "o.csv")
    keep = x >= 0
    np.testing.assert_array_equal(out["id"].to_numpy(), np.arange(500)[keep])
    np.testing.assert_allclose(out["y"].to_numpy(), x[keep] + 1)
    rejects = pacsv.read_csv(env / "o.rejects.csv").to_pylist()
    assert [r["id"] for r in rejects] == [3, 250]
    assert all("negative values are not allowed" in r["reject_reason"] for r in rejects)
