"""The transition table and the sans-IO case machine in isolation (no cryptography).

Remote events are fed to ``Case.receive`` as crafted, unsigned envelopes and
receipts: the machine never checks signatures (``receipts`` does that before it).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import itertools
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import T0, example_body

from protocol import (
    Case,
    EncryptionHeader,
    Envelope,
    LocalProtocolError,
    Reason,
    Receipt,
    RemoteProtocolError,
    Step,
    WeekdayCalendar,
    add_working_days,
    event_digest,
    event_for_message,
)
from protocol import bodies as b
from protocol import examples as ex
from protocol.calendar import working_days_between
from protocol.fields import date_of, end_of_day
from protocol.machine import RECEIPTS_SENT_WITH, event_record
from protocol.states import (
    COLLECTING_STATES,
    HANDLING_STATES,
    LOCAL_EVENTS,
    REMOTE_EVENTS,
    STATE_NAMES_ZH,
    TIMER_EVENTS,
    TRANSITIONS,
    Role,
)

CID = "CASE-MACHINE-0001"
C, H = ex.COLLECTING, ex.HANDLING
KEYS = {C: "ed25519:" + "1" * 16, H: "ed25519:" + "2" * 16}
CST = dt.timezone(dt.timedelta(hours=8))
HOUR = 3_600_000
NOW = T0 + 3 * ex.DAY  # Thursday 2026-11-26 10:13 CST (T0 is Monday 2026-11-23 10:13:20 CST)
CALENDAR = WeekdayCalendar()
STATES: dict[Role, tuple[str, ...]] = {"collecting": COLLECTING_STATES, "handling": HANDLING_STATES}
ROLES: tuple[Role, Role] = ("collecting", "handling")
PROMISED = "2026-12-18"
SUSPENDED_ON = "2026-11-20"  # a Friday
APP = ex.application(T0)
DECIDED_APP = ex.application(T0, window_decision=ex.accept(T0))
_HEADER = EncryptionHeader(to="x25519:" + "0" * 16, epk=bytes(32), nonce=bytes(12))
_ids = itertools.count(1)


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=CST).timestamp() * 1000)


def regions(role: Role) -> tuple[str, str]:
    return (C, H) if role == "collecting" else (H, C)


def new_case(role: Role, **context: Any) -> Case:
    ours, theirs = regions(role)
    return Case(case=CID, role=role, ours=ours, theirs=theirs, our_key=KEYS[ours],
                calendar=CALENDAR, **context)


def case_in(role: Role, state: str) -> Case:
    """A case of ``role`` in ``state`` with the context every transition out of it needs."""
    # collecting-decides: the window's own acts and submit_decided are authorised
    context: dict[str, Any] = {"state": state, "promise_days": 10,
                               "acceptance": "collecting_decides"}
    if state != "new":
        context |= {"our_index": 2, "our_last": digest("ours 2"), "sent_index": 1,
                    "their_index": 1, "their_last": digest("theirs 1")}
    if role == "handling":
        if state != "new":
            context["received_at"] = T0  # the window's receipt time, from the application
        if state == "received":
            context["timers"] = {"notice": end_of_day(dt.date(2026, 11, 27))}
        if state in ("forwarding", "dead_letter", "processing"):
            context["timers"] = {"promise": end_of_day(dt.date.fromisoformat(PROMISED))}
        if state in ("forwarding", "dead_letter", "processing", "suspended", "concluded"):
            context["promised_date"] = PROMISED
        if state == "suspended":
            context["suspended_on"] = SUSPENDED_ON
        if state == "forwarding":
            context["forward_attempts"] = 2
    return new_case(role, **context)


def envelope(kind: str, sender: str, recipient: str, case: str = CID) -> Envelope:
    return Envelope(id=f"MSG-{next(_ids):08d}", kind=kind, sender=sender,  # type: ignore[arg-type]
                    recipient=recipient, case=case, seq=1, sent_at=T0, enc=_HEADER, payload=b"")


def message_for(event: str, now: int = NOW) -> tuple[str, Any]:
    """A message kind and body that the receiving side reads as ``event``."""
    match event:
        case "received" | "outcome_ack":
            return event, b.Ack(of=digest("acknowledged"), at=now)
        case "accept":
            return "decision", ex.accept(now)
        case "request_supplement":
            return "decision", ex.supplement_request(now)
        case "refuse":
            return "decision", ex.refuse(now)
        case "withdrawn":
            return "withdrawn", b.Withdrawn(at=now)
        case "withdrawal_refused":
            reason = Reason.WITHDRAWAL_TOO_LATE
            return "rejection", b.Rejection(of=digest("withdrawal"), code=reason.code,
                                            zh=reason.zh, en=reason.en)
        case "forwarded":
            return "forwarded", ex.forwarded(now)
        case "step" | "suspend" | "resume":
            return "progress", ex.progress(now, event)
        case "conclude":
            return "outcome", ex.outcome(now)
        case "submit":
            return "application", APP
        case "submit_decided":
            return "application", DECIDED_APP
        case "supplement":
            return "supplement", ex.supplement(now)
        case "withdraw":
            return "withdrawal", ex.withdrawal(now)
        case "deliver":
            return "delivery", ex.delivery(now)
        case "evaluate":
            return "evaluation", ex.evaluation(now)
    raise AssertionError(f"no message for {event}")


def signed_with(role: str, kind: str, body: Any = None) -> str:
    """A receipt kind the peer signs with the message ``role`` reads as this event."""
    event = event_for_message(kind, body) if body is not None else kind
    return sorted(RECEIPTS_SENT_WITH.get((role, event), {"peer_step"}))[0]


def next_receipt(case: Case, kind: str = "peer_step", now: int = NOW) -> Receipt:
    """The peer's next receipt, as ``case`` expects it (right index, chained)."""
    return Receipt(case=case.case, index=case.their_index + 1, kind=kind, actor=case.theirs,
                   key=KEYS[case.theirs], prev=case.their_last, cause=digest("peer cause"), at=now)


