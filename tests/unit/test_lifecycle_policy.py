"""The lifecycle policy is pure: enumerate snapshots and check the decisions."""

from __future__ import annotations

import pytest

from ferry.lifecycle.policy import Forget, Load, Unload, VersionSnapshot, plan
from ferry.lifecycle.states import VersionState

R, L, U = VersionState.READY, VersionState.LOADING, VersionState.UNAVAILABLE


def snap(version: int, state: VersionState, fp: str = "a") -> VersionSnapshot:
    return VersionSnapshot(version, state, fp)


@pytest.mark.parametrize(("aspired", "current", "present", "expected"), [
    # first load
    ({1: "a"}, [], {1}, [Load(1, "a")]),
    # nothing to do
    ({1: "a"}, [snap(1, R)], {1}, []),
    # new version: load it; the old one stays until the new one is live
    ({2: "b"}, [snap(1, R)], {1, 2}, [Load(2, "b")]),
    # new version live: retire the old one
    ({2: "b"}, [snap(1, R), snap(2, R, "b")], {1, 2}, [Unload(1)]),
    # new version failed: keep serving the old one, nothing else
    ({2: "b"}, [snap(1, R), snap(2, U, "b")], {1, 2}, []),
    # new version still loading: keep the old one
    ({2: "b"}, [snap(1, R), snap(2, L, "b")], {1, 2}, []),
    # files replaced in place: reload the same version
    ({1: "new"}, [snap(1, R, "old")], {1}, [Load(1, "new")]),
    # replaced while still loading: wait for the load to finish first
    ({1: "new"}, [snap(1, L, "old")], {1}, []),
    # a failed version whose folder is gone is forgotten
    ({1: "a"}, [snap(1, R), snap(2, U)], {1}, [Forget(2)]),
    # latest: 2 keeps both
    ({3: "c", 2: "b"}, [snap(2, R, "b"), snap(1, R)], {1, 2, 3}, [Load(3, "c"), Unload(1)]),
    # loads come newest first
    ({3: "c", 2: "b"}, [], {2, 3}, [Load(3, "c"), Load(2, "b")]),
])
def test_plan(aspired, current, present, expected):
    assert plan(aspired, current, present) == expected


def test_a_failed_fingerprint_is_not_retried_but_a_new_one_is():
    failed = {2: "bad"}
    assert plan({2: "bad"}, [snap(1, R), snap(2, U, "bad")], {1, 2}, failed=failed) == []
    assert plan({2: "fixed"}, [snap(1, R), snap(2, U, "bad")], {1, 2}, failed=failed) == [
        Load(2, "fixed")]
    # a failed replacement of a live version is not retried either
    assert plan({1: "bad"}, [snap(1, R, "good")], {1}, failed={1: "bad"}) == []


@pytest.mark.parametrize("current", [
    [snap(1, R)], [snap(1, R), snap(2, U)], [snap(1, U)], [snap(1, R), snap(2, L)]])
def test_removed_models_unload_everything_not_loading(current):
    actions = plan({}, current, set(), removed=True)
    for s in current:
        if s.state is R:
            assert Unload(s.version) in actions
        elif s.state is U:
            assert Forget(s.version) in actions
        else:
            assert all(getattr(a, "version", None) != s.version for a in actions)


def test_nothing_aspired_but_not_removed_keeps_live_versions():
    # e.g. a manifest that became invalid: never take the working version down
    assert plan({}, [snap(1, R)], {1}) == []
