"""Endpoint control against running servers: bad policies rejected (the live versions
listed), events say what/why/who/where, the admin-token rule, a policy survives a restart,
rollback under load (no failed request, the old version within a second), a version that
leaves a split, ``ferry rollout``/``ferry rollback``, and two servers on one PostgreSQL
store (docs/rollouts.md)."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from ferry.cli.main import cli
from tests.conftest import ServerProcess
from tests.integration.test_rollouts_split import BODY, send


@pytest.fixture(scope="module")
def two_versions(example_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rollctl")
    shutil.copytree(example_repo / "iris", root / "iris")
    return root


@pytest.fixture(scope="module")
def srv(two_versions: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(two_versions)
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def reset(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "srv" in request.fixturenames:
        request.getfixturevalue("srv").client.put("/ferry/v1/endpoints/iris",
                                                  json={"kind": "pin", "version": None})


@pytest.mark.parametrize(("policy", "status", "says"), [
    ({"kind": "pin", "version": 7}, 400, "version(s) [7] are not loaded; live versions: [1, 2]"),
    ({"kind": "split", "weights": {"1": 90, "5": 10}}, 400, "live versions: [1, 2]"),
    ({"kind": "split", "weights": {"1": -10, "2": 110}}, 400, "not negative; got 1=-10"),
    ({"kind": "split", "weights": {"1": 0, "2": 0}}, 400, "weights are all zero"),
    ({"kind": "split", "weights": {"1": "x"}}, 400, "weights['1'] must be a number"),
    ({"kind": "canary", "version": 2}, 400, "canary, shadow, bandit and ensemble are not "
                                            "built yet"),
    ({"kind": "pin", "version": 2, "extra": 1}, 400, "unknown field(s) ['extra']"),
])
def test_bad_policies_are_rejected_and_change_nothing(srv, policy, status, says):
    before = srv.client.get("/ferry/v1/endpoints/iris").json()
    r = srv.client.put("/ferry/v1/endpoints/iris", json=policy)
    assert r.status_code == status and says in r.json()["error"], r.text
    assert srv.client.get("/ferry/v1/endpoints/iris").json() == before


def test_bad_bodies_and_names(srv):
    r = srv.client.put("/ferry/v1/endpoints/iris", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = srv.client.put("/ferry/v1/endpoints/iris", content=b"")
    assert r.status_code == 400 and "the body must be a policy" in r.json()["error"]
    r = srv.client.put("/ferry/v1/endpoints/nope", json={"kind": "pin"})
    assert r.status_code == 404 and "unknown model: 'nope' is not found" in r.json()["error"]
    assert srv.client.get("/ferry/v1/endpoints/nope").status_code == 404
    r = srv.client.get("/ferry/v1/endpoints/iris/events?limit=0")
    assert r.status_code == 400 and "limit" in r.json()["error"]


def test_every_change_is_an_event_with_what_why_who_and_where(srv):
    srv.client.put("/ferry/v1/endpoints/iris", json={"kind": "pin", "version": 2})
    r = srv.client.put("/ferry/v1/endpoints/iris", json={
        "kind": "split", "weights": {"1": 3, "2": 1}, "reason": "try the old model"})
    assert r.json()["notes"] == ["weights normalised from a sum of 4 to 1"]
    r = srv.client.post("/ferry/v1/endpoints/iris/rollback", json={"reason": "bad p99"})
    assert r.status_code == 200 and r.json()["describe"] == "pin 2"
    events = srv.client.get("/ferry/v1/endpoints/iris/events?limit=2").json()
    rollback, split = events
    assert rollback["action"] == "rollback" and rollback["reason"] == "bad p99"
    assert rollback["policy"] == {"kind": "pin", "version": 2}
    assert rollback["previous"]["kind"] == "split"
    assert split["action"] == "set" and split["reason"] == "try the old model"
    assert split["policy"]["weights"] == {"1": 0.75, "2": 0.25}
    assert split["notes"] == ["weights normalised from a sum of 4 to 1"]
    for event in events:
        assert event["actor"] == "loopback" and event["client"] == "127.0.0.1"
    listed = srv.client.get("/ferry/v1/endpoints").json()
    assert [e["model"] for e in listed] == ["iris"]


def test_control_needs_the_admin_token_when_the_server_has_one(two_versions):
    proc = ServerProcess(two_versions, "--admin-token", "s3cret")
    try:
        policy = {"kind": "pin", "version": 1}
        r = proc.client.put("/ferry/v1/endpoints/iris", json=policy)
        assert r.status_code == 401 and "admin token" in r.json()["error"]
        assert proc.client.post("/ferry/v1/endpoints/iris/rollback").status_code == 401
        assert proc.client.get("/ferry/v1/endpoints/iris").status_code == 200  # reads are open
        r = proc.client.put("/ferry/v1/endpoints/iris", json=policy,
                            headers={"authorization": "Bearer s3cret"})
        assert r.status_code == 200
        event = proc.client.get("/ferry/v1/endpoints/iris/events").json()[0]
        assert event["actor"] == "admin-token"
    finally:
        proc.stop()


def test_a_policy_survives_a_restart(two_versions, tmp_path):
    store = f"sqlite:///{tmp_path / 'ferry.db'}"
    proc = ServerProcess(two_versions, "--store", store)
    try:
        r = proc.client.put("/ferry/v1/endpoints/iris", json={
            "kind": "split", "weights": {"1": 1, "2": 3}, "sticky_header": "x-user-id"})
        assert r.status_code == 200
    finally:
        proc.stop()
    proc = ServerProcess(two_versions, "--store", store)
    try:
        status = proc.client.get("/ferry/v1/endpoints/iris").json()
        assert status["describe"] == "split 1=25% 2=75% sticky by x-user-id"
        assert status["stable"] == {"kind": "pin", "version": 2}
        assert set(Counter(send(proc, 400))) == {"1", "2"}
        assert proc.client.post("/ferry/v1/endpoints/iris/rollback").json()["describe"] \
            == "pin 2"
        assert [e["action"] for e in proc.client.get(
            "/ferry/v1/endpoints/iris/events").json()] == ["rollback", "set"]
    finally:
        proc.stop()


def test_rollback_under_load_fails_nothing_and_moves_new_requests_at_once(srv):
    """Old version 1 pinned, then a 50/50 split with the candidate 2; rollback while
    eight clients send: no request fails, and every request sent after the rollback call
    returned (and all sent a second after it was made) is served by version 1."""
    srv.client.put("/ferry/v1/endpoints/iris", json={"kind": "pin", "version": 1})
    srv.client.put("/ferry/v1/endpoints/iris", json={"kind": "split",
                                                      "weights": {"1": 50, "2": 50}})
    results: list[tuple[float, int, str]] = []  # (sent at, status, version)
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            while not stop.is_set():
                sent = time.monotonic()
                r = c.post("/v2/models/iris/infer", json=BODY)
                results.append((sent, r.status_code, r.headers.get("ferry-model-version", "")))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    asked = time.monotonic()
    r = httpx.post(f"{srv.url}/ferry/v1/endpoints/iris/rollback", json={"reason": "test"})
    answered = time.monotonic()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    assert r.status_code == 200 and r.json()["describe"] == "pin 1"
    assert answered - asked < 1.0
    assert [x for x in results if x[1] != 200] == []
    before = Counter(v for sent, _, v in results if sent < asked)
    after = Counter(v for sent, _, v in results if sent > answered)
    assert before["1"] > 20 and before["2"] > 20, before
    assert set(after) == {"1"} and after["1"] > 20, after
    assert {v for sent, _, v in results if sent > asked + 1.0} == {"1"}


def test_a_version_that_leaves_a_split_gives_its_share_to_the_rest(two_versions, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(two_versions, repo)
    proc = ServerProcess(repo, "--poll", "0.3")
    try:
        proc.client.put("/ferry/v1/endpoints/iris", json={"kind": "split",
                                                          "weights": {"1": 50, "2": 50}})
        assert set(Counter(send(proc, 200))) == {"1", "2"}
        shutil.rmtree(repo / "iris" / "2")  # version 2 leaves the repository
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.client.get("/ferry/v1/endpoints/iris").json()["live_versions"] == [1]:
                break
            time.sleep(0.2)
        assert Counter(send(proc, 200)) == {"1": 200}  # no failure, all on the live one
        status = proc.client.get("/ferry/v1/endpoints/iris").json()
        assert status["shares"] == {"1": 1.0}
        assert status["describe"] == "split 1=50% 2=50%"  # the policy itself is kept
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            events = proc.client.get("/ferry/v1/endpoints/iris/events").json()
            if events[0]["action"] == "version_gone":
                break
            time.sleep(0.1)
        assert events[0]["action"] == "version_gone" and "[2]" in events[0]["reason"]
        assert events[0]["actor"] == "ferry"
    finally:
        proc.stop()


def test_the_cli_sets_shows_and_rolls_back(srv):
    runner = CliRunner()
    out = runner.invoke(cli, ["rollout", "iris", "pin", "1", "--url", srv.url])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["rollout", "iris", "split", "1=90", "2=10", "--sticky-header",
                              "x-user-id", "--reason", "cli test", "--url", srv.url])
    assert out.exit_code == 0, out.output
    assert "split 1=90% 2=10% sticky by x-user-id" in out.output
    assert "note: weights normalised from a sum of 100 to 1" in out.output
    out = runner.invoke(cli, ["rollout", "iris", "status", "--url", srv.url])
    assert out.exit_code == 0 and "traffic now: v1 90%, v2 10%" in out.output, out.output
    assert "rollback goes to: pin 1" in out.output and ": cli test" in out.output
    out = runner.invoke(cli, ["rollout", "iris", "split", "1=90", "7=10", "--url", srv.url])
    assert out.exit_code == 1 and "400: version(s) [7] are not loaded; live versions: [1, 2]" \
        in out.output
    out = runner.invoke(cli, ["rollout", "iris", "split", "1:90", "--url", srv.url])
    assert out.exit_code == 2 and "is not VERSION=WEIGHT" in out.output
    out = runner.invoke(cli, ["rollback", "iris", "--url", srv.url])
    assert out.exit_code == 0 and "iris: pin 1" in out.output, out.output


def test_two_servers_on_one_postgresql_store_apply_a_change_within_2s(two_versions,
                                                                      postgres_url):
    a = ServerProcess(two_versions, "--store", postgres_url)
    b = ServerProcess(two_versions, "--store", postgres_url)
    try:
        for policy, expected in (({"kind": "pin", "version": 1}, {"1"}),
                                 ({"kind": "split", "weights": {"1": 1, "2": 1}}, {"1", "2"})):
            r = a.client.put("/ferry/v1/endpoints/iris", json=policy)
            assert r.status_code == 200
            changed = time.monotonic()
            while time.monotonic() - changed < 5:
                if b.client.get("/ferry/v1/endpoints/iris").json()["policy"] == \
                        r.json()["policy"]:
                    break
                time.sleep(0.05)
            took = time.monotonic() - changed
            assert took < 2.0, took
            assert set(Counter(send(b, 200))) == expected
        r = b.client.post("/ferry/v1/endpoints/iris/rollback")
        assert r.json()["describe"] == "pin 1"
        events = a.client.get("/ferry/v1/endpoints/iris/events").json()
        assert [e["action"] for e in events[:3]] == ["rollback", "set", "set"]
    finally:
        b.stop()
        a.stop()
