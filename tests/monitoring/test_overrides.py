"""A served model's ``monitoring:`` section in model.yaml changes its report (a real server
and store): a raised drift threshold and an ignored feature take features out of the
drifted list, a declared range and row count become violations, and performance is
reported per version with its labelled rows. A model without the section, fed the same
rows, keeps the defaults."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from ferry.monitoring.render import render_table
from tests.conftest import ServerProcess
from tests.evalstore.conftest import DRIFTY, MANIFEST, infer_request, reference_data
from tests.monitoring.test_monitor import ROWS, planted

TUNED = MANIFEST + textwrap.dedent("""\
    version_policy: all
    monitoring:
      drift:
        features:
          f1: {wasserstein: 5.0}      # a 0.5 sigma shift is fine for this feature
          f3: {ignore: true}
      quality:
        min_rows: 5000
        features:
          f0: {min: -0.5, max: 0.5}
    """)


def _model(root: Path, name: str, manifest: str, versions: list[int]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = reference_data()
    (root / name).mkdir()
    (root / name / "model.yaml").write_text(manifest)
    for v in versions:
        (root / name / str(v)).mkdir()
        (root / name / str(v) / "model.py").write_text(textwrap.dedent(DRIFTY))
        pq.write_table(pa.table({k: pa.array(c.tolist()) for k, c in cols.items()}),
                       root / name / str(v) / "reference.parquet")


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("overrides-repo")
    _model(root, "tuned", TUNED, [1, 2])
    _model(root, "baseline", MANIFEST, [1])
    server = ServerProcess(root)
    try:
        x, colors = planted()

        def send(path: str, lo: int, hi: int, rid: str) -> None:
            body, headers = infer_request(x[lo:hi], colors[lo:hi])
            headers["ferry-request-id"] = rid
            r = server.client.post(path, content=body, headers=headers)
            assert r.status_code == 200, r.text

        for lo in range(0, ROWS, 500):
            send("/v2/models/baseline/infer", lo, lo + 500, f"b-{lo}")
            send("/v2/models/tuned/versions/2/infer", lo, lo + 500, f"t2-{lo}")
        send("/v2/models/tuned/versions/1/infer", 0, 500, "t1-0")
        send("/v2/models/tuned/versions/1/infer", 500, 1000, "t1-500")
        right = (np.nan_to_num(x).mean(axis=1) > 0).astype(int)
        wrong = right.copy()
        wrong[:250] = 1 - wrong[:250]
        for rid, labels in (("t2-0", wrong[:500]), ("t1-0", right[:500]),
                            ("t1-500", right[500:1000])):
            r = server.client.post("/ferry/v1/feedback",
                                   json={"request_id": rid, "label": labels.tolist()})
            assert r.status_code == 200, r.text
        get = server.client.get
        yield (get("/ferry/v1/models/tuned/monitor", params={"window": "1h"}).json(),
               get("/ferry/v1/models/baseline/monitor", params={"window": "1h"}).json())
    finally:
        server.stop()


def test_drift_thresholds_per_feature(reports):
    tuned, baseline = reports
    assert tuned["version"] == 2
    assert sorted(baseline["drift"]["drifted_features"]) == ["color", "f1", "f3"]
    assert tuned["drift"]["drifted_features"] == ["color"]
    assert "f3" not in tuned["drift"]["features"]  # ignored
    f1, f1_default = tuned["drift"]["features"]["f1"], baseline["drift"]["features"]["f1"]
    assert not f1["drifted"] and f1_default["drifted"]
    assert f1["distance"] == pytest.approx(f1_default["distance"])  # same rows, new threshold
    assert tuned["drift"]["feature_share"] == pytest.approx(1 / 5)
    assert "config_warnings" not in tuned


def test_quality_overrides(reports):
    tuned, baseline = reports
    default_range = next(r for r in baseline["quality"]["features"]["f0"] if r["rule"] == "range")
    assert not default_range["violated"]
    rule = next(r for r in tuned["quality"]["features"]["f0"] if r["rule"] == "range")
    assert rule["min"] == -0.5 and rule["max"] == 0.5 and rule["violated"]
    x, _ = planted()
    assert rule["rows"] == int(((x[:, 0] < -0.5) | (x[:, 0] > 0.5)).sum())
    assert rule["examples"] and all(abs(e["value"]) > 0.5 for e in rule["examples"])
    assert tuned["quality"]["row_count"] == {"rule": "min_rows", "rows": ROWS,
                                             "min_rows": 5000, "violated": True}
    assert {"f0", "color", "f4"} <= set(tuned["quality"]["violated_features"])
    assert not baseline["quality"]["row_count"]["violated"]


def test_performance_per_version(reports):
    tuned, baseline = reports
    perf = tuned["performance"]
    assert perf["labelled_rows"] == 500 and perf["accuracy"] == pytest.approx(0.5)
    assert list(perf["versions"]) == ["1", "2"]
    v1, v2 = perf["versions"]["1"], perf["versions"]["2"]
    assert v1["labelled_rows"] == 1000 and v1["accuracy"] == 1.0
    assert v2["labelled_rows"] == 500 and v2["accuracy"] == pytest.approx(0.5)
    assert baseline["performance"] == {"labelled_rows": 0, "versions": {}}
    table = render_table(tuned)
    assert "v1 (1000 labelled rows): accuracy 1" in table
    assert "v2 (500 labelled rows): accuracy 0.5" in table
