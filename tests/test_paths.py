"""Every path through both roles, driven end to end over the in-memory loopback.

Each path ends with both sides' evidence bundles verifying and the expected states.
Every path test runs twice (``mode``): once delivering each message once, once
delivering each message twice, where the second copy must be a ``duplicate`` that
changes nothing and re-queues exactly the bytes first answered.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import T0, Delivered, Pair, Side, example_body

from protocol import Step, decode_envelope, encode_envelope
from protocol import bodies as b
from protocol import examples as ex
from protocol.errors import LocalProtocolError, Reason
from protocol.fields import end_of_day
from receipts import BundleError, verify_bundle

CID = "CASE-PATHS-0001"
HOUR = 3_600_000
CST = dt.timezone(dt.timedelta(hours=8))


def ms(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(dt.datetime(year, month, day, hour, tzinfo=CST).timestamp() * 1000)


def hours(n: float) -> int:
    return T0 + int(n * HOUR)


class Driver:
    """A ``Pair`` plus the local-event-then-pump rhythm of a node, optionally doubling deliveries."""

    def __init__(self, pair: Pair, *, twice: bool) -> None:
        self.pair = pair
        self.c = pair.collecting
        self.h = pair.handling
        self.twice = twice
        self.application: b.Application | None = None

    def act(self, side: Side, event: str, now: int, body: Any = None, *, pump: bool = True) -> Step:
        if body is None:
            case = side.cases.get(CID) or side.open_case(CID)
            body = example_body(case, event, now, self.application)
        step = side.local(CID, event, body, now)
        if pump:
            self.pump(now)
        return step

    def start(self, now: int = T0, *, decided: bool = False) -> None:
        self.application = ex.application(
            now, window_decision=ex.accept(now) if decided else None)
        self.act(self.c, "collect", now, pump=False)
        self.act(self.c, "submit_decided" if decided else "submit", now + 1)

    def pump(self, now: int) -> None:
        for _ in range(100):
            moved = False
            for sender, receiver in ((self.c, self.h), (self.h, self.c)):
                while sender.outbox:
                    wire = sender.outbox.pop(0)
                    mark = len(receiver.outbox)
                    first = receiver.deliver(wire, now)
                    assert first.outcome == "applied", first
                    if self.twice:
                        assert_duplicate(receiver, wire, now, answer=receiver.outbox[mark:])
                    moved = True
            if not moved:
                return
        raise AssertionError("messages still in flight")

    def states(self) -> tuple[str, str]:
        return self.pair.states(CID)

    def verify(self) -> None:
        self.c.verify(CID)
        self.h.verify(CID)
        assert_holds_prefix(self.c, self.h)
        assert_holds_prefix(self.h, self.c)


def assert_duplicate(receiver: Side, wire: bytes, now: int, *, answer: list[bytes]) -> None:
    """A second copy is a ``duplicate``: nothing changes, the same answer bytes are queued again."""
    before = copy.deepcopy(receiver.cases[decode_envelope(wire).case].snapshot())
    chain = list(receiver.chains[CID])
    mark = len(receiver.outbox)
    again = receiver.deliver(wire, now)
    assert again == Delivered("duplicate")
    assert receiver.outbox[mark:] == answer
    del receiver.outbox[mark:]
    assert receiver.cases[CID].snapshot() == before
    assert receiver.chains[CID] == chain


def assert_holds_prefix(holder: Side, owner: Side) -> None:
    """The receipts ``holder`` has of ``owner`` are exactly a prefix of ``owner``'s chain."""
    held = [(r.digest, r.sig) for r in holder.theirs.get(CID, [])]
    chain = [(r.digest, r.sig) for r in owner.chains.get(CID, [])]
    assert held == chain[:len(held)]


@pytest.fixture(params=["once", "twice"])
def d(request: pytest.FixtureRequest) -> Driver:
    return Driver(Pair(), twice=request.param == "twice")


@pytest.fixture(params=["once", "twice"])
def twice(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "twice")


def run_to_processing(d: Driver, promised: str = "2026-12-18") -> None:
    d.start()
    d.act(d.h, "accept", hours(1), ex.accept(hours(1), promised_date=promised))
    d.act(d.h, "forwarded", hours(2))
    assert d.states() == ("processing", "processing")


def run_to_end(d: Driver, start: float = 3) -> None:
    """From processing: a step, 办结, 送达, 评价 and both sides archive."""
    d.act(d.h, "step", hours(start))
    d.act(d.h, "conclude", hours(start + 1))
    assert d.states() == ("outcome_received", "outcome_acknowledged")
    d.act(d.c, "deliver", hours(start + 2))
    d.act(d.c, "evaluate", hours(start + 3))
    d.act(d.c, "archive", hours(start + 4))
    d.act(d.h, "archive", hours(start + 5))
    assert d.states() == ("archived", "archived")


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


# ====================================================================== (l) duplicates, order


