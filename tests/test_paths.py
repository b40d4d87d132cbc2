"""Every path through both roles, driven end to end over the in-memory loopback.

Each path ends with both sides' evidence bundles verifying and the expected states.
Every path test runs twice (``mode``): once delivering each message once, once
delivering each message twice, where the second copy must be a ``duplicate`` that
changes nothing and re-queues exactly the bytes first answered. Races, out-of-order
delivery, tampering and key revocation are in ``test_paths_races``.
"""

from __future__ import annotations

import datetime as dt

import pytest
from loopback import T0, Delivered, Pair, example_body
from paths_helpers import CID, HOUR, Driver, hours, ms, run_to_end, run_to_processing

from protocol import bodies as b
from protocol import decode_envelope
from protocol import examples as ex
from protocol.errors import LocalProtocolError, Reason
from protocol.fields import end_of_day
from receipts import verify_bundle


@pytest.fixture(params=["once", "twice"])
def d(request: pytest.FixtureRequest) -> Driver:
    return Driver(Pair(), twice=request.param == "twice")


@pytest.fixture(params=["once", "twice"])
def twice(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "twice")


# ====================================================================== (a) happy path


def test_happy_path_handling_decides(d: Driver) -> None:
    d.start()
    assert d.states() == ("under_review", "received")
    assert "notice" in d.h.cases[CID].timers
    d.act(d.h, "accept", hours(1))
    assert d.states() == ("accepted", "forwarding")
    assert set(d.h.cases[CID].timers) == {"promise"}
    d.act(d.h, "forwarded", hours(2))
    run_to_end(d)
    assert d.c.kinds(CID) == [
        "collected", "submitted", "received_by_handler", "accepted", "forwarded", "progress",
        "outcome_received", "delivered", "evaluated", "archived"]
    assert d.h.kinds(CID) == [
        "received", "accepted", "forwarded", "progress", "concluded", "outcome_acknowledged",
        "delivered", "evaluated", "archived"]
    assert d.h.cases[CID].timers == {}
    d.verify()


def test_archive_without_evaluation(d: Driver) -> None:
    run_to_processing(d)
    d.act(d.h, "conclude", hours(3))
    d.act(d.c, "deliver", hours(4))
    d.act(d.c, "archive", hours(5))
    d.act(d.h, "archive", hours(6))
    assert d.states() == ("archived", "archived")
    d.verify()


# ====================================================================== (b)–(d) 补正 and refusal


def test_supplement_then_accept(d: Driver) -> None:
    d.start()
    d.act(d.h, "request_supplement", hours(1))
    assert d.states() == ("supplement_requested", "supplement_requested")
    assert "notice" not in d.h.cases[CID].timers
    d.act(d.c, "supplement", hours(2))
    assert d.states() == ("supplied", "supplied")
    d.act(d.h, "accept", hours(3))
    assert d.states() == ("accepted", "forwarding")
    d.act(d.h, "forwarded", hours(4))
    run_to_end(d, start=5)
    d.verify()


def test_supplement_then_refuse(d: Driver) -> None:
    d.start()
    d.act(d.h, "request_supplement", hours(1))
    d.act(d.c, "supplement", hours(2))
    d.act(d.h, "refuse", hours(3))
    assert d.states() == ("refused", "refused")
    d.act(d.c, "archive", hours(4))
    d.act(d.h, "archive", hours(5))
    assert d.states() == ("archived", "archived")
    d.verify()


def test_refuse_directly_and_archive(d: Driver) -> None:
    d.start()
    d.act(d.h, "refuse", hours(1))
    assert d.states() == ("refused", "refused")
    assert d.h.cases[CID].timers == {}
    d.act(d.h, "archive", hours(2))
    d.act(d.c, "archive", hours(3))
    assert d.states() == ("archived", "archived")
    assert d.c.kinds(CID)[-2:] == ["refused", "archived"]
    d.verify()


# ====================================================================== (e) collecting decides


def test_collecting_decides(twice: bool) -> None:
    d = Driver(Pair(acceptance="collecting_decides"), twice=twice)
    d.start(decided=True)
    assert d.states() == ("accepted", "forwarding")
    assert d.c.kinds(CID) == ["collected", "accepted_at_window", "received_by_handler"]
    assert d.h.kinds(CID) == ["received_accepted"]
    assert d.h.cases[CID].promised_date == "2026-12-18"
    assert d.h.cases[CID].timers == {"promise": end_of_day(dt.date(2026, 12, 18))}
    d.act(d.h, "forwarded", hours(1))
    run_to_end(d, start=2)
    d.verify()


