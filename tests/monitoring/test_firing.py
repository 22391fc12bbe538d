"""The alert firing decision (``monitoring.firing.decide``), by enumeration: every stored
state against every judgement, then replicas sharing one state through a model of the
store's compare-and-set, with failing webhooks and senders that die, over many schedules."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace

import pytest

from ferry.monitoring.firing import Action, Stored, decide, firing_after, tick_of

NOW = 1000.0
TICK = 990.0


def stored_states() -> list[Stored | None]:
    """Every stored state, judged before, at and after ``TICK``, lease live or not."""
    states: list[Stored | None] = [None]
    for firing, notified, lease, judged in itertools.product(
            (True, False), (True, False), (0.0, NOW - 1, NOW + 5), (TICK - 60, TICK, TICK + 60)):
        states.append(Stored(firing, notified, lease, judged))
    return states


@pytest.mark.parametrize("stored", stored_states(), ids=repr)
@pytest.mark.parametrize("fires", [True, False])
def test_decide_over_every_state(stored: Stored | None, fires: bool):
    action = decide(stored, fires, TICK, NOW)
    if stored is None:  # a first judgement: only a firing one is news
        assert action is (Action.FIRE if fires else Action.NONE)
        return
    if stored.lease_until > NOW:  # someone is notifying: never overlap
        assert action is Action.NONE
        return
    changes = TICK > stored.judged and fires != stored.firing
    if changes:
        assert action is (Action.FIRE if fires else Action.RESOLVE)
    elif not stored.notified:
        assert action is Action.RENOTIFY
    else:  # delivered, and no newer judgement that disagrees: nothing to send again
        assert action is Action.NONE
    # a status change never goes against the judgement that makes it
    assert action is not Action.FIRE or fires
    assert action is not Action.RESOLVE or not fires
    # a judgement of the same or an older tick never changes the stored status
    if TICK <= stored.judged:
        assert firing_after(action, stored) == stored.firing


def test_ticks_are_shared_by_judgements_in_one_interval():
    assert tick_of(125.0, 60) == tick_of(179.9, 60) == 120.0
    assert tick_of(180.0, 60) == 180.0
    assert tick_of(7.5, 0) == 7.5


# -- replicas on one store ---------------------------------------------------------------

LEASE = 30.0


@dataclass
class Row:
    stored: Stored
    seq: int
    status: str


class Store:
    """The alert's row with ``evalstore.alertstates``' compare-and-set semantics."""

    def __init__(self) -> None:
        self.row: Row | None = None
        self.delivered: list[tuple[str, float]] = []  # (status, tick of its judgement)
        self.claimed: list[tuple[str, float]] = []

    def claim(self, seen: Row | None, firing: bool, judged: float, now: float) -> int | None:
        if (self.row is None) != (seen is None) or (
                seen is not None and self.row is not None and self.row.seq != seen.seq):
            return None
        seq = 1 if seen is None else seen.seq + 1
        self.claimed.append(("firing" if firing else "resolved", judged))
        self.row = Row(Stored(firing, False, now + LEASE, judged), seq,
                       "firing" if firing else "resolved")
        return seq

    def end(self, seq: int, delivered: bool) -> None:
        if self.row is not None and self.row.seq == seq:
            self.row.stored = replace(self.row.stored, lease_until=0.0,
                                      notified=delivered or self.row.stored.notified)


def simulate(seed: int, replicas: int, ticks: int) -> tuple[Store, list[bool]]:
    """Each tick every replica reads the row, then in a random order decides and claims;
    the winner's webhook fails or its process dies before sending, now and then. The
    condition changes now and then, and the replicas agree on it within a tick."""
    rng = random.Random(seed)
    store = Store()
    truth: list[bool] = []
    fires = False
    for t in range(ticks):
        if rng.random() < 0.15 and t < ticks - 80:  # quiet at the end: everything settles
            fires = not fires
        truth.append(fires)
        tick = float(t)
        seen = [store.row and Row(store.row.stored, store.row.seq, store.row.status)
                for _ in range(replicas)]
        for r in rng.sample(range(replicas), replicas):
            now = tick + rng.random() * 0.9
            row = seen[r]
            action = decide(row.stored if row else None, fires, tick, now)
            if action is Action.NONE:
                continue
            if action is Action.RENOTIFY and row is not None:
                firing, judged = row.stored.firing, row.stored.judged
            else:
                firing, judged = action is Action.FIRE, tick
            seq = store.claim(row, firing, judged, now)
            if seq is None:
                continue
            fate = rng.random() if t < ticks - 80 else 1.0
            if fate < 0.1:  # the sender died: its lease runs out
                continue
            if fate < 0.3:  # the webhook failed
                store.end(seq, delivered=False)
                continue
            store.delivered.append(("firing" if firing else "resolved", judged))
            store.end(seq, delivered=True)
    return store, truth


@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
def test_replicas_notify_each_change_once_and_in_order(replicas: int):
    for seed in range(200):
        store, truth = simulate(seed, replicas, 300)
        statuses = [s for s, _ in store.delivered]
        # no notification is delivered twice, by one replica or by several
        assert len(set(store.delivered)) == len(store.delivered), (seed, store.delivered)
        # the same status twice in a row only when the change between them was not
        # delivered (its webhook failed and the condition changed back meanwhile)
        for (a, ja), (b, jb) in itertools.pairwise(store.delivered):
            assert a != b or any(s != a and ja < j < jb for s, j in store.claimed), seed
        # each notification says what the condition was at the tick it was judged
        assert all((s == "firing") == truth[int(j)] for s, j in store.delivered), seed
        # judged ticks move forward: no notification overtakes a later one
        ticks = [j for _, j in store.delivered]
        assert ticks == sorted(ticks), seed
        # eventually delivered: the last notification is the final condition
        if any(truth):
            assert statuses and (statuses[-1] == "firing") == truth[-1], (seed, statuses)
        # and no more notifications than changes of the condition
        changes = sum(a != b for a, b in itertools.pairwise([False, *truth]))
        assert len(statuses) <= changes, (seed, len(statuses), changes)
