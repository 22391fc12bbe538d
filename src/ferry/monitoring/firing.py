"""Whether an alert notifies now: a pure decision over the alert's state as stored in the
evaluation store and the latest judgement of its rule.

Every replica on a store evaluates every rule; the state they share (``alert_states``, see
``evalstore.alertstates``) makes one of them notify, once:

- **One judgement per tick.** A judgement is labelled with its tick, the evaluation time
  rounded down to the alert interval, so replicas evaluating in the same interval share a
  label. A status change is only taken from a judgement newer than the one that set the
  stored status: the first replica to judge a tick decides it, a slower one (or one whose
  window saw a flush more or less) cannot flip it back in the same tick.
- **A lease while notifying.** The replica that claims a change (a compare-and-set on the
  row) holds a lease until it has sent the webhook; while a lease runs nobody else acts on
  the alert, so notifications of one alert never overlap or reorder.
- **Re-notify what was not delivered.** A notification whose webhook failed, or whose
  sender died, is sent again (by any replica) once the lease has ended. One that went out
  is never sent again: a replica that starts or takes over reads the stored status.

``decide`` is the whole policy; ``AlertLoop`` (``monitoring.alerts``) applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Action(Enum):
    NONE = "none"
    FIRE = "firing"
    """The rule holds and the stored status is resolved (or there is none): notify firing."""
    RESOLVE = "resolved"
    """The rule no longer holds and the stored status is firing: notify resolved."""
    RENOTIFY = "renotify"
    """The stored status's notification was not delivered: send it again."""


@dataclass(frozen=True)
class Stored:
    """An alert's row in ``alert_states``, as far as the decision needs it."""

    firing: bool
    notified: bool
    """The notification of the current status went out (or there was none to send)."""
    lease_until: float
    """A replica is notifying until this time (epoch seconds); 0 when none is."""
    judged: float
    """The tick of the judgement that set the status."""


def tick_of(now: float, interval_s: float) -> float:
    """The tick a judgement made at ``now`` belongs to."""
    return (now // interval_s) * interval_s if interval_s > 0 else now


def decide(stored: Stored | None, fires: bool, tick: float, now: float) -> Action:
    """What this replica should do about one alert, given the stored state, whether the
    rule holds in its evaluation, the evaluation's tick and the time."""
    if stored is None:
        return Action.FIRE if fires else Action.NONE
    if stored.lease_until > now:
        return Action.NONE  # another notification of this alert is being sent
    if tick > stored.judged and fires != stored.firing:
        return Action.FIRE if fires else Action.RESOLVE
    if not stored.notified:
        return Action.RENOTIFY
    return Action.NONE


def firing_after(action: Action, stored: Stored | None) -> bool:
    """The stored status once ``action`` is applied."""
    if action is Action.FIRE:
        return True
    if action is Action.RESOLVE:
        return False
    return stored is not None and stored.firing