def test_collecting_decides_not_authorised_at_handling_side() -> None:
    pair = Pair(acceptance="collecting_decides", handling_acceptance="handling_decides")
    app = ex.application(T0, window_decision=ex.accept(T0))
    pair.collecting.local(CID, "collect", app, T0)
    pair.collecting.local(CID, "submit_decided", app, T0 + 1)
    (wire,) = pair.collecting.take_outbox()
    result = pair.handling.deliver(wire, T0 + 2)
    assert result == Delivered("rejected", reason=Reason.NOT_AUTHORISED)
    assert pair.states(CID) == ("sent_decided", "new")
    assert pair.handling.chains[CID] == []
    assert pair.handling.outbox == []
    assert pair.handling.deliver(wire, T0 + 3).reason is Reason.NOT_AUTHORISED  # final, again
    pair.collecting.verify(CID)
    pair.handling.verify(CID)


def test_collect_then_window_decision() -> None:
    """The window decides after collecting: the collected receipt digests an application
    without the decision, which the handling side never sees; its bundle says so."""
    pair = Pair(acceptance="collecting_decides")
    pair.collecting.local(CID, "collect", ex.application(T0), T0)
    decided = ex.application(T0, window_decision=ex.accept(T0))
    pair.collecting.local(CID, "submit_decided", decided, T0 + 1)
    pair.pump(T0 + 2)
    assert pair.states(CID) == ("accepted", "forwarding")
    assert verify_bundle(pair.collecting.bundle(CID)).causes_unchecked == 0
    assert verify_bundle(pair.handling.bundle(CID)).causes_unchecked == 1  # collecting#0


# ====================================================================== (f) the window's own decisions


def window_pair() -> Pair:
    """The window's own acts need the collecting-decides model."""
    return Pair(acceptance="collecting_decides")


def test_window_supplement_then_refusal() -> None:
    pair = window_pair()
    c = pair.collecting
    c.local(CID, "collect", ex.application(T0), T0)
    c.local(CID, "window_supplement", ex.supplement_request(hours(1)), hours(1))
    assert c.cases[CID].state == "awaiting_materials"
    c.local(CID, "window_supplemented", ex.supplement(hours(2)), hours(2))
    assert c.cases[CID].state == "supplied_at_window"
    with pytest.raises(LocalProtocolError) as caught:  # 一次性告知: once
        c.local(CID, "window_supplement", ex.supplement_request(hours(3)), hours(3))
    assert caught.value.reason is Reason.INVALID_TRANSITION
    c.local(CID, "window_refuse", ex.refuse(hours(3)), hours(3))
    c.local(CID, "archive", None, hours(4))
    assert c.cases[CID].state == "archived"
    assert c.kinds(CID) == ["collected", "window_supplement_notice", "window_supplemented",
                            "refused_at_window", "archived"]
    assert c.outbox == []
    assert CID not in pair.handling.cases
    c.verify(CID)


@pytest.mark.parametrize("path", [
    ["window_refuse"],
    ["window_supplement", "window_refuse"],
    ["window_supplement", "window_supplemented", "window_refuse"],
    ["withdraw"],
    ["window_supplement", "withdraw"],
    ["window_supplement", "window_supplemented", "withdraw"],
])
def test_window_refusal_and_withdrawal_stay_at_the_window(path: list[str]) -> None:
    pair = window_pair()
    c = pair.collecting
    c.local(CID, "collect", ex.application(T0), T0)
    for i, event in enumerate(path, start=1):
        c.local(CID, event, example_body(c.cases[CID], event, hours(i)), hours(i))
    assert c.cases[CID].state == ("withdrawn" if path[-1] == "withdraw" else "refused")
    c.local(CID, "archive", None, hours(9))
    assert c.cases[CID].state == "archived"
    assert c.outbox == []
    assert CID not in pair.handling.cases
    c.verify(CID)


@pytest.mark.parametrize("event", ["window_supplement", "window_refuse"])
def test_window_may_not_decide_in_handling_decides_model(event: str) -> None:
    pair = Pair()
    c = pair.collecting
    c.local(CID, "collect", ex.application(T0), T0)
    with pytest.raises(LocalProtocolError) as caught:
        c.local(CID, event, example_body(c.cases[CID], event, hours(1)), hours(1))
    assert caught.value.reason is Reason.NOT_AUTHORISED
    assert c.cases[CID].state == "collected"