def receive(case: Case, event: str, now: int = NOW) -> tuple[Step | None, Envelope, Receipt]:
    kind, body = message_for(event, now)
    env = envelope(kind, case.theirs, case.ours)
    receipt = next_receipt(case, signed_with(case.role, kind, body), now=now)
    return case.receive(env, body, [receipt], now), env, receipt


def local_body(case: Case, event: str, now: int = NOW) -> Any:
    application = DECIDED_APP if event == "submit_decided" else APP
    return example_body(case, event, now, application)


def snap(case: Case) -> dict[str, Any]:
    return copy.deepcopy(case.snapshot())


# ====================================================================== the table itself

ALL_PAIRS = [
    (role, state, event)
    for role in ROLES
    for state in STATES[role]
    for event in sorted(LOCAL_EVENTS[role] | REMOTE_EVENTS[role])
]


def test_every_row_is_an_event_of_its_role() -> None:
    for (role, state, event), transition in TRANSITIONS.items():
        assert event in LOCAL_EVENTS[role] | REMOTE_EVENTS[role], (role, state, event)
        assert state in STATES[role]
        assert transition.new_state in STATES[role]
        for op in transition.timers:
            assert op[0] in "+-", (role, state, event, op)
            assert op[1:] in TIMER_EVENTS, (role, state, event, op)


def test_local_and_remote_events_are_disjoint_and_timers_are_handling_local() -> None:
    for role in ROLES:
        assert not LOCAL_EVENTS[role] & REMOTE_EVENTS[role]
    assert set(TIMER_EVENTS.values()) <= LOCAL_EVENTS["handling"]


#: Where the peer reads a message as another event than the sender's (all others: same name).
PEER_READS = {
    ("handling", "notice_due"): {"accept"},  # a deemed acceptance is an acceptance
    ("handling", "submit"): {"received"},  # 签收
    ("handling", "submit_decided"): {"received"},
    ("handling", "withdraw"): {"withdrawn", "withdrawal_refused"},
    ("collecting", "conclude"): {"outcome_ack"},
}