def test_duplicate_late_requeues_original_answer() -> None:
    d = Driver(Pair(), twice=False)
    d.application = ex.application(T0)
    d.act(d.c, "collect", T0, pump=False)
    d.act(d.c, "submit", T0 + 1, pump=False)
    (application,) = d.c.take_outbox()
    assert d.h.deliver(application, T0 + 2).outcome == "applied"
    (received,) = d.h.take_outbox()
    assert d.c.deliver(received, T0 + 3).outcome == "applied"
    d.act(d.h, "accept", hours(1))
    d.act(d.h, "forwarded", hours(2))
    run_to_end(d)
    # much later, after both sides archived: still a duplicate with the original answer
    before = copy.deepcopy(d.h.cases[CID].snapshot())
    assert d.h.deliver(application, hours(100)) == Delivered("duplicate")
    assert d.h.take_outbox() == [received]
    assert d.h.cases[CID].snapshot() == before
    assert d.c.deliver(received, hours(100)) == Delivered("duplicate")
    assert d.c.outbox == []  # nothing was answered to it the first time
    d.verify()


def test_out_of_order_is_deferred_then_applied() -> None:
    d = Driver(Pair(), twice=False)
    d.application = ex.application(T0)
    d.act(d.c, "collect", T0, pump=False)
    d.act(d.c, "submit", T0 + 1, pump=False)
    (application,) = d.c.take_outbox()
    d.act(d.c, "withdraw", T0 + 2, pump=False)
    (withdrawal,) = d.c.take_outbox()
    result = d.h.deliver(withdrawal, T0 + 3)  # before the application it follows
    assert result == Delivered("deferred", reason=Reason.OUT_OF_ORDER)
    assert d.h.cases[CID].state == "new"
    assert d.h.outbox == []
    assert d.h.deliver(application, T0 + 4).outcome == "applied"
    (received,) = d.h.take_outbox()
    assert d.h.deliver(withdrawal, T0 + 5).outcome == "applied"
    (withdrawn,) = d.h.take_outbox()
    assert d.c.deliver(withdrawn, T0 + 6).reason is Reason.OUT_OF_ORDER
    assert d.c.deliver(received, T0 + 7).outcome == "applied"
    assert d.c.deliver(withdrawn, T0 + 8).outcome == "applied"
    assert d.c.deliver(withdrawn, T0 + 9).outcome == "duplicate"
    assert d.states() == ("withdrawn", "withdrawn")
    d.verify()


def test_out_of_order_decision_before_receipt_ack() -> None:
    d = Driver(Pair(), twice=False)
    d.application = ex.application(T0)
    d.act(d.c, "collect", T0, pump=False)
    d.act(d.c, "submit", T0 + 1, pump=False)
    (application,) = d.c.take_outbox()
    d.h.deliver(application, T0 + 2)
    d.act(d.h, "accept", hours(1), pump=False)
    d.act(d.h, "forwarded", hours(2), pump=False)
    received, decision, forwarded = d.h.take_outbox()
    for wire in (forwarded, decision):
        assert d.c.deliver(wire, hours(3)) == Delivered("deferred", reason=Reason.OUT_OF_ORDER)
    assert d.c.cases[CID].state == "sent"
    for wire, state in ((received, "under_review"), (decision, "accepted"), (forwarded, "processing")):
        assert d.c.deliver(wire, hours(4)).outcome == "applied"
        assert d.c.cases[CID].state == state
    d.verify()


# ====================================================================== (m) tampering, keys


def _under_review() -> tuple[Pair, bytes]:
    """A pair where the handling side's 'received' is in flight, undelivered."""
    pair = Pair()
    app = ex.application(T0)
    pair.collecting.local(CID, "collect", app, T0)
    pair.collecting.local(CID, "submit", app, T0 + 1)
    (application,) = pair.collecting.take_outbox()
    pair.handling.deliver(application, T0 + 2)
    (received,) = pair.handling.take_outbox()
    return pair, received


def _flip(wire: bytes, position: int, bit: int) -> bytes:
    tampered = bytearray(wire)
    tampered[position] ^= 1 << bit
    return bytes(tampered)


_TAMPER: dict[str, Any] = {}


def _tamper_fixture() -> tuple[Pair, bytes]:
    if not _TAMPER:
        _TAMPER["pair"], _TAMPER["wire"] = _under_review()
    return _TAMPER["pair"], _TAMPER["wire"]


@settings(max_examples=40, deadline=None)
@given(offset=st.integers(0, 10_000), bit=st.integers(0, 7), where=st.sampled_from(["payload", "sig"]))
def test_bit_flip_is_rejected(offset: int, bit: int, where: str) -> None:
    pair, wire = _tamper_fixture()
    envelope = decode_envelope(wire)
    assert envelope.sig is not None
    part = envelope.payload if where == "payload" else envelope.sig.sig
    start = wire.find(part)
    assert start > 0
    result = pair.collecting.deliver(_flip(wire, start + offset % len(part), bit), T0 + 3)
    assert result.outcome == "rejected"
    assert result.reason in (Reason.BAD_SIGNATURE, Reason.DECRYPTION_FAILED)
    assert pair.collecting.cases[CID].state == "sent"


