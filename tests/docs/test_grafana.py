"""deploy/grafana/ferry-dashboard.json: an importable dashboard whose every query parses as
PromQL (promql-parser, the Rust parser's Python bindings) and names only metrics that a real
server's ``/metrics`` exposes, after some traffic; and every metric the server exposes has
a panel."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, ServerProcess
from tests.docs._promql import selectors

DASHBOARD = ROOT / "deploy" / "grafana" / "ferry-dashboard.json"
DS = "${DS_PROMETHEUS}"
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                              "_created"),
             "gauge": ("",), "unknown": ("",), "summary": ("_sum", "_count", "_created")}


def _load() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        text = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        call = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_]\w*)\)", text.strip())
        assert call, f"variable {var['name']}: {text!r} is not label_values(SELECTOR, LABEL)"
        found.append((f"variable ${var['name']}", call.group(1)))
    return found


def test_the_dashboard_is_an_importable_model_on_a_datasource_input():
    dashboard = _load()
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    wrong = []
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        if panel.get("datasource", {}).get("uid") != DS:
            wrong.append(f"panel {panel['title']!r}: datasource is not {DS}")
        refs = [t["refId"] for t in panel["targets"]]
        if not refs or len(refs) != len(set(refs)):
            wrong.append(f"panel {panel['title']!r}: no targets, or refIds repeat: {refs}")
        wrong += [f"panel {panel['title']!r} {t['refId']}: datasource is not {DS}"
                  for t in panel["targets"] if t.get("datasource", {}).get("uid") != DS]
    model = [v for v in dashboard["templating"]["list"] if v["name"] == "model"]
    assert model and model[0]["datasource"]["uid"] == DS and model[0]["multi"]
    assert not wrong, "\n".join(wrong)


def test_every_query_parses_and_names_a_metric():
    wrong = []
    for where, expr in queries(_load()):
        try:
            names = [s.name for s in selectors(expr)]
        except ValueError as exc:
            wrong.append(f"{where}: does not parse: {exc}\n    {expr}")
            continue
        if not names or None in names:
            wrong.append(f"{where}: every selector must name its metric: {expr}")
    assert not wrong, "\n".join(wrong)


def test_the_parser_check_can_fail():
    with pytest.raises(ValueError):
        selectors('rate(ferry_requests_total{model=~"$model"}[$window])')  # unknown variable
    with pytest.raises(ValueError):
        selectors("sum by (model) (rate(ferry_requests_total[5m])")  # unbalanced
    assert [s.name for s in selectors(
        'histogram_quantile(0.9, sum by (le) (rate(ferry_queue_duration_seconds_bucket'
        '{model=~"$model"}[$__rate_interval]))) / on() group_left vector(1)')] == [
        "ferry_queue_duration_seconds_bucket"]


@pytest.fixture(scope="module")
def scraped(example_repo: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """From a real server's /metrics after a little traffic (good and bad requests,
    feedback): series name -> its label names, and family -> its series names."""
    server = ServerProcess(example_repo)
    try:
        body = {"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32",
                            "data": [5.1, 3.5, 1.4, 0.2]}]}
        ids = []
        for _ in range(5):
            response = server.client.post("/v2/models/iris/infer", json=body)
            assert response.status_code == 200, response.text
            ids.append(response.headers["ferry-request-id"])
        bad = {"inputs": [{**body["inputs"][0], "name": "petals"}]}
        assert server.client.post("/v2/models/iris/infer", json=bad).status_code == 400
        assert server.client.post("/ferry/v1/store/flush").status_code == 200
        assert server.client.post("/ferry/v1/feedback",
                                  json={"request_id": ids[0], "label": 0}).status_code == 200
        text = server.client.get("/metrics").text
    finally:
        server.stop()
    series: dict[str, set[str]] = {}
    families: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        names = families.setdefault(family.name, set())
        for suffix in _SUFFIXES[family.type]:
            series.setdefault(family.name + suffix, set())
            names.add(family.name + suffix)
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series, families


def test_every_query_names_metrics_the_server_exports(scraped):
    scraped, _ = scraped
    assert {"ferry_requests_total", "ferry_request_duration_seconds_bucket",
            "ferry_evalstore_written_total", "ferry_drift_feature_share"} <= scraped.keys()
    wrong = []
    for where, expr in queries(_load()):
        for selector in selectors(expr):
            if selector.name not in scraped:
                wrong.append(f"{where}: {selector.name} is not exported\n    {expr}")
                continue
            matchers = {m.name: m.value for m in selector.matchers.matchers}
            if ("model" in scraped[selector.name] and matchers.get("model") != "$model"
                    and not where.startswith("variable")):
                wrong.append(f"{where}: {selector.name} has a model label but the query "
                             f"ignores the $model variable\n    {expr}")
    assert not wrong, "dashboard queries the server does not answer:\n" + "\n".join(wrong)


def test_every_exported_metric_has_a_panel(scraped):
    _, families = scraped
    used = {s.name for _, expr in queries(_load()) for s in selectors(expr)}
    missing = sorted(name for name, series in families.items()
                     if not series & used and not name.endswith("_created"))
    assert not missing, "exported metrics with no dashboard panel: " + ", ".join(missing)