def test_window_supplement_then_window_decision(twice: bool) -> None:
    """The window's 补正 receipts travel to the handling side, but their bodies do not:
    its bundle verifies and counts them as causes it cannot check."""
    d = Driver(window_pair(), twice=twice)
    d.application = ex.application(T0, window_decision=ex.accept(T0))
    d.act(d.c, "collect", T0, pump=False)
    d.act(d.c, "window_supplement", hours(1), pump=False)
    d.act(d.c, "window_supplemented", hours(2), pump=False)
    d.act(d.c, "submit_decided", hours(3))
    assert d.states() == ("accepted", "forwarding")
    d.verify()
    assert verify_bundle(d.h.bundle(CID)).causes_unchecked == 2
    assert verify_bundle(d.c.bundle(CID)).causes_unchecked == 0


# ====================================================================== (g) withdrawal


@pytest.mark.parametrize("after", ["sent", "under_review", "supplement_requested", "supplied"])
def test_withdrawal_before_decision(d: Driver, after: str) -> None:
    d.application = ex.application(T0)
    d.act(d.c, "collect", T0, pump=False)
    d.act(d.c, "submit", T0 + 1, pump=after != "sent")
    if after in ("supplement_requested", "supplied"):
        d.act(d.h, "request_supplement", hours(1))
    if after == "supplied":
        d.act(d.c, "supplement", hours(2))
    assert d.c.cases[CID].state == after
    d.act(d.c, "withdraw", hours(3))
    assert d.states() == ("withdrawn", "withdrawn")
    assert d.h.cases[CID].timers == {}
    d.act(d.c, "archive", hours(4))
    d.act(d.h, "archive", hours(5))
    assert d.states() == ("archived", "archived")
    d.verify()


@pytest.mark.parametrize(("decision", "c_state", "h_state"), [
    ("accept", "accepted", "forwarding"),
    ("refuse", "refused", "refused"),
])
def test_withdrawal_crossing_a_decision(decision: str, c_state: str, h_state: str) -> None:
    pair = Pair()
    c, h = pair.collecting, pair.handling
    d = Driver(pair, twice=False)
    d.start()
    d.act(h, decision, hours(1), pump=False)
    (decision_wire,) = h.take_outbox()
    d.act(c, "withdraw", hours(2), pump=False)
    assert c.cases[CID].state == "withdrawing"
    (withdrawal,) = c.take_outbox()
    assert h.deliver(withdrawal, hours(3)).outcome == "applied"
    assert h.cases[CID].state == h_state
    (rejection,) = h.take_outbox()
    assert decode_envelope(rejection).kind == "rejection"
    assert c.deliver(rejection, hours(3)).reason is Reason.OUT_OF_ORDER  # decision first
    assert c.deliver(decision_wire, hours(4)).outcome == "applied"
    assert c.cases[CID].state == c_state
    step = c.deliver(rejection, hours(4)).step
    assert step is not None
    assert step.receipt is not None
    assert step.receipt.kind == "withdrawal_refused"
    assert pair.states(CID) == (c_state, h_state)
    assert h.kinds(CID)[-1] == "withdrawal_refused"
    if decision == "accept":
        d.act(h, "forwarded", hours(5))
        assert pair.states(CID) == ("processing", "processing")
    d.verify()


def test_withdrawal_crossing_a_supplement_request(d: Driver) -> None:
    d.start()
    d.act(d.h, "request_supplement", hours(1), pump=False)
    d.act(d.c, "withdraw", hours(2))
    assert d.states() == ("withdrawn", "withdrawn")
    assert "supplement_requested" in d.c.kinds(CID)
    d.verify()


def test_withdrawal_after_handling_archived_refusal(d: Driver) -> None:
    d.start()
    d.act(d.h, "refuse", hours(1), pump=False)
    d.act(d.h, "archive", hours(2), pump=False)
    d.act(d.c, "withdraw", hours(3))
    assert d.states() == ("refused", "archived")
    assert d.c.kinds(CID)[-1] == "withdrawal_refused"
    d.verify()


# ====================================================================== (h) deemed acceptance


def test_deemed_acceptance(d: Driver) -> None:
    d.start()  # Monday 2026-11-23: due the next Monday 23:59:59.999 CST
    due = ms(2026, 12, 1) - 1
    assert d.h.cases[CID].timers == {"notice": due}
    assert d.h.fire_timers(due - 1) == []
    (step,) = d.h.fire_timers(due)  # fired as the period ends, at due + 1
    assert step.event == "notice_due"
    assert step.receipt is not None
    assert step.receipt.kind == "deemed_accepted"
    assert step.send is not None
    accept = step.send.body
    assert isinstance(accept, b.Accept)
    assert accept.deemed is True
    assert accept.accepted_at == T0  # as of the day the materials were received (§32)
    d.pump(due + 1)
    assert d.states() == ("accepted", "forwarding")
    assert d.c.theirs[CID][-1].data["deemed"] is True
    assert d.h.cases[CID].timers == {"promise": end_of_day(dt.date.fromisoformat(accept.promised_date))}
    d.act(d.h, "forwarded", due + HOUR)
    d.verify()