def test_tampered_copy_does_not_poison_the_original() -> None:
    pair, wire = _under_review()
    envelope = decode_envelope(wire)
    start = wire.find(envelope.payload)
    assert pair.collecting.deliver(_flip(wire, start + 40, 0), T0 + 3).reason is Reason.BAD_SIGNATURE
    assert pair.collecting.deliver(wire, T0 + 4).outcome == "applied"
    assert pair.states(CID) == ("under_review", "received")
    pair.collecting.verify(CID)
    pair.handling.verify(CID)


def test_resigned_tampered_payload_fails_decryption() -> None:
    """Even a validly signed envelope is refused if its ciphertext was not sealed to us."""
    pair, wire = _under_review()
    envelope = decode_envelope(wire)
    for position in (0, 40, len(envelope.payload) - 1):  # commitment, ciphertext, tag
        payload = _flip(envelope.payload, position, 3)
        draft = envelope.model_copy(update={"payload": payload, "sig": None})
        (sig,) = pair.handling.postmaster.signer.sign([draft.digest])
        forged = encode_envelope(draft.model_copy(update={"sig": sig}))
        result = pair.collecting.deliver(forged, T0 + 3)
        assert result == Delivered("rejected", reason=Reason.DECRYPTION_FAILED)
    assert pair.collecting.deliver(wire, T0 + 4).outcome == "applied"


def test_header_change_breaks_signature() -> None:
    pair, wire = _under_review()
    envelope = decode_envelope(wire)
    for update in ({"seq": envelope.seq + 1}, {"sent_at": envelope.sent_at + 1},
                   {"id": "370100-m999999"}):
        forged = encode_envelope(envelope.model_copy(update=update))
        assert pair.collecting.deliver(forged, T0 + 3).reason is Reason.BAD_SIGNATURE


def test_wrong_recipient() -> None:
    pair, received = _under_review()
    result = pair.handling.deliver(received, T0 + 3)  # the handling side's own message
    assert result == Delivered("rejected", reason=Reason.WRONG_RECIPIENT)
    pair.collecting.local(CID, "withdraw", ex.withdrawal(T0 + 4), T0 + 4)
    (withdrawal,) = pair.collecting.take_outbox()
    assert pair.collecting.deliver(withdrawal, T0 + 5).reason is Reason.WRONG_RECIPIENT


def test_revoked_key() -> None:
    d = Driver(Pair(), twice=False)
    d.start()
    d.act(d.h, "accept", hours(1))
    assert d.states() == ("accepted", "forwarding")
    d.act(d.h, "forward_exhausted", hours(1.5), pump=False)
    d.act(d.h, "operator_retry", hours(1.6), pump=False)
    revoked_at = hours(2)
    d.pair.registry.revoke(d.h.keys.sign_key_id, revoked_at)
    d.act(d.h, "forwarded", hours(3), pump=False)  # signed with the revoked key
    (forwarded,) = d.h.take_outbox()
    result = d.c.deliver(forwarded, hours(3))
    assert result == Delivered("rejected", reason=Reason.KEY_NOT_VALID)
    assert d.states() == ("accepted", "processing")
    # what the collecting side accepted before the revocation still verifies
    assert [r.kind for r in d.c.theirs[CID]] == ["received", "accepted"]
    d.c.verify(CID)
    # the handling side's bundle now holds a receipt signed after the revocation
    with pytest.raises(BundleError):
        d.h.verify(CID)


def test_revoked_key_refuses_in_flight_message() -> None:
    """A message signed before the revocation but arriving after it is refused: a
    stolen key can backdate. Arriving before the revocation it is fine."""
    d = Driver(Pair(), twice=False)
    d.start()
    d.act(d.h, "accept", hours(1), pump=False)
    (decision,) = d.h.take_outbox()
    d.pair.registry.revoke(d.h.keys.sign_key_id, hours(2))
    assert d.c.deliver(decision, hours(1.5)).outcome == "applied"  # before: fine
    d2 = Driver(Pair(), twice=False)
    d2.start()
    d2.act(d2.h, "accept", hours(1), pump=False)
    (late,) = d2.h.take_outbox()
    d2.pair.registry.revoke(d2.h.keys.sign_key_id, hours(2))
    assert d2.c.deliver(late, hours(3)) == Delivered("rejected", reason=Reason.KEY_NOT_VALID)
    d2.c.verify(CID)
    d2.h.verify(CID)  # every receipt of it was made before the revocation


# ====================================================================== known races


def test_late_evaluation_after_handling_archived() -> None:
    d = Driver(Pair(), twice=False)
    run_to_processing(d)
    d.act(d.h, "conclude", hours(3))
    d.act(d.c, "deliver", hours(4))
    d.act(d.h, "archive", hours(5))  # allowed in 'delivered'
    d.act(d.c, "evaluate", hours(6), pump=False)  # allowed in 'delivered'
    (evaluation,) = d.c.take_outbox()
    assert d.h.deliver(evaluation, hours(7)).outcome == "applied"
