"""``GET /ferry/v1/predictions/{table}/{key}`` on a real server over a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.batch.conftest import write_parquet, iris_table
from tests.batch.test_local import env, ferry  # noqa: F401 - fixture and helper
from tests.conftest import ServerProcess


def test_stored_prediction_by_key(env: Path, batch_repo: Path) -> None:  # noqa: F811
    write_parquet(iris_table(300), env / "in.parquet")
    db = env / "preds.db"
    ferry("batch", "iris", "--input", env / "in.parquet", "--output", f"sqlite:///{db}",
          "--table", "iris_scores", "--key", "id")
    con = sqlite3.connect(db)
    expected = con.execute("SELECT label, probabilities_1, run_id FROM iris_scores "
                           "WHERE id = 'row-42'").fetchone()
    con.close()
    server = ServerProcess(batch_repo, env={"FERRY_PREDICTIONS_URL": f"sqlite:///{db}",
                                            "FERRY_STORE": "none"})
    try:
        got = server.client.get("/ferry/v1/predictions/iris_scores/row-42")
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["key"] == {"id": "row-42"}
        assert (body["prediction"]["label"], body["prediction"]["probabilities_1"],
                body["run_id"]) == expected
        assert body["model_version"] == 2 and 0 <= body["age_s"] < 600
        missing = server.client.get("/ferry/v1/predictions/iris_scores/nope")
        assert missing.status_code == 404 and "no prediction for id='nope'" in missing.text
        unknown = server.client.get("/ferry/v1/predictions/sqlite_master/x")
        assert unknown.status_code == 404 and "no predictions table" in unknown.text
    finally:
        server.stop()
