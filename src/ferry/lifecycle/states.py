"""A version's state and the transitions allowed between states: one state machine."""

from __future__ import annotations

from enum import Enum


class VersionState(str, Enum):
    """Names match Triton's repository index (``READY``, ``UNAVAILABLE``, ``LOADING``)."""

    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


LEGAL: dict[VersionState, frozenset[VersionState]] = {
    VersionState.UNAVAILABLE: frozenset({VersionState.LOADING}),
    VersionState.LOADING: frozenset({VersionState.READY, VersionState.UNAVAILABLE}),
    VersionState.READY: frozenset({VersionState.UNLOADING}),
    VersionState.UNLOADING: frozenset({VersionState.UNAVAILABLE}),
}


def check_transition(current: VersionState, new: VersionState) -> None:
    """Raise ``RuntimeError`` for a transition the table does not allow (a Ferry bug)."""
    if new not in LEGAL[current]:
        raise RuntimeError(f"illegal version state change {current.value} -> {new.value}")
