"""Monitoring against a real server and store: planted drift (mean shifts in two features,
a new category in one, nulls in one) is flagged exactly, the numbers agree with scipy.stats
on the same samples, and the surfaces (REST, CLI table/JSON/HTML, Parquet export, gauges,
alerts) report it."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats
from scipy.spatial.distance import jensenshannon

from ferry.cli.main import cli
from tests.conftest import ServerProcess
from tests.evalstore.conftest import COLORS, infer_request, reference_data

ROWS = 3000


def planted() -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(7)
    x = rng.normal(0, 1, (ROWS, 5)).astype(np.float32)
    x[:, 1] += 0.5          # mean shift
    x[:, 3] += 0.3          # smaller mean shift
    x[rng.random(ROWS) < 0.2, 4] = np.nan   # nulls in f4
    colors = rng.choice(COLORS + ["purple"], ROWS, p=[0.45, 0.25, 0.15, 0.15]).tolist()
    return x, colors


@pytest.fixture(scope="module")
def drifted(monitor_repo, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('mon') / 'ferry.db'}"
    server = ServerProcess(monitor_repo, "--store", url, env={"FERRY_ALERTS_INTERVAL_S": "0.5"})
    x, colors = planted()
    for start in range(0, ROWS, 500):
        body, headers = infer_request(x[start:start + 500], colors[start:start + 500])
        headers["ferry-request-id"] = f"b-{start}"
        assert server.client.post("/v2/models/drifty/infer", content=body,
                                  headers=headers).status_code == 200
    labels = (np.nan_to_num(x).mean(axis=1) > 0).astype(int)
    labels[:250] = 1 - labels[:250]  # the model is wrong on half of the first request
    server.client.post("/ferry/v1/feedback", json={"request_id": "b-0",
                                                   "label": labels[:500].tolist()})
    report = server.client.get("/ferry/v1/models/drifty/monitor",
                               params={"window": "1h"}).json()
    yield server, url, report, x, colors
    server.stop()


def test_planted_drift_is_flagged_exactly(drifted):
    _, _, report, _, _ = drifted
    assert report["model"] == "drifty" and report["version"] == 1
    assert report["window"]["rows"] == ROWS and report["window"]["requests"] == 6
    drift = report["drift"]
    assert sorted(drift["drifted_features"]) == ["color", "f1", "f3"]
    assert drift["features"]["color"]["new_categories"] == ["purple"]
    assert drift["multivariate"]["mmd"]["drifted"] and drift["multivariate"]["drifted"]
    assert set(drift["since"]) == {"color", "f1", "f3"}
    assert drift["prediction"]["baseline"] == "previous_window"
    quality = report["quality"]
    assert quality["violated_features"] == ["color", "f4"]
    nulls = quality["features"]["f4"][0]
    assert nulls["rule"] == "null_rate" and nulls["violated"]
    assert abs(nulls["rate"] - np.isnan(planted()[0][:, 4]).mean()) < 1e-12
    assert nulls["examples"][0]["value"] is None and nulls["examples"][0]["request_id"]


def test_drift_values_agree_with_scipy(drifted):
    _, _, report, x, colors = drifted
    ref = reference_data()
    for i in range(5):
        name = f"f{i}"
        cur = x[:, i][~np.isnan(x[:, i])].astype(np.float64)
        base = ref[name].astype(np.float64)
        ks = stats.ks_2samp(base, cur)
        entry = report["drift"]["features"][name]
        assert entry["statistic"] == pytest.approx(ks.statistic, rel=1e-9)
        assert entry["p_value"] == pytest.approx(ks.pvalue, rel=1e-6, abs=1e-300)
        w = stats.wasserstein_distance(base, cur)
        assert entry["wasserstein"] == pytest.approx(w, rel=1e-9)
        assert entry["distance"] == pytest.approx(w / base.std(), rel=1e-9)
    keys = sorted(set(COLORS) | {"purple"})
    a = np.array([np.sum(ref["color"] == k) for k in keys], float)
    b = np.array([colors.count(k) for k in keys], float)
    chi = stats.chi2_contingency(np.vstack([a, b]), correction=False)
    entry = report["drift"]["features"]["color"]
    assert entry["statistic"] == pytest.approx(chi.statistic, rel=1e-9)
    assert entry["p_value"] == pytest.approx(chi.pvalue, rel=1e-6, abs=1e-300)
    assert entry["distance"] == pytest.approx(jensenshannon(a / a.sum(), b / b.sum(), base=2))


def test_performance_from_feedback_matches_sklearn(drifted):
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    _, _, report, x, _ = drifted
    perf = report["performance"]
    pred = (np.nan_to_num(x[:500]).mean(axis=1) > 0).astype(int)
    y = pred.copy()
    y[:250] = 1 - y[:250]
    assert perf["labelled_rows"] == 500 and perf["task"] == "classification"
    assert perf["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert perf["precision"] == pytest.approx(precision_score(y, pred))
    assert perf["recall"] == pytest.approx(recall_score(y, pred))
    assert perf["f1"] == pytest.approx(f1_score(y, pred))


def test_cli_table_json_html_and_export(drifted, tmp_path):
    import pyarrow.parquet as pq

    server, url, _, _, _ = drifted
    runner = CliRunner()
    table = runner.invoke(cli, ["monitor", "drifty", "--window", "1h", "--url", server.url])
    assert table.exit_code == 0, table.output
    assert "drifted: f1, f3, color" in table.output or "drifted: color" in table.output
    direct = runner.invoke(cli, ["monitor", "drifty", "--format", "json", "--store", url])
    assert direct.exit_code == 0, direct.output
    assert sorted(json.loads(direct.output)["drift"]["drifted_features"]) == ["color", "f1",
                                                                            "f3"]
    page = runner.invoke(cli, ["monitor", "drifty", "--format", "html", "--url", server.url])
    assert page.exit_code == 0 and page.output.count("<svg") == 3
    out = tmp_path / "drifty.parquet"
    done = runner.invoke(cli, ["export", "drifty", "--since", "1d", "--with-feedback", "-o",
                               str(out), "--store", url])
    assert done.exit_code == 0, done.output
    table = pq.read_table(out)
    assert table.num_rows == 500
    assert {"request_id", "f0", "f4", "color", "score", "label", "reward"} <= set(
        table.column_names)
    everything = tmp_path / "all.parquet"
    runner.invoke(cli, ["export", "drifty", "--since", "1d", "-o", str(everything), "--store",
                        url])
    assert pq.read_table(everything).num_rows == ROWS


def test_gauges_and_alerts(drifted):
    server, _, _, _, _ = drifted
    metrics = server.client.get("/metrics").text
    assert 'ferry_drift_drifted{feature="f1",model="drifty",version="1"} 1.0' in metrics
    assert 'ferry_drift_drifted{feature="f0",model="drifty",version="1"} 0.0' in metrics
    assert 'ferry_quality_violations{model="drifty",rule="null_rate",version="1"}' in metrics
    firing = 'ferry_alert_firing{alert="inputs-drifted",model="drifty"} 1.0'
    for _ in range(100):  # evaluated every 0.5 s in the server
        if firing in metrics:
            break
        time.sleep(0.1)
        metrics = server.client.get("/metrics").text
    assert firing in metrics
    # the start of firing is logged once, as a warning (the server runs at --log-level warning)
    assert server.wait_for_log("alert drifty:inputs-drifted firing"), "".join(server.log)


def test_empty_window_and_unknown_model(monitor_repo, tmp_path):
    server = ServerProcess(monitor_repo, "--store", f"sqlite:///{tmp_path / 'e.db'}")
    try:
        r = server.client.get("/ferry/v1/models/drifty/monitor", params={"window": "5m"})
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["window"]["rows"] == 0 and report["note"] == "no rows in this window"
        assert report["drift"]["drifted_features"] == []
        assert server.client.get("/ferry/v1/models/nothing/monitor").status_code == 404
        assert server.client.get("/ferry/v1/models/drifty/monitor",
                                 params={"window": "soon"}).status_code == 400
    finally:
        server.stop()


def test_reference_upload_checks_columns(monitor_repo, tmp_path):
    server = ServerProcess(monitor_repo, "--store", f"sqlite:///{tmp_path / 'r.db'}")
    try:
        bad = tmp_path / "bad.csv"
        bad.write_text("f0,f1,colour\n1,2,red\n")
        result = CliRunner().invoke(cli, ["reference", "plain", str(bad), "--url", server.url])
        assert result.exit_code != 0
        assert "lacks column(s) ['f2', 'f3', 'f4', 'color']" in result.output
        good = tmp_path / "good.csv"
        rows = ["f0,f1,f2,f3,f4,color"] + [f"{i % 7},{i % 3},0.5,{i % 5},1,red"
                                           for i in range(200)]
        good.write_text("\n".join(rows) + "\n")
        result = CliRunner().invoke(cli, ["reference", "plain", str(good), "--url",
                                          server.url])
        assert result.exit_code == 0, result.output
        assert "reference of 200 rows, 6 feature(s)" in result.output
    finally:
        server.stop()
