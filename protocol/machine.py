"""``Case``: one side's sans-IO state machine for one application.

Theory of operation
-------------------
The node's driver loads a ``Case`` (``Case.restore``), feeds it one event and gets
back a ``Step`` that says everything to do, then persists ``case.snapshot()``
together with the step's effects in one transaction:

* ``case.local(event, body, now)`` for the side's own events (staff, timers,
  department adapters);
* ``case.receive(envelope, body, receipts)`` for a message of the other side,
  already decoded, decrypted and with signatures checked (``receipts`` package).

A ``Step`` holds the new state, the **unsigned** receipt to sign and append (our
chain), the message to send (kind, body, and the range of our receipts it must
carry), the timers to set or cancel, and, for local events, the event record the
receipt's ``cause`` digests (kept for the evidence bundle).

Ordering and duplicates. Each side's receipts for a case are numbered 0, 1, 2 …;
every message carries the sender's receipts the recipient has not had, ending with
the one for the transition that sent it. So the receipt indexes order a side's
messages: a message whose receipts we already hold is a duplicate (``receive``
returns ``None``; the driver answers with what it answered the first time), and one
that skips an index arrived early (``OUT_OF_ORDER``, transient: deliver it later).

Nothing here reads a clock, a disk or a socket: ``now`` and the working-day
calendar are passed in.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from protocol import bodies as b
from protocol.calendar import WorkingCalendar, add_working_days, working_days_between
from protocol.codec import Raw, encode
from protocol.codes import AcceptanceModel
from protocol.envelope import Envelope, Receipt, leaf_digest
from protocol.errors import LocalProtocolError, ProtocolError, Reason, RemoteProtocolError
from protocol.fields import MILLIS_MAX, MILLIS_MIN, date_of, end_of_day
from protocol.states import LOCAL_EVENTS, REMOTE_EVENTS, TIMER_EVENTS, TRANSITIONS, Role

__all__ = ["RECEIPTS_SENT_WITH", "TAG_EVENT", "Case", "Outgoing", "Step", "event_digest",
           "event_for_message",
           "event_record"]

TAG_EVENT = b"tongban/1 event\x00"

#: The body each local event carries (``None``: no body).
_LOCAL_BODIES: dict[str, type | tuple[type, ...] | None] = {
    "collect": b.Application,
    "submit": b.Application,
    "submit_decided": b.Application,
    "window_supplement": b.SupplementRequest,
    "window_supplemented": b.Supplement,
    "window_refuse": b.Refuse,
    "withdraw": b.Withdrawal,
    "supplement": b.Supplement,
    "deliver": b.Delivery,
    "evaluate": b.Evaluation,
    "archive": None,
    "accept": b.Accept,
    "request_supplement": b.SupplementRequest,
    "refuse": b.Refuse,
    "notice_due": None,
    "forward_failed": None,
    "forward_exhausted": None,
    "operator_retry": None,
    "forwarded": b.Forwarded,
    "step": b.Progress,
    "suspend": b.Progress,
    "resume": b.Progress,
    "promise_due": None,
    "conclude": b.Outcome,
    "video_check": b.VideoCheck,
}


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """A message to send: its kind, body, and our receipts ``first..last`` to carry."""

    kind: str
    body: Any
    first_receipt: int
    last_receipt: int


@dataclasses.dataclass(frozen=True)
class Step:
    """What one event did, and what the driver must now do."""

    event: str
    old_state: str
    new_state: str
    receipt: Receipt | None  # unsigned: the driver signs it and appends it to our chain
    send: Outgoing | None
    set_timers: dict[str, int]  # timer name -> due instant (ms)
    cancel_timers: tuple[str, ...]
    event_record: dict[str, Any] | None  # local events: what ``receipt.cause`` digests


def event_record(event: str, at: int, index: int, body: Any) -> dict[str, Any]:
    """A local event as the receipt it caused records it (docs/protocol.md §6.2).

    ``index`` is the index of that receipt, so two identical events in the same
    millisecond still have different records.
    """
    record: dict[str, Any] = {"event": event, "at": at, "index": index}
    if body is not None:
        record["body"] = Raw(body.canonical_bytes)  # encoded once per body, not per use
    return record


def event_digest(record: dict[str, Any]) -> bytes:
    """The ``cause`` of a receipt for a local event: the digest of its event record."""
    return leaf_digest(TAG_EVENT, encode(record))


def event_for_message(kind: str, body: Any) -> str:
    """The event a message of the other side is, from its kind and body."""
    match kind, body:
        case "application", b.Application(window_decision=None):
            return "submit"
        case "application", b.Application():
            return "submit_decided"
        case "decision", b.Accept():
            return "accept"
        case "decision", b.SupplementRequest():
            return "request_supplement"
        case "decision", b.Refuse():
            return "refuse"
        case "progress", b.Progress(event=event):
            return event
        case "rejection", b.Rejection(code=code) if code == Reason.WITHDRAWAL_TOO_LATE.code:
            return "withdrawal_refused"
        case "application" | "decision" | "progress", _:
            raise RemoteProtocolError(Reason.INVALID_FIELD, f"wrong body for {kind!r}")
        case "rejection", _:
            raise RemoteProtocolError(
                Reason.INVALID_FIELD, "only a withdrawal refusal may travel inside a case's chain")
        case "received" | "withdrawal" | "withdrawn" | "forwarded" | "outcome" | "outcome_ack" \
                | "supplement" | "delivery" | "evaluation" | "video_check", _:
            return _KIND_EVENTS[kind]
    raise RemoteProtocolError(Reason.UNKNOWN_KIND, kind)


_KIND_EVENTS = {
    "received": "received",
    "withdrawal": "withdraw",
    "withdrawn": "withdrawn",
    "forwarded": "forwarded",
    "outcome": "conclude",
    "outcome_ack": "outcome_ack",
    "supplement": "supplement",
    "delivery": "deliver",
    "evaluation": "evaluate",
    "video_check": "video_check",
}


class Case:
    """One side of one case. Mutated only by ``local`` and ``receive``."""

    def __init__(
        self,
        *,
        case: str,
        role: Role,
        ours: str,
        theirs: str,
        our_key: str,
        calendar: WorkingCalendar,
        acceptance: AcceptanceModel = "handling_decides",
        promise_days: int = 20,
        promise_unit: str = "working",
        state: str = "new",
        our_index: int = -1,
        our_last: bytes | None = None,
        sent_index: int = -1,
        their_index: int = -1,
        their_last: bytes | None = None,
        timers: dict[str, int] | None = None,
        promised_date: str | None = None,
        suspended_on: str | None = None,
        forward_attempts: int = 0,
        received_at: int | None = None,
    ) -> None:
        self.case = case
        self.role: Role = role
        self.ours = ours
        self.theirs = theirs
        self.our_key = our_key
        self.calendar = calendar
        self.acceptance: AcceptanceModel = acceptance
        self.promise_days = promise_days
        self.promise_unit = promise_unit
        self.state = state
        self.our_index = our_index
        self.our_last = our_last
        self.sent_index = sent_index
        self.their_index = their_index
        self.their_last = their_last
        self.timers: dict[str, int] = dict(timers or {})
        self.promised_date = promised_date
        self.suspended_on = suspended_on
        self.forward_attempts = forward_attempts
        self.received_at = received_at

    # ------------------------------------------------------------ persistence

    _SNAPSHOT = (
        "case", "role", "ours", "theirs", "our_key", "acceptance", "promise_days",
        "promise_unit", "state", "our_index", "our_last", "sent_index", "their_index",
        "their_last", "timers", "promised_date", "suspended_on", "forward_attempts",
        "received_at",
    )

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to ``restore`` this case; plain, msgpack-able values."""
        snapshot = {name: getattr(self, name) for name in self._SNAPSHOT}
        snapshot["timers"] = dict(self.timers)
        return snapshot

    @classmethod
    def restore(cls, snapshot: dict[str, Any], calendar: WorkingCalendar) -> Case:
        return cls(calendar=calendar, **snapshot)

    def __repr__(self) -> str:
        return (
            f"<Case {self.case} {self.role} {self.state} ours={self.our_index} "
            f"sent={self.sent_index} theirs={self.their_index} timers={sorted(self.timers)}>"
        )

    # ------------------------------------------------------------ events

    def local(self, event: str, body: Any, now: int) -> Step:
        """Apply one of our own events. Raises ``LocalProtocolError`` if not allowed;
        the case is unchanged then."""
        return self._atomically(lambda: self._local(event, body, now))

    def receive(
        self, envelope: Envelope, body: Any, receipts: Sequence[Receipt], now: int
    ) -> Step | None:
        """Apply a message of the other side; ``None`` if it is a duplicate.

        ``RemoteProtocolError`` if the peer misbehaved; ``LocalProtocolError`` if we
        cannot apply it now (our calendar does not cover a date); the case is
        unchanged either way."""
        return self._atomically(lambda: self._receive(envelope, body, receipts, now))

    def _atomically(self, apply: Callable[[], _T]) -> _T:
        saved = self.snapshot()
        try:
            return apply()
        except ValueError as exc:  # the working-day calendar does not cover a date
            self._reset(saved)
            raise LocalProtocolError(Reason.INVALID_FIELD, f"calendar: {exc}") from exc
        except BaseException:
            self._reset(saved)
            raise

    def _reset(self, snapshot: dict[str, Any]) -> None:
        for name, value in snapshot.items():
            setattr(self, name, value)

    def _local(self, event: str, body: Any, now: int) -> Step:
        _check_now(now)
        if event not in LOCAL_EVENTS[self.role]:
            raise LocalProtocolError(
                Reason.INVALID_TRANSITION, f"{event!r} is not a {self.role} side's own event"
            )
        expected = _LOCAL_BODIES[event]
        if (expected is None and body is not None) or (expected is not None and not isinstance(
            body, expected
        )):
            raise LocalProtocolError(
                Reason.INVALID_FIELD,
                f"{event!r} takes {getattr(expected, '__name__', 'no body')}, "
                f"not {type(body).__name__}",
            )
        if event == "notice_due":
            self._transition(event, LocalProtocolError)  # before building the body
            body = self._deemed_acceptance()
        self._check_body(event, body, LocalProtocolError)
        return self._apply(event, body, cause=None, now=now)

    def _receive(
        self, envelope: Envelope, body: Any, receipts: Sequence[Receipt], now: int
    ) -> Step | None:
        _check_now(now)
        if envelope.case != self.case or envelope.sender != self.theirs \
                or envelope.recipient != self.ours:
            raise RemoteProtocolError(
                Reason.INVALID_FIELD, "envelope does not belong to this case's two regions"
            )
        if not receipts:
            raise RemoteProtocolError(Reason.INVALID_FIELD, "a case message carries receipts")
        self._check_receipts(receipts)
        last = receipts[-1]
        if last.index == self.their_index and last.digest != self.their_last:
            raise RemoteProtocolError(
                Reason.CHAIN_BROKEN, f"a second, different receipt {last.index}: the chain forks")
        if last.index <= self.their_index:
            return None
        if receipts[0].index > self.their_index + 1:
            raise RemoteProtocolError(
                Reason.OUT_OF_ORDER,
                f"expected receipt {self.their_index + 1}, got {receipts[0].index}",
            )
        joining = receipts[self.their_index + 1 - receipts[0].index]
        if joining.prev != self.their_last:
            raise RemoteProtocolError(
                Reason.CHAIN_BROKEN, f"receipt {joining.index} does not follow the one we hold"
            )
        event = event_for_message(envelope.kind, body)
        if last.kind not in RECEIPTS_SENT_WITH.get((self.role, event), ()):
            raise RemoteProtocolError(
                Reason.CHAIN_BROKEN,
                f"a {envelope.kind!r} message read as {event!r} cannot end with a "
                f"{last.kind!r} receipt")
        if event not in REMOTE_EVENTS[self.role]:
            raise RemoteProtocolError(
                Reason.INVALID_TRANSITION, f"{self.role} side does not take {event!r} from a peer"
            )
        self._check_body(event, body, RemoteProtocolError)
        self._transition(event, RemoteProtocolError)  # check before mutating anything
        self.their_index, self.their_last = last.index, last.digest
        return self._apply(event, body, cause=envelope.digest, now=now)

    # ------------------------------------------------------------ helpers for callers

    def promised_date_from(self, now: int) -> str:
        """The promised completion date if accepted at ``now`` (承诺办结时间)."""
        start = date_of(now)
        if self.promise_unit == "natural":
            return (start + dt.timedelta(days=self.promise_days)).isoformat()
        return add_working_days(self.calendar, start, self.promise_days).isoformat()

    # ------------------------------------------------------------ internals

    def _transition(self, event: str, error: type[ProtocolError]) -> Any:
        try:
            return TRANSITIONS[(self.role, self.state, event)]
        except KeyError:
            raise error(
                Reason.INVALID_TRANSITION,
                f"{self.role} side in state {self.state!r} does not allow event {event!r}",
            ) from None

    def _check_body(self, event: str, body: Any, error: type[ProtocolError]) -> None:
        if event.startswith("window_") and self.acceptance != "collecting_decides":
            raise error(Reason.NOT_AUTHORISED,
                        f"{event!r}: only the collecting-decides model lets the window decide")
        if event == "submit_decided" and self.acceptance != "collecting_decides":
            raise error(Reason.NOT_AUTHORISED, f"matter of case {self.case}")
        if event == "submit" and body.window_decision is not None:
            raise error(Reason.INVALID_FIELD, "use submit_decided for a window decision")
        if event == "submit_decided" and body.window_decision is None:
            raise error(Reason.INVALID_FIELD, "submit_decided needs the window's decision")
        if event in ("step", "suspend", "resume") and body.event != event:
            raise error(Reason.INVALID_FIELD, f"progress body says {body.event!r}, not {event!r}")

    def _apply(self, event: str, body: Any, *, cause: bytes | None, now: int) -> Step:
        """``cause``: the envelope's digest for a remote event, None for a local one."""
        local = cause is None
        transition = self._transition(event, LocalProtocolError if local else RemoteProtocolError)
        old_state = self.state
        receipt = None
        record = None
        if transition.receipt is not None:
            if cause is None:
                record = event_record(event, now, self.our_index + 1, body)
                cause = event_digest(record)
            receipt = Receipt(
                case=self.case,
                index=self.our_index + 1,
                kind=transition.receipt,
                actor=self.ours,
                key=self.our_key,
                prev=self.our_last,
                cause=cause,
                their=self.their_last,
                at=now,
                data=_receipt_data(event, body),
            )
            self.our_index, self.our_last = receipt.index, receipt.digest
        send = None
        if transition.send is not None:
            assert cause is not None  # the table gives every sending transition a receipt
            send = Outgoing(
                kind=transition.send,
                body=self._outgoing_body(transition.send, body, cause, now),
                first_receipt=self.sent_index + 1,
                last_receipt=self.our_index,
            )
            self.sent_index = self.our_index
        set_timers, cancel_timers = self._timers(transition.timers, event, body, now)
        if event in ("submit", "submit_decided") and self.role == "handling":
            self.received_at = body.window.received_at  # 收到申请材料之日 (§32)
        if transition.new_state == "suspended" and old_state != "suspended":
            self.suspended_on = date_of(now).isoformat()  # the 特别程序 stops the clock
        if event == "forward_failed":
            self.forward_attempts += 1
        elif event == "operator_retry":
            self.forward_attempts = 0
        self.state = transition.new_state
        return Step(
            event=event,
            old_state=old_state,
            new_state=self.state,
            receipt=receipt,
            send=send,
            set_timers=set_timers,
            cancel_timers=cancel_timers,
            event_record=record,
        )

    def _outgoing_body(self, kind: str, body: Any, cause: bytes, now: int) -> Any:
        if kind in ("received", "outcome_ack"):
            return b.Ack(of=cause, at=now)
        if kind == "withdrawn":
            return b.Withdrawn(at=now)
        if kind == "rejection":
            reason = Reason.WITHDRAWAL_TOO_LATE
            return b.Rejection(of=cause, code=reason.code, zh=reason.zh, en=reason.en)
        return body

    def _timers(
        self, ops: tuple[str, ...], event: str, body: Any, now: int
    ) -> tuple[dict[str, int], tuple[str, ...]]:
        set_timers: dict[str, int] = {}
        cancel: list[str] = []
        for op in ops:
            name = op[1:]
            if op[0] == "-":
                if self.timers.pop(name, None) is not None:
                    cancel.append(name)
                continue
            due = self._due(name, event, body, now)
            self.timers[name] = set_timers[name] = due
        if event in TIMER_EVENTS.values():  # a timer that fired is gone
            fired = next(name for name, ev in TIMER_EVENTS.items() if ev == event)
            self.timers.pop(fired, None)
        return set_timers, tuple(cancel)

    def _due(self, name: str, event: str, body: Any, now: int) -> int:
        if name == "notice":  # 5 working days from the window's receipt time
            received = date_of(body.window.received_at)
            return end_of_day(add_working_days(self.calendar, received, 5))
        # "promise": the promised date, moved on by a 特别程序's working days on resume
        if event == "resume":
            assert self.promised_date is not None
            assert self.suspended_on is not None
            stopped = working_days_between(
                self.calendar, dt.date.fromisoformat(self.suspended_on), date_of(now)
            )
            moved = add_working_days(
                self.calendar, dt.date.fromisoformat(self.promised_date), stopped
            )
            self.promised_date, self.suspended_on = moved.isoformat(), None
        else:
            decision = body.window_decision if event == "submit_decided" else body
            self.promised_date = decision.promised_date
        assert self.promised_date is not None
        return end_of_day(dt.date.fromisoformat(self.promised_date))

    def _deemed_acceptance(self) -> b.Accept:
        """行政许可法 §32 (四): no 补正 notice within 5 days means accepted, as of the day
        the materials were received ("自收到申请材料之日起即为受理")."""
        if self.received_at is None:
            raise LocalProtocolError(Reason.INVALID_FIELD, "the window's receipt time is unknown")
        return b.Accept(
            doc_no=f"视为受理-{self.case}"[:50],
            accepted_at=self.received_at,
            promised_date=self.promised_date_from(self.received_at),
            decided_by="依法视为受理",
            deemed=True,
        )

    def _check_receipts(self, receipts: Sequence[Receipt]) -> None:
        previous: Receipt | None = None
        for receipt in receipts:
            if receipt.case != self.case or receipt.actor != self.theirs:
                raise RemoteProtocolError(Reason.CHAIN_BROKEN, "receipt of another case or region")
            if previous is not None and (
                receipt.index != previous.index + 1 or receipt.prev != previous.digest
            ):
                raise RemoteProtocolError(
                    Reason.CHAIN_BROKEN, f"receipt {receipt.index} does not follow {previous.index}"
                )
            previous = receipt