@pytest.mark.parametrize(("role", "state", "event"),
                         [k for k, t in TRANSITIONS.items() if t.send is not None])
def test_every_message_sent_is_taken_by_the_peer(role: Role, state: str, event: str) -> None:
    """The peer reads each message as the same act (or its answer), and has a row for it.

    A sending row must sign a receipt too: a message without a new receipt would
    look like a duplicate.
    """
    transition = TRANSITIONS[(role, state, event)]
    assert transition.receipt is not None
    case = case_in(role, state)
    if event in LOCAL_EVENTS[role]:
        step = case.local(event, local_body(case, event), NOW)
    else:
        step, _, _ = receive(case, event)
    assert step is not None
    assert step.send is not None
    peer: Role = "handling" if role == "collecting" else "collecting"
    read = event_for_message(step.send.kind, step.send.body)
    assert read in PEER_READS.get((role, event), {event})
    assert read in REMOTE_EVENTS[peer]
    assert any(r == peer and e == read for (r, _, e) in TRANSITIONS)


def test_every_state_is_reachable_and_can_reach_archived() -> None:
    for role in ROLES:
        edges = [(s, t.new_state) for (r, s, _), t in TRANSITIONS.items() if r == role]
        forward = _closure({"new"}, edges)
        backward = _closure({"archived"}, [(t, s) for s, t in edges])
        assert forward == set(STATES[role]), role
        assert backward == set(STATES[role]), role
        assert set(STATES[role]) <= set(STATE_NAMES_ZH)


def _closure(start: set[str], edges: list[tuple[str, str]]) -> set[str]:
    seen, todo = set(start), deque(start)
    while todo:
        state = todo.popleft()
        for a, z in edges:
            if a == state and z not in seen:
                seen.add(z)
                todo.append(z)
    return seen


# ====================================================================== every (role, state, event)


#: Pairs that currently fail the contract because of a bug in protocol/.
KNOWN_BUGS: dict[tuple[str, str, str], pytest.MarkDecorator] = {}


@pytest.mark.parametrize(("role", "state", "event"), [
    pytest.param(*pair, id=f"{pair[0][0]}-{pair[1]}-{pair[2]}",
                 marks=[KNOWN_BUGS[pair]] if pair in KNOWN_BUGS else [])
    for pair in ALL_PAIRS
])
def test_every_role_state_event(role: Role, state: str, event: str) -> None:
    case = case_in(role, state)
    before = snap(case)
    transition = TRANSITIONS.get((role, state, event))
    local = event in LOCAL_EVENTS[role]
    body = local_body(case, event) if local else None
    if transition is None:
        error = LocalProtocolError if local else RemoteProtocolError
        apply = (lambda: case.local(event, body, NOW)) if local else (lambda: receive(case, event))
        with pytest.raises(error) as caught:
            apply()
        assert type(caught.value) is error
        assert caught.value.reason is Reason.INVALID_TRANSITION
        assert f"'{state}'" in str(caught.value)
        assert f"'{event}'" in str(caught.value)
        assert snap(case) == before
        return

    if local:
        step = case.local(event, body, NOW)
        their_last, cause = before["their_last"], None
    else:
        step, env, receipt = receive(case, event)
        assert step is not None
        their_last, cause = receipt.digest, env.digest
        assert (case.their_index, case.their_last) == (receipt.index, receipt.digest)
    assert (step.event, step.old_state, step.new_state) == (event, state, transition.new_state)
    assert case.state == transition.new_state

    # the receipt: next in our chain, cross-linked to the newest one of theirs
    if transition.receipt is None:
        assert step.receipt is None
        assert (case.our_index, case.our_last) == (before["our_index"], before["our_last"])
    else:
        receipt_ = step.receipt
        assert receipt_ is not None
        assert receipt_.sig is None
        assert receipt_.kind == transition.receipt
        assert receipt_.index == before["our_index"] + 1 == case.our_index
        assert receipt_.prev == before["our_last"]
        assert receipt_.their == their_last
        assert (receipt_.case, receipt_.actor, receipt_.key, receipt_.at) == (
            CID, case.ours, case.our_key, NOW)
        assert case.our_last == receipt_.digest
        if local:
            sent_body = step.send.body if event == "notice_due" and step.send else body
            assert step.event_record == event_record(event, NOW, receipt_.index, sent_body)
            assert receipt_.cause == event_digest(step.event_record)
        else:
            assert receipt_.cause == cause

    # the message: our receipts not yet sent, up to this one
    if transition.send is None:
        assert step.send is None
        assert case.sent_index == before["sent_index"]
    else:
        assert step.send is not None
        assert step.send.kind == transition.send
        assert step.send.first_receipt == before["sent_index"] + 1
        assert step.send.last_receipt == case.our_index == case.sent_index

    # the timers: exactly the row's, and a fired timer is gone
    timers = dict(before["timers"])
    for op in transition.timers:
        name = op[1:]
        if op[0] == "+":
            assert step.set_timers[name] == case.timers[name]
            timers[name] = case.timers[name]
        else:
            assert (name in step.cancel_timers) == (name in before["timers"])
            timers.pop(name, None)
    for name, fired in TIMER_EVENTS.items():
        if event == fired:
            timers.pop(name, None)
    assert case.timers == timers
    assert set(step.set_timers) == {op[1:] for op in transition.timers if op[0] == "+"}

    # a local event is recorded for the evidence bundle exactly when it signs a receipt
    assert (step.event_record is not None) == (local and transition.receipt is not None)


