"""The HTTP server's deadline verdicts, over every state a connection can be in."""

from __future__ import annotations

import itertools

from ferry.protocols.http_timeouts import BODY, HEAD, IDLE, Action, Verdict, verdict

STATES = list(itertools.product((IDLE, HEAD, BODY), *[(False, True)] * 6))


def test_every_state_has_one_verdict_and_a_closed_connection_says_why():
    for phase, busy, closing, reading_paused, write_paused, write_late, cont in STATES:
        v = verdict(phase, busy, closing, reading_paused, write_paused, write_late, cont)
        assert isinstance(v, Verdict)
        if v.action in (Action.CLOSE, Action.REJECT_408) and not closing:
            assert v.reason in ("header_timeout", "body_timeout", "idle_timeout",
                                "send_timeout"), v


def test_a_client_that_reads_nothing_is_closed_once_its_send_timeout_runs_out():
    for phase, busy, closing, reading_paused, _, _, cont in STATES:
        args = (phase, busy, closing, reading_paused)
        assert verdict(*args, True, True, cont) == Verdict(Action.CLOSE, "send_timeout")
        assert verdict(*args, True, False, cont) == Verdict(Action.WAIT_WRITE)


def test_a_late_client_is_never_parked():
    """Headers or body late while the server reads: closed, or 408 after the answers to the
    requests before it; never left without a deadline (the trickler that cannot be cut)."""
    for phase, busy, _, _, _, _, _ in STATES:
        if phase == IDLE:
            continue
        reason = "header_timeout" if phase == HEAD else "body_timeout"
        got = verdict(phase, busy, False, False, False, False, False)
        assert got == Verdict(Action.REJECT_408 if busy else Action.CLOSE, reason)


def test_a_connection_waiting_on_the_server_is_parked():
    for phase, busy, closing, reading_paused, write_paused, write_late, cont in STATES:
        if write_paused:
            continue
        got = verdict(phase, busy, closing, reading_paused, False, write_late, cont)
        server_owes = ((closing and busy) or (not closing and reading_paused)
                       or (not closing and phase == BODY and cont)
                       or (not closing and phase == IDLE and busy))
        assert (got.action is Action.PARK) == server_owes, (phase, busy, closing,
                                                             reading_paused, cont, got)


def test_idle_and_linger():
    assert verdict(IDLE, False, False, False, False, False, False) == \
        Verdict(Action.CLOSE, "idle_timeout")
    for phase in (IDLE, HEAD, BODY):  # the linger after a reject is over: closed, not counted
        assert verdict(phase, False, True, False, False, False, False) == Verdict(Action.CLOSE)