_T = TypeVar("_T")

def _read_as(kind: str, sender_event: str) -> str:
    """The event a receiver reads a message as, from the sender's event that sent it."""
    if kind in ("application", "progress") or (kind == "decision" and sender_event != "notice_due"):
        return sender_event
    if kind == "decision":
        return "accept"  # a deemed acceptance is an acceptance
    if kind == "rejection":
        return "withdrawal_refused"
    return _KIND_EVENTS[kind]


#: (our role, event we read a message as) -> the receipt kinds the peer signs when it
#: sends such a message: the last receipt a message carries is the one of the
#: transition that sent it, so an acceptance cannot arrive signed as a refusal.
RECEIPTS_SENT_WITH: dict[tuple[str, str], set[str]] = {}
for (_role, _state, _event), _transition in TRANSITIONS.items():
    if _transition.send is not None and _transition.receipt is not None:
        _receiver = "handling" if _role == "collecting" else "collecting"
        RECEIPTS_SENT_WITH.setdefault(
            (_receiver, _read_as(_transition.send, _event)), set()).add(_transition.receipt)
del _role, _state, _event, _transition, _receiver


def _check_now(now: int) -> None:
    if type(now) is not int or not MILLIS_MIN <= now <= MILLIS_MAX:
        raise LocalProtocolError(Reason.INVALID_FIELD, f"time {now!r} is not milliseconds since 1970")