# ====================================================================== a machine pair, no crypto


class Wireless:
    """Both sides of one case, messages passed as (unsigned) objects, in order."""

    def __init__(self, acceptance: str = "handling_decides") -> None:
        self.c = new_case("collecting", acceptance=acceptance, promise_days=10)  # type: ignore[arg-type]
        self.h = new_case("handling", acceptance=acceptance, promise_days=10)  # type: ignore[arg-type]
        self.chains: dict[str, list[Receipt]] = {C: [], H: []}
        self.queue: deque[tuple[Case, Any]] = deque()

    def peer(self, case: Case) -> Case:
        return self.h if case is self.c else self.c

    def local(self, case: Case, event: str, body: Any, now: int) -> Step:
        return self._record(case, case.local(event, body, now))

    def local_example(self, case: Case, event: str, now: int, application: Any = APP) -> Step:
        return self.local(case, event, example_body(case, event, now, application), now)

    def _record(self, case: Case, step: Step) -> Step:
        if step.receipt is not None:
            self.chains[case.ours].append(step.receipt)
        if step.send is not None:
            self.queue.append((case, step.send))
        return step

    def deliver(self, now: int) -> Step | None:
        sender, send = self.queue.popleft()
        receiver = self.peer(sender)
        env = envelope(send.kind, sender.ours, receiver.ours)
        receipts = self.chains[sender.ours][send.first_receipt:send.last_receipt + 1]
        step = receiver.receive(env, send.body, receipts, now)
        return None if step is None else self._record(receiver, step)

    def pump(self, now: int) -> None:
        while self.queue:
            self.deliver(now)


def walk_to_processing(pair: Wireless, now: int = T0) -> None:
    pair.local_example(pair.c, "collect", now)
    pair.local_example(pair.c, "submit", now + 1)
    pair.pump(now + 2)
    pair.local_example(pair.h, "accept", now + HOUR)
    pair.pump(now + HOUR)
    pair.local_example(pair.h, "forwarded", now + 2 * HOUR)
    pair.pump(now + 2 * HOUR)


