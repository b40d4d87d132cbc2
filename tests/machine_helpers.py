"""Shared helpers for the sans-IO case machine tests (``test_machine``, ``test_timers``).

Cases in a given state with the context their transitions need, crafted unsigned
envelopes and receipts fed to ``Case.receive`` (the machine never checks signatures),
and ``Wireless``: both sides of one case passing messages as plain objects.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import itertools
from collections import deque
from typing import Any

from loopback import T0, example_body

from protocol import (
    Case,
    EncryptionHeader,
    Envelope,
    Reason,
    Receipt,
    Step,
    WeekdayCalendar,
    event_for_message,
)
from protocol import bodies as b
from protocol import examples as ex
from protocol.fields import end_of_day
from protocol.machine import RECEIPTS_SENT_WITH
from protocol.states import COLLECTING_STATES, HANDLING_STATES, Role

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
        case "video_check":
            return "video_check", ex.video_check(now)
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
