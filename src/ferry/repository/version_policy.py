"""Which of a model's versions should be live: a pure function of the versions present."""

from __future__ import annotations

from collections.abc import Iterable

from ferry.manifest import VersionPolicy


def aspired_versions(available: Iterable[int], policy: VersionPolicy) -> list[int]:
    """The versions to serve, newest first.

    >>> aspired_versions([1, 2, 3], VersionPolicy())
    [3]
    >>> aspired_versions([1, 2, 3], VersionPolicy(latest=2))
    [3, 2]
    >>> aspired_versions([1, 2, 3], VersionPolicy(all=True))
    [3, 2, 1]
    >>> aspired_versions([1, 2, 3], VersionPolicy(specific=[1, 5]))
    [1]
    """
    versions = sorted(set(available), reverse=True)
    if policy.all:
        return versions
    if policy.specific is not None:
        wanted = set(policy.specific)
        return [v for v in versions if v in wanted]
    return versions[: policy.latest or 1]