def test_chains_cross_link_along_a_whole_case() -> None:
    pair = Wireless()
    walk_to_processing(pair)
    pair.local_example(pair.h, "conclude", T0 + 3 * HOUR)
    pair.pump(T0 + 3 * HOUR)
    for event, t in (("deliver", 4), ("evaluate", 5), ("archive", 6)):
        pair.local_example(pair.c, event, T0 + t * HOUR)
        pair.pump(T0 + t * HOUR)
    pair.local_example(pair.h, "archive", T0 + 7 * HOUR)
    assert (pair.c.state, pair.h.state) == ("archived", "archived")
    for chain in pair.chains.values():
        for i, receipt in enumerate(chain):
            assert receipt.index == i
            assert receipt.prev == (chain[i - 1].digest if i else None)
    # every cross-link names a receipt of the other side, never going backwards
    for ours, theirs in ((C, H), (H, C)):
        index = {r.digest: r.index for r in pair.chains[theirs]}
        links = [index[r.their] for r in pair.chains[ours] if r.their is not None]
        assert links == sorted(links)


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


# ====================================================================== persistence


def test_snapshot_restore_round_trips_along_a_case() -> None:
    pair = Wireless()
    walk_to_processing(pair)
    pair.local_example(pair.h, "suspend", T0 + 3 * HOUR)
    pair.pump(T0 + 3 * HOUR)
    for case in (pair.c, pair.h):
        restored = Case.restore(snap(case), CALENDAR)
        assert restored.snapshot() == case.snapshot()
        assert repr(restored) == repr(case)
    # a restored case behaves exactly like the original
    restored_h = Case.restore(snap(pair.h), CALENDAR)
    now = T0 + 4 * HOUR
    body = ex.progress(now, "resume")
    assert restored_h.local("resume", body, now) == pair.h.local("resume", body, now)
    assert restored_h.snapshot() == pair.h.snapshot()


def test_snapshot_is_plain_msgpack_data() -> None:
    from protocol import decode, encode

    case = case_in("handling", "suspended")
    assert decode(encode(case.snapshot())) == case.snapshot()


def test_snapshot_does_not_alias_the_case() -> None:
    case = case_in("handling", "received")
    before = case.snapshot()
    expected = copy.deepcopy(before)
    case.local("accept", ex.accept(NOW), NOW)
    assert before == expected


def test_repr_shows_state() -> None:
    for role in ROLES:
        for state in STATES[role]:
            case = case_in(role, state)
            assert f" {state} " in repr(case)
            assert role in repr(case)


# ====================================================================== body checks and rules


@pytest.mark.parametrize(("role", "state", "event", "body"), [
    ("handling", "received", "accept", ex.refuse(NOW)),
    ("handling", "received", "refuse", ex.accept(NOW)),
    ("handling", "received", "request_supplement", None),
    ("handling", "received", "notice_due", ex.accept(NOW)),
    ("handling", "processing", "step", ex.progress(NOW, "suspend")),
    ("handling", "processing", "suspend", ex.progress(NOW, "step")),
    ("handling", "processing", "conclude", ex.delivery(NOW)),
    ("handling", "forwarding", "forwarded", {"department": "x"}),
    ("handling", "refused", "archive", ex.refuse(NOW)),
    ("collecting", "new", "collect", ex.supplement(NOW)),
    ("collecting", "collected", "submit", DECIDED_APP),
    ("collecting", "collected", "submit_decided", APP),
    ("collecting", "collected", "withdraw", None),
    ("collecting", "outcome_received", "deliver", ex.evaluation(NOW)),
])
def test_wrong_body_is_invalid_field(role: Role, state: str, event: str, body: Any) -> None:
    case = case_in(role, state)
    before = snap(case)
    with pytest.raises(LocalProtocolError) as caught:
        case.local(event, body, NOW)
    assert caught.value.reason is Reason.INVALID_FIELD
    assert snap(case) == before


def test_foreign_event_is_refused_locally() -> None:
    case = case_in("collecting", "under_review")
    with pytest.raises(LocalProtocolError) as caught:
        case.local("accept", ex.accept(NOW), NOW)  # the handling side's act
    assert caught.value.reason is Reason.INVALID_TRANSITION


