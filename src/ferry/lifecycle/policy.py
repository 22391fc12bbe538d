"""What to do next for one model: a pure function of a snapshot (TF Serving's
availability-preserving policy, written as data in, decisions out).

Rules:
- An aspired version with no harness, or whose files changed since it was loaded (new
  fingerprint), is loaded, unless that fingerprint already failed (no retry loops; a change
  to the files retries).
- A live version that is no longer aspired is unloaded only once some aspired version is
  live: a new version that fails to load never takes the old one's place.
- When the model folder is gone, or the model was unloaded by the API, everything unloads.
- A version that failed and is no longer in the repository is forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry.lifecycle.states import VersionState


@dataclass(frozen=True, slots=True)
class VersionSnapshot:
    """One harness as the policy sees it."""

    version: int
    state: VersionState
    fingerprint: str
    """The files the harness holds (or tried to load)."""


@dataclass(frozen=True, slots=True)
class Load:
    version: int
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Unload:
    version: int


@dataclass(frozen=True, slots=True)
class Forget:
    version: int


Action = Load | Unload | Forget


def plan(aspired: dict[int, str], current: list[VersionSnapshot], present: set[int],
         removed: bool = False, failed: dict[int, str] | None = None) -> list[Action]:
    """Loads first (newest first), then unloads, then forgets.

    ``aspired``: version -> fingerprint the repository says should be live;
    ``current``: the model's harnesses; ``present``: versions still in the repository;
    ``removed``: the model folder is gone or was unloaded through the API;
    ``failed``: version -> the fingerprint whose load last failed (not retried).
    """
    failed = failed or {}
    by_version = {s.version: s for s in current}
    if removed:
        return [Unload(s.version) if s.state is VersionState.READY else Forget(s.version)
                for s in current if s.state is not VersionState.LOADING]
    actions: list[Action] = []
    for version in sorted(aspired, reverse=True):
        fingerprint = aspired[version]
        snap = by_version.get(version)
        if failed.get(version) == fingerprint:
            continue
        if snap is None or (snap.fingerprint != fingerprint
                            and snap.state is not VersionState.LOADING):
            actions.append(Load(version, fingerprint))
    live_aspired = any(s.version in aspired and s.state is VersionState.READY
                       and s.fingerprint == aspired[s.version] for s in current)
    for snap in current:
        if snap.version in aspired:
            continue
        if snap.state is VersionState.READY and live_aspired:
            actions.append(Unload(snap.version))
        elif snap.state is VersionState.UNAVAILABLE and snap.version not in present:
            actions.append(Forget(snap.version))
        elif snap.state is VersionState.UNAVAILABLE and live_aspired:
            actions.append(Forget(snap.version))
    return actions
