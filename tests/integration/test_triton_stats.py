"""Triton's statistics extension through NVIDIA's tritonclient (HTTP, gRPC, asyncio), checked
against the traffic sent and against ``/metrics``."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.grpc.aio as tg_aio
import tritonclient.http as th
import tritonclient.http.aio as th_aio
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException


@pytest.fixture()
def http(server):
    c = th.InferenceServerClient(server.hostport)
    yield c
    c.close()


@pytest.fixture()
def grpc_client(server):
    c = tg.InferenceServerClient(server.grpc)
    yield c
    c.close()


def _one(stats: dict, model: str, version: str) -> dict:
    found = [s for s in stats["model_stats"] if s["name"] == model and s["version"] == version]
    assert len(found) == 1, stats
    return found[0]


def _metrics(server, model: str, version: str) -> dict[str, float]:
    """This version's request counts by outcome and batch/queue counts from /metrics."""
    text = server.client.get("/metrics").text
    out: dict[str, float] = {"fail": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("model") != model or s.labels.get("version") != version:
                continue
            if s.name == "ferry_requests_total":
                key = "success" if s.labels["outcome"] == "success" else "fail"
                out[key] = out.get(key, 0.0) + s.value
            elif s.name in ("ferry_batch_size_rows_count", "ferry_batch_size_rows_sum",
                            "ferry_queue_duration_seconds_count", "ferry_batch_failures_total"):
                out[s.name] = s.value
    return out


def _tabular(rows: int, width: int = 32) -> th.InferInput:
    inp = th.InferInput("input", [rows, width], "FP32")
    inp.set_data_from_numpy(np.ones((rows, width), dtype=np.float32))
    return inp


def test_counts_follow_the_traffic_and_agree_with_metrics(server, http):
    before = _one(http.get_inference_statistics("tabular"), "tabular", "1")
    started_ms = time.time() * 1000
    for _ in range(5):
        http.infer("tabular", [_tabular(3)])
    for _ in range(2):  # wrong width: shape_mismatch, counted as failures
        with pytest.raises(InferenceServerException):
            http.infer("tabular", [_tabular(3, width=31)])
    after = _one(http.get_inference_statistics("tabular"), "tabular", "1")
    s0, s1 = before["inference_stats"], after["inference_stats"]
    assert s1["success"]["count"] - s0["success"]["count"] == 5
    assert s1["success"]["ns"] > s0["success"]["ns"]
    assert s1["fail"]["count"] - s0["fail"]["count"] == 2
    assert after["inference_count"] - before["inference_count"] == 15  # rows
    assert after["execution_count"] - before["execution_count"] == 5  # one at a time
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert s1[key]["count"] - s0[key]["count"] == 5, key
    assert s1["compute_infer"]["ns"] > s0["compute_infer"]["ns"]
    assert started_ms - 1000 <= after["last_inference"] <= time.time() * 1000 + 1000
    sizes0 = {b["batch_size"]: b["compute_infer"]["count"] for b in before["batch_stats"]}
    sizes1 = {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}
    assert sizes1[3] - sizes0.get(3, 0) == 5
    # what /metrics says, read with no traffic in between
    metrics = _metrics(server, "tabular", "1")
    s = after["inference_stats"]
    assert metrics["success"] == s["success"]["count"]
    assert metrics["fail"] == s["fail"]["count"]
    assert metrics["ferry_queue_duration_seconds_count"] == s["queue"]["count"]
    assert (metrics["ferry_batch_size_rows_count"] - metrics["ferry_batch_failures_total"]
            == after["execution_count"] == sum(sizes1.values()))


def test_model_failures_count_as_fail_and_not_as_executions(server, http):
    x = th.InferInput("x", [2, 2], "FP32")
    x.set_data_from_numpy(-np.ones((2, 2), dtype=np.float32))  # Raiser refuses negatives
    before = _one(http.get_inference_statistics("raiser", "1"), "raiser", "1")
    failures0 = _metrics(server, "raiser", "1").get("ferry_batch_failures_total", 0)
    with pytest.raises(InferenceServerException, match="negative"):
        http.infer("raiser", [x])
    after = _one(http.get_inference_statistics("raiser", "1"), "raiser", "1")
    assert after["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"][
        "count"] + 1
    assert after["inference_stats"]["fail"]["ns"] > before["inference_stats"]["fail"]["ns"]
    assert after["execution_count"] == before["execution_count"]
    assert after["inference_count"] == before["inference_count"]
    metrics = _metrics(server, "raiser", "1")
    assert metrics["ferry_batch_failures_total"] == failures0 + 1
    assert metrics["fail"] == after["inference_stats"]["fail"]["count"]


def test_all_models_one_model_one_version(http):
    every = http.get_inference_statistics()
    pairs = {(s["name"], s["version"]) for s in every["model_stats"]}
    assert {("iris", "1"), ("iris", "2"), ("tabular", "1"), ("diabetes", "1")} <= pairs
    assert not any(name == "broken" for name, _ in pairs)  # never loaded: no statistics
    iris = http.get_inference_statistics("iris")
    assert sorted(s["version"] for s in iris["model_stats"]) == ["1", "2"]
    v1 = http.get_inference_statistics("iris", "1")
    assert [(s["name"], s["version"]) for s in v1["model_stats"]] == [("iris", "1")]
    assert set(v1["model_stats"][0]) >= {"last_inference", "inference_count",
                                        "execution_count", "inference_stats", "batch_stats"}


def test_unknown_model_or_version_is_404_and_not_found(server, http, grpc_client):
    for path in ("/v2/models/nope/stats", "/v2/models/iris/versions/9/stats"):
        assert server.client.get(path).status_code == 404
    with pytest.raises(InferenceServerException):
        http.get_inference_statistics("nope")
    for args in (("nope",), ("iris", "9")):
        with pytest.raises(InferenceServerException) as err:
            grpc_client.get_inference_statistics(*args)
        assert err.value.status() == str(grpc.StatusCode.NOT_FOUND)


def test_grpc_reports_the_same_statistics(http, grpc_client):
    rest = http.get_inference_statistics("iris")
    response = grpc_client.get_inference_statistics("iris")
    as_dict = json_format.MessageToDict(response, preserving_proto_field_name=True,
                                        use_integers_for_enums=True)

    def canonical(value):
        """Digit strings as numbers (proto3 JSON writes 64-bit integers as strings), and
        zero or empty fields left out (MessageToDict leaves them out)."""
        if isinstance(value, dict):
            kept = {k: canonical(v) for k, v in value.items() if k != "last_inference"}
            return {k: v for k, v in kept.items() if v not in (0, {}, [])}
        if isinstance(value, list):
            return [canonical(v) for v in value]
        return int(value) if isinstance(value, str) and value.isdigit() else value

    grpc_stats = canonical(as_dict)["model_stats"]
    rest_stats = canonical(rest)["model_stats"]
    assert [s["version"] for s in grpc_stats] == [1, 2]
    assert grpc_stats == rest_stats


def test_batch_stats_after_concurrent_requests_asyncio(server):
    async def run() -> tuple[dict, dict]:
        client = tg_aio.InferenceServerClient(server.grpc)
        try:
            before = await client.get_inference_statistics("echo", "1", as_json=True)

            async def one(i: int) -> None:
                inp = tg_aio.InferInput("x", [1, 3], "FP32")
                inp.set_data_from_numpy(np.full((1, 3), i, dtype=np.float32))
                await client.infer("echo", [inp])

            await asyncio.gather(*(one(i) for i in range(40)))
            after = await client.get_inference_statistics("echo", "1", as_json=True)
            return before, after
        finally:
            await client.close()

    before, after = asyncio.run(run())

    def sizes(stats: dict) -> dict[int, int]:
        model = stats["model_stats"][0]
        return {int(b["batch_size"]): int(b["compute_infer"].get("count", 0))
                for b in model.get("batch_stats", [])}

    b0, b1 = sizes(before), sizes(after)
    ran = {size: b1[size] - b0.get(size, 0) for size in b1 if b1[size] != b0.get(size, 0)}
    m0, m1 = before["model_stats"][0], after["model_stats"][0]
    assert sum(size * n for size, n in ran.items()) == 40  # every row in exactly one batch
    assert int(m1["inference_count"]) - int(m0.get("inference_count", 0)) == 40
    assert int(m1["execution_count"]) - int(m0.get("execution_count", 0)) == sum(ran.values())
    assert max(ran) > 1, ran  # the echo model sleeps 2 ms: requests queue and merge
    assert max(ran) <= 32  # its max_batch_size


def test_http_asyncio_client(server):
    async def run() -> dict:
        client = th_aio.InferenceServerClient(server.hostport)
        try:
            return await client.get_inference_statistics("diabetes")
        finally:
            await client.close()

    stats = asyncio.run(run())
    assert [(s["name"], s["version"]) for s in stats["model_stats"]] == [("diabetes", "1")]


def test_server_metadata_lists_the_extensions(http):
    assert {"statistics", "model_configuration"} <= set(
        http.get_server_metadata()["extensions"])