def test_submit_decided_not_authorised_under_handling_decides() -> None:
    case = new_case("handling", acceptance="handling_decides")
    before = snap(case)
    env = envelope("application", C, H)
    with pytest.raises(RemoteProtocolError) as caught:
        case.receive(env, DECIDED_APP, [next_receipt(case, "accepted_at_window")], NOW)
    assert caught.value.reason is Reason.NOT_AUTHORISED
    assert snap(case) == before


@pytest.mark.parametrize(("state", "event"), [
    ("collected", "window_supplement"),
    ("collected", "window_refuse"),
    ("awaiting_materials", "window_supplemented"),
])
def test_window_decides_only_in_collecting_decides_model(state: str, event: str) -> None:
    case = new_case("collecting", acceptance="handling_decides", state=state, our_index=0,
                    our_last=digest("collected"))
    before = snap(case)
    with pytest.raises(LocalProtocolError) as caught:
        case.local(event, local_body(case, event), NOW)
    assert caught.value.reason is Reason.NOT_AUTHORISED
    assert snap(case) == before


def test_supplement_requested_only_once() -> None:
    """一次性告知: after the supplement the reviewer accepts or refuses, never asks again."""
    pair = Wireless()
    pair.local_example(pair.c, "collect", T0)
    pair.local_example(pair.c, "submit", T0 + 1)
    pair.pump(T0 + 2)
    pair.local_example(pair.h, "request_supplement", T0 + HOUR)
    pair.pump(T0 + HOUR)
    pair.local_example(pair.c, "supplement", T0 + 2 * HOUR)
    pair.pump(T0 + 2 * HOUR)
    assert (pair.c.state, pair.h.state) == ("supplied", "supplied")
    before = snap(pair.h)
    with pytest.raises(LocalProtocolError) as caught:
        pair.local_example(pair.h, "request_supplement", T0 + 3 * HOUR)
    assert caught.value.reason is Reason.INVALID_TRANSITION
    assert snap(pair.h) == before
    # and the collecting side refuses a second request from a peer
    with pytest.raises(RemoteProtocolError) as remote:
        receive(pair.c, "request_supplement")
    assert remote.value.reason is Reason.INVALID_TRANSITION
    pair.local_example(pair.h, "accept", T0 + 4 * HOUR)
    pair.pump(T0 + 4 * HOUR)
    assert (pair.c.state, pair.h.state) == ("accepted", "forwarding")


def test_receive_duplicate_and_out_of_order() -> None:
    case = case_in("collecting", "under_review")
    kind, body = message_for("accept")
    first = next_receipt(case, "accepted")
    assert case.receive(envelope(kind, H, C), body, [first], NOW) is not None
    before = snap(case)
    assert case.receive(envelope(kind, H, C), body, [first], NOW) is None  # duplicate
    assert snap(case) == before
    early = first.model_copy(update={"index": first.index + 2})
    with pytest.raises(RemoteProtocolError) as caught:
        case.receive(envelope("forwarded", H, C), ex.forwarded(NOW), [early], NOW)
    assert caught.value.reason is Reason.OUT_OF_ORDER
    assert caught.value.reason.transient
    assert snap(case) == before
    forked = next_receipt(case, "forwarded").model_copy(update={"prev": digest("another chain")})
    with pytest.raises(RemoteProtocolError) as broken:
        case.receive(envelope("forwarded", H, C), ex.forwarded(NOW), [forked], NOW)
    assert broken.value.reason is Reason.CHAIN_BROKEN
    assert snap(case) == before


def test_receive_refuses_envelope_of_other_case_or_region() -> None:
    case = case_in("collecting", "under_review")
    kind, body = message_for("accept")
    before = snap(case)
    for env in (envelope(kind, H, C, case="CASE-OTHER-0001"), envelope(kind, "110100", C),
                envelope(kind, H, "110100")):
        with pytest.raises(RemoteProtocolError) as caught:
            case.receive(env, body, [next_receipt(case)], NOW)
        assert caught.value.reason is Reason.INVALID_FIELD
    assert snap(case) == before


