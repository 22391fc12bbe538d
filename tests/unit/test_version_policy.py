"""aspired_versions: which of the versions present should be live, newest first."""

from __future__ import annotations

import pytest

from ferry.manifest import VersionPolicy, parse_manifest
from ferry.repository.version_policy import aspired_versions


@pytest.mark.parametrize("available, policy, expected", [
    # default: the newest one
    ([1, 2, 3], VersionPolicy(), [3]),
    ([3, 1, 2], VersionPolicy(), [3]),
    ([7], VersionPolicy(), [7]),
    ([], VersionPolicy(), []),
    ([0], VersionPolicy(), [0]),
    # latest: N
    ([1, 2, 3], VersionPolicy(latest=1), [3]),
    ([1, 2, 3], VersionPolicy(latest=2), [3, 2]),
    ([1, 2, 3], VersionPolicy(latest=5), [3, 2, 1]),
    ([10, 2, 1], VersionPolicy(latest=2), [10, 2]),  # numeric, not lexical, order
    ([], VersionPolicy(latest=3), []),
    # all
    ([1, 2, 3], VersionPolicy(all=True), [3, 2, 1]),
    ([5, 1, 9, 2], VersionPolicy(all=True), [9, 5, 2, 1]),
    ([], VersionPolicy(all=True), []),
    # specific: only those present, newest first
    ([1, 2, 3], VersionPolicy(specific=[1, 3]), [3, 1]),
    ([1, 2, 3], VersionPolicy(specific=[1, 5]), [1]),
    ([1, 2, 3], VersionPolicy(specific=[4, 5]), []),
    ([1, 2, 3], VersionPolicy(specific=[]), []),
    ([1, 2, 3], VersionPolicy(specific=[3, 3, 2]), [3, 2]),
])
def test_aspired_versions(available: list[int], policy: VersionPolicy,
                          expected: list[int]) -> None:
    assert aspired_versions(available, policy) == expected


def test_duplicates_and_iterables() -> None:
    assert aspired_versions(iter([2, 2, 1]), VersionPolicy(all=True)) == [2, 1]
    assert aspired_versions({4: "a", 9: "b"}, VersionPolicy()) == [9]  # dict keys


@pytest.mark.parametrize("raw, expected", [
    ({}, [12]),
    ({"version_policy": {"latest": 2}}, [12, 3]),
    ({"version_policy": "all"}, [12, 3, 2, 1]),
    ({"version_policy": {"all": True}}, [12, 3, 2, 1]),
    ({"version_policy": {"all": False}}, [12]),
    ({"version_policy": {"specific": [1, 3]}}, [3, 1]),
])
def test_policies_from_manifest(raw: dict, expected: list[int]) -> None:
    policy = parse_manifest(raw).version_policy
    assert aspired_versions([1, 2, 3, 12], policy) == expected
