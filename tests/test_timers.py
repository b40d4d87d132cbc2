"""The case machine's timers and calendar, in isolation (no cryptography).

The notice timer (end of the fifth working day, in CST) and its deemed acceptance,
the promise timer set by an acceptance or a window decision, and special procedures
(suspend/resume) moving the promised date by the working days stopped.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import T0
from machine_helpers import (
    APP,
    CALENDAR,
    CST,
    DECIDED_APP,
    HOUR,
    NOW,
    C,
    H,
    case_in,
    envelope,
    ms,
    new_case,
    next_receipt,
    signed_with,
)

from protocol import Case, Envelope, Receipt, Step, add_working_days
from protocol import bodies as b
from protocol import examples as ex
from protocol.calendar import working_days_between
from protocol.fields import date_of, end_of_day

# ====================================================================== timers


def test_notice_due_is_end_of_fifth_working_day_in_cst() -> None:
    """Friday 03:00 CST is still Thursday in UTC: the clock must count from the CST date."""
    received_at = ms(2026, 11, 20, 3, 0)  # Friday
    assert dt.datetime.fromtimestamp(received_at / 1000, dt.UTC).weekday() == 3  # Thursday UTC
    case = new_case("handling")
    step, _, _ = _receive_body(case, "application", ex.application(received_at), received_at)
    due = ms(2026, 11, 28) - 1  # Friday 2026-11-27 23:59:59.999 CST
    assert step.set_timers == {"notice": due} == case.timers
    assert dt.datetime.fromtimestamp(due / 1000, CST) == dt.datetime(
        2026, 11, 27, 23, 59, 59, 999_000, tzinfo=CST)
    # later on Friday (and the weekend after it) land on the same instant
    for at in (ms(2026, 11, 20, 23, 59), ms(2026, 11, 21, 12), ms(2026, 11, 22, 23, 59)):
        case = new_case("handling")
        _receive_body(case, "application", ex.application(at), at)
        assert case.timers == {"notice": due}
    # T0 is a Monday: due the next Monday
    case = new_case("handling")
    _receive_body(case, "application", APP, T0)
    assert case.timers == {"notice": ms(2026, 12, 1) - 1}


@settings(max_examples=60, deadline=None)
@given(received_at=st.integers(ms(2026, 1, 1), ms(2030, 12, 31)))
def test_notice_due_property(received_at: int) -> None:
    case = new_case("handling")
    _receive_body(case, "application", ex.application(received_at), received_at)
    due = case.timers["notice"]
    day = dt.datetime.fromtimestamp(due / 1000, CST)
    assert (day.hour, day.minute, day.second, day.microsecond) == (23, 59, 59, 999_000)
    assert day.weekday() < 5
    assert working_days_between(CALENDAR, date_of(received_at), day.date()) == 5
    assert (day.date() - date_of(received_at)).days <= 9


def _receive_body(case: Case, kind: str, body: Any, now: int) -> tuple[Step, Envelope, Receipt]:
    env = envelope(kind, case.theirs, case.ours)
    receipt = next_receipt(case, signed_with(case.role, kind, body), now=now)
    step = case.receive(env, body, [receipt], now)
    assert step is not None
    return step, env, receipt


def test_notice_due_is_a_deemed_acceptance() -> None:
    case = new_case("handling", promise_days=10)
    _receive_body(case, "application", APP, T0)
    fired_at = case.timers["notice"] + 1  # Saturday 2026-11-28 00:00 CST
    step = case.local("notice_due", None, fired_at)
    assert step.new_state == case.state == "forwarding"
    assert step.receipt is not None
    assert step.receipt.kind == "deemed_accepted"
    assert step.send is not None
    assert step.send.kind == "decision"
    accept = step.send.body
    assert isinstance(accept, b.Accept)
    assert accept.deemed is True
    # 行政许可法 §32 (四): accepted as of the day the materials were received
    assert accept.accepted_at == T0 == case.received_at
    assert accept.promised_date == add_working_days(CALENDAR, date_of(T0), 10).isoformat()
    assert step.receipt.data["deemed"] is True
    assert "notice" not in case.timers
    assert case.timers["promise"] == end_of_day(dt.date.fromisoformat(accept.promised_date))
    # the collecting side reads it as an acceptance
    collecting = case_in("collecting", "under_review")
    env = envelope("decision", H, C)
    out = collecting.receive(env, accept, [next_receipt(collecting, "deemed_accepted")], fired_at)
    assert out is not None
    assert out.event == "accept"
    assert collecting.state == "accepted"


def test_promise_timer_from_accept_and_suspend_resume_moves_it() -> None:
    case = new_case("handling")
    _receive_body(case, "application", APP, T0)
    step = case.local("accept", ex.accept(T0, promised_date="2026-12-18"), T0 + HOUR)
    assert step.cancel_timers == ("notice",)
    assert case.promised_date == "2026-12-18"
    assert case.timers == {"promise": end_of_day(dt.date(2026, 12, 18))} == step.set_timers
    case.local("forwarded", ex.forwarded(T0), T0 + 2 * HOUR)
    suspend_at = ms(2026, 11, 23, 10)  # Monday
    step = case.local("suspend", ex.progress(suspend_at, "suspend"), suspend_at)
    assert step.cancel_timers == ("promise",)
    assert case.timers == {}
    assert case.suspended_on == "2026-11-23"
    resume_at = ms(2026, 12, 1, 16)  # Tuesday next week: 6 working days stopped
    step = case.local("resume", ex.progress(resume_at, "resume"), resume_at)
    assert case.promised_date == "2026-12-28"  # Friday 12-18 + 6 working days
    assert case.timers == step.set_timers == {"promise": end_of_day(dt.date(2026, 12, 28))}
    assert case.suspended_on is None


@settings(max_examples=50, deadline=None)
@given(suspend_day=st.integers(0, 20), length=st.integers(0, 30),
       promised=st.dates(dt.date(2026, 11, 23), dt.date(2027, 6, 30)))
def test_resume_moves_promise_by_working_days_suspended(suspend_day: int, length: int,
                                                        promised: dt.date) -> None:
    case = case_in("handling", "processing")
    case.promised_date = promised.isoformat()
    suspend_at = NOW + suspend_day * ex.DAY
    resume_at = suspend_at + length * ex.DAY + HOUR
    case.local("suspend", ex.progress(suspend_at, "suspend"), suspend_at)
    assert "promise" not in case.timers
    case.local("resume", ex.progress(resume_at, "resume"), resume_at)
    stopped = working_days_between(CALENDAR, date_of(suspend_at), date_of(resume_at))
    moved = add_working_days(CALENDAR, promised, stopped)
    assert case.promised_date == moved.isoformat()
    assert case.timers["promise"] == end_of_day(moved)
    weekdays = sum(1 for d in range(1, (date_of(resume_at) - date_of(suspend_at)).days + 1)
                   if (date_of(suspend_at) + dt.timedelta(days=d)).weekday() < 5)
    assert stopped == weekdays


def test_promise_from_window_decision_in_collecting_decides_model() -> None:
    case = new_case("handling", acceptance="collecting_decides")
    step, _, _ = _receive_body(case, "application", DECIDED_APP, T0)
    assert step.new_state == "forwarding"
    assert case.promised_date == DECIDED_APP.window_decision.promised_date  # type: ignore[union-attr]
    assert case.timers == {"promise": end_of_day(dt.date(2026, 12, 18))}