# ====================================================================== random walks


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_walk_chains_and_snapshots(data: st.DataObject) -> None:
    """Random legal schedules (in-order delivery): chains link, snapshots restore exactly."""
    model = data.draw(st.sampled_from(["handling_decides", "collecting_decides"]))
    pair = Wireless(acceptance=model)
    app = DECIDED_APP if model == "collecting_decides" else APP
    pair.local_example(pair.c, "collect", T0, app)
    now = T0
    for _ in range(data.draw(st.integers(0, 40))):
        now += HOUR + 7
        choices = [("deliver", None)] if pair.queue else []
        for case in (pair.c, pair.h):
            choices += [
                ("local", (case, event)) for event in sorted(LOCAL_EVENTS[case.role])
                if (case.role, case.state, event) in TRANSITIONS
                and event not in ("submit", "submit_decided", "promise_due", "notice_due")
            ]
            if case is pair.h and case.state == "delivered" and (
                    pair.c.state != "archived" or pair.queue):
                # BUG (tests/test_paths.py::test_late_evaluation_after_handling_archived):
                # a handling archive before the evaluation arrives makes it rejected.
                choices.remove(("local", (case, "archive")))
            if model != "collecting_decides":  # only that model lets the window decide
                choices = [c for c in choices
                           if not (c[0] == "local" and c[1][1].startswith("window_"))]
            if case.state in ("collected", "supplied_at_window"):
                choices.append(("local", (case, "submit_decided" if app.window_decision else "submit")))
            choices += [("local", (case, TIMER_EVENTS[name])) for name in case.timers
                        if (case.role, case.state, TIMER_EVENTS[name]) in TRANSITIONS]
        if not choices:
            break
        action, arg = data.draw(st.sampled_from(choices))
        if action == "deliver":
            pair.deliver(now)
        else:
            case, event = arg
            pair.local_example(case, event, now, app)
        for case in (pair.c, pair.h):
            assert Case.restore(snap(case), CALENDAR).snapshot() == case.snapshot()
    pair.pump(now + 1)
    for ours, theirs in ((C, H), (H, C)):
        chain = pair.chains[ours]
        for i, receipt in enumerate(chain):
            assert (receipt.index, receipt.prev) == (i, chain[i - 1].digest if i else None)
        index = {r.digest: r.index for r in pair.chains[theirs]}
        links = [index[r.their] for r in chain if r.their is not None]
        assert links == sorted(links)


def test_a_second_different_receipt_at_the_same_index_is_a_fork() -> None:
    case = case_in("collecting", "under_review")
    kind, body = message_for("accept")
    first = next_receipt(case, "accepted")
    assert case.receive(envelope(kind, H, C), body, [first], NOW) is not None
    before = snap(case)
    other = first.model_copy(update={"cause": digest("another decision")})
    with pytest.raises(RemoteProtocolError) as caught:
        case.receive(envelope(kind, H, C), body, [other], NOW)
    assert caught.value.reason is Reason.CHAIN_BROKEN
    assert "forks" in caught.value.detail
    assert snap(case) == before


def test_the_last_receipt_must_be_the_one_of_the_sending_transition() -> None:
    case = case_in("collecting", "under_review")
    kind, body = message_for("accept")  # a decision that accepts ...
    before = snap(case)
    with pytest.raises(RemoteProtocolError) as caught:  # ... signed as a refusal
        case.receive(envelope(kind, H, C), body, [next_receipt(case, "refused")], NOW)
    assert caught.value.reason is Reason.CHAIN_BROKEN
    assert snap(case) == before
    assert case.state == "under_review"


def test_times_outside_the_millisecond_range_are_refused() -> None:
    case = case_in("handling", "received")
    for bad in (0, 10**15, 1.5e12):
        with pytest.raises(LocalProtocolError) as caught:
            case.local("accept", ex.accept(NOW), bad)  # type: ignore[arg-type]
        assert caught.value.reason is Reason.INVALID_FIELD