# ====================================================================== (i) forwarding failures


def test_forward_dead_letter_and_operator_retry(d: Driver) -> None:
    d.start()
    d.act(d.h, "accept", hours(1))
    d.act(d.h, "forward_exhausted", hours(2))
    assert d.states() == ("accepted", "dead_letter")
    d.act(d.h, "operator_retry", hours(3))
    assert d.h.cases[CID].forward_attempts == 0
    d.act(d.h, "forwarded", hours(4))
    assert d.states() == ("processing", "processing")
    assert d.h.kinds(CID)[1:5] == ["accepted", "dead_lettered", "retry_requested", "forwarded"]
    assert [r.kind for r in d.c.theirs[CID]] == d.h.kinds(CID)
    d.verify()


def test_forward_failures_counted(d: Driver) -> None:
    d.start()
    d.act(d.h, "accept", hours(1))
    chain = len(d.h.chains[CID])
    for n in (1, 2, 3):
        step = d.act(d.h, "forward_failed", hours(1 + n / 10))
        assert step.receipt is None
        assert step.send is None
        assert d.h.cases[CID].forward_attempts == n
    assert len(d.h.chains[CID]) == chain
    assert d.h.cases[CID].state == "forwarding"
    d.act(d.h, "forward_exhausted", hours(2))
    d.act(d.h, "operator_retry", hours(3))
    assert d.h.cases[CID].forward_attempts == 0
    d.act(d.h, "forward_failed", hours(3.5))
    step = d.act(d.h, "forwarded", hours(4))
    assert d.h.cases[CID].forward_attempts == 1
    assert step.send is not None
    assert step.send.body.attempts == 2
    assert d.states() == ("processing", "processing")
    assert "forward_failed" not in [e["event"] for e in d.h.events[CID]]  # no receipt, no record
    d.verify()


# ====================================================================== (j), (k) the promise clock


def test_special_procedure_moves_promised_date(d: Driver) -> None:
    run_to_processing(d, promised="2026-12-18")
    suspend_at = ms(2026, 11, 24, 10)  # Tuesday
    d.act(d.h, "suspend", suspend_at)
    assert d.states() == ("suspended", "suspended")
    assert d.h.cases[CID].timers == {}
    d.act(d.h, "step", suspend_at + ex.DAY)
    assert d.states() == ("suspended", "suspended")
    resume_at = ms(2026, 12, 1, 15)  # Tuesday next week: 5 working days stopped
    d.act(d.h, "resume", resume_at)
    assert d.states() == ("processing", "processing")
    assert d.h.cases[CID].promised_date == "2026-12-25"
    assert d.h.cases[CID].timers == {"promise": end_of_day(dt.date(2026, 12, 25))}
    run_to_end(d, start=(resume_at - T0) / HOUR + 1)
    d.verify()


def test_promise_overdue(d: Driver) -> None:
    run_to_processing(d, promised="2026-11-25")  # Wednesday
    due = end_of_day(dt.date(2026, 11, 25))
    assert d.h.fire_timers(due - 1) == []
    (step,) = d.h.fire_timers(due + 5 * HOUR)
    assert step.event == "promise_due"
    assert step.receipt is not None
    assert step.receipt.kind == "overdue"
    assert step.send is None
    assert d.h.cases[CID].state == "processing"
    assert d.h.cases[CID].timers == {}
    assert d.h.fire_timers(due + ex.DAY) == []  # fires once
    d.act(d.h, "step", due + 2 * HOUR)
    assert d.c.theirs[CID][-2].kind == "overdue"  # carried with the next message
    run_to_end(d, start=(due - T0) / HOUR + 3)
    d.verify()


def test_overdue_while_forwarding_and_dead_lettered(d: Driver) -> None:
    d.start()
    d.act(d.h, "accept", hours(1), ex.accept(hours(1), promised_date="2026-11-24"))
    (step,) = d.h.fire_timers(ms(2026, 11, 26))
    assert (step.old_state, step.new_state) == ("forwarding", "forwarding")
    d.act(d.h, "forward_exhausted", ms(2026, 11, 26, 10))
    d.act(d.h, "operator_retry", ms(2026, 11, 26, 11))
    d.act(d.h, "forwarded", ms(2026, 11, 26, 12))
    assert d.h.kinds(CID)[2:6] == ["overdue", "dead_lettered", "retry_requested", "forwarded"]
    assert d.states() == ("processing", "processing")
    d.verify()