def _in(session: str | None) -> dict[str, str | int | bool]:
    """A decision made in a virtual-window video session names it in its receipt."""
    return {} if session is None else {"session": session}


def _receipt_data(event: str, body: Any) -> dict[str, str | int | bool]:
    """The few non-personal facts a receipt records about its event."""
    match body:
        case b.Application(window=window, matter=matter):
            return {"window_no": window.window_no, "matter": matter.code,
                    "version": matter.version}
        case b.Accept(doc_no=doc_no, promised_date=promised, deemed=deemed, session=session):
            return {"doc_no": doc_no, "promised_date": promised, "deemed": deemed} | _in(session)
        case b.SupplementRequest(items=items, session=session):
            return {"items": len(items)} | _in(session)
        case b.Refuse(legal_basis=basis, session=session):
            return {"legal_basis": basis[:200]} | _in(session)
        case b.VideoCheck(session=session, check=check, confirmed=confirmed, materials=materials):
            return {"session": session, "check": check, "confirmed": confirmed,
                    "materials": len(materials)}
        case b.Supplement(materials=materials):
            return {"materials": len(materials)}
        case b.Forwarded(department=department, attempts=attempts):
            return {"department": department, "attempts": attempts}
        case b.Progress(step=step, action=action):
            return {"step": step[:100], "action": action}
        case b.Outcome(result=result, certificate_no=number):
            data: dict[str, str | int | bool] = {"result": result}
            return data | ({"certificate_no": number} if number else {})
        case b.Delivery(mode=mode, tracking_no=tracking):
            data = {"mode": mode}
            return data | ({"tracking_no": tracking} if tracking else {})
        case b.Evaluation(satisfaction=satisfaction, channel=channel):
            return {"satisfaction": satisfaction, "channel": channel}
    return {}
