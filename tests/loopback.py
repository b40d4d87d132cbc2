"""Two regions wired back to back in memory: the protocol core and its cryptography
driven the way a node drives them, without NATS or SQLite.

``Side`` is a minimal synchronous driver: it feeds events to a ``protocol.Case``,
signs the receipts, seals the messages, keeps the chains, answers duplicates with
the original answer and returns ``OUT_OF_ORDER`` messages for later delivery.
``Network`` holds the messages in flight so a test can deliver, duplicate,
reorder or drop (and later retransmit) them.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from protocol import Case, Receipt, RemoteProtocolError, Step, WeekdayCalendar
from protocol import examples as ex
from protocol.errors import Reason
from receipts import KeyRegistry, Letter, NodeKeys, Postmaster, build_bundle, verify_bundle

T0 = 1_795_400_000_000  # 2026-11-23T10:13:20+08:00, a Monday
_KEYS = {region: NodeKeys.generate(region) for region in (ex.COLLECTING, ex.HANDLING)}


@dataclasses.dataclass
class Delivered:
    outcome: str  # "applied", "duplicate", "deferred", "rejected"
    step: Step | None = None
    reason: Reason | None = None


class Side:
    def __init__(self, region: str, peer: str, registry: KeyRegistry, *,
                 acceptance: str = "handling_decides", promise_days: int = 10) -> None:
        self.region = region
        self.peer = peer
        self.keys = _KEYS[region]
        self.postmaster = Postmaster(self.keys, registry)
        self.calendar = WeekdayCalendar()
        self.acceptance = acceptance
        self.promise_days = promise_days
        self.cases: dict[str, Case] = {}
        self.chains: dict[str, list[Receipt]] = {}
        self.theirs: dict[str, list[Receipt]] = {}
        self.envelopes: dict[str, list[tuple[bytes, bytes, bytes]]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.answers: dict[bytes, list[bytes]] = {}  # incoming digest -> what we answered
        self.outbox: list[bytes] = []
        self.seq = itertools.count(1)
        self.ids = itertools.count(1)

    def open_case(self, case_id: str) -> Case:
        role = "collecting" if self.region == ex.COLLECTING else "handling"
        case = Case(case=case_id, role=role, ours=self.region, theirs=self.peer,
                    our_key=self.keys.sign_key_id, calendar=self.calendar,
                    acceptance=self.acceptance, promise_days=self.promise_days)  # type: ignore[arg-type]
        self.cases[case_id] = case
        for store in (self.chains, self.theirs, self.envelopes, self.events):
            store.setdefault(case_id, [])  # type: ignore[attr-defined]
        return case

    # ---------------------------------------------------------------- events

    def local(self, case_id: str, event: str, body: Any, now: int) -> Step:
        case = self.cases.get(case_id) or self.open_case(case_id)
        step = case.local(event, body, now)
        self._carry_out(case_id, step, now, answer_to=None)
        return step

    def fire_timers(self, now: int, *, at: int | None = None) -> list[Step]:
        """Fire every timer due by ``now`` (the node's persisted timers do this).

        Each fires at ``due + 1``, or, given ``at``, at ``at``, ``at + 1`` … (a
        scheduler that wakes late fires overdue timers when it wakes).
        """
        steps = []
        instants = itertools.count(at) if at is not None else None
        for case_id, case in self.cases.items():
            for name, due in sorted(case.timers.items(), key=lambda t: t[1]):
                if due <= now and name in case.timers:
                    fired_at = next(instants) if instants is not None else due + 1
                    steps.append(self.local(case_id, f"{name}_due", None, fired_at))
        return steps

    def deliver(self, wire: bytes, now: int) -> Delivered:
        try:
            opened = self.postmaster.open(wire, now)
        except RemoteProtocolError as exc:
            return Delivered("rejected", reason=exc.reason)
        envelope = opened.envelope
        case = self.cases.get(envelope.case) or self.open_case(envelope.case)
        try:
            step = case.receive(envelope, opened.body, opened.receipts, now)
        except RemoteProtocolError as exc:
            if exc.reason.transient:
                return Delivered("deferred", reason=exc.reason)
            return Delivered("rejected", reason=exc.reason)
        if step is None:  # duplicate: the original answer again, never an error
            self.outbox.extend(self.answers.get(envelope.digest, []))
            return Delivered("duplicate")
        known = {r.index for r in self.theirs[envelope.case]}
        self.theirs[envelope.case].extend(r for r in opened.receipts if r.index not in known)
        self.envelopes[envelope.case].append((wire, opened.content_key, opened.plaintext))
        self._carry_out(envelope.case, step, now, answer_to=envelope.digest)
        return Delivered("applied", step)

    def _carry_out(self, case_id: str, step: Step, now: int, answer_to: bytes | None) -> None:
        chain = self.chains[case_id]
        if step.receipt is not None:
            chain.extend(self.postmaster.sign_receipts([step.receipt]))
        if step.event_record is not None:
            self.events[case_id].append(step.event_record)
        answer: list[bytes] = []
        if step.send is not None:
            send = step.send
            letter = Letter(
                id=f"{self.region}-m{next(self.ids):06d}", kind=send.kind, recipient=self.peer,
                case=case_id, seq=next(self.seq), sent_at=now, body=send.body,
                receipts=tuple(chain[send.first_receipt:send.last_receipt + 1]),
            )
            (sealed,) = self.postmaster.seal([letter])
            self.envelopes[case_id].append((sealed.wire, sealed.content_key, sealed.plaintext))
            self.outbox.append(sealed.wire)
            answer.append(sealed.wire)
        if answer_to is not None:
            self.answers[answer_to] = answer

    # ---------------------------------------------------------------- evidence

    def bundle(self, case_id: str) -> bytes:
        return build_bundle(
            case=case_id, made_by=self.region, made_at=T0,
            keys=self.postmaster.registry.records(),
            envelopes=self.envelopes[case_id],
            receipts=[*self.chains[case_id], *self.theirs[case_id]],
            events=self.events[case_id],
        )

    def verify(self, case_id: str) -> None:
        verify_bundle(self.bundle(case_id))

    # ---------------------------------------------------------------- test helpers

    def kinds(self, case_id: str) -> list[str]:
        """The kinds of our own receipts for ``case_id``, in chain order."""
        return [r.kind for r in self.chains[case_id]]

    def take_outbox(self) -> list[bytes]:
        """Everything queued to send, removed from the outbox."""
        taken, self.outbox[:] = list(self.outbox), []
        return taken


def registry() -> KeyRegistry:
    reg = KeyRegistry()
    for keys in _KEYS.values():
        reg.add_node(keys, valid_from=T0 - 365 * ex.DAY)
    return reg


class Pair:
    """A collecting and a handling side sharing one registry and an in-memory network."""

    def __init__(self, *, acceptance: str = "handling_decides",
                 handling_acceptance: str | None = None) -> None:
        self.registry = registry()
        self.collecting = Side(ex.COLLECTING, ex.HANDLING, self.registry, acceptance=acceptance)
        self.handling = Side(ex.HANDLING, ex.COLLECTING, self.registry,
                             acceptance=handling_acceptance or acceptance)

    def side(self, region: str) -> Side:
        return self.collecting if region == ex.COLLECTING else self.handling

    def pump(self, now: int, *, rounds: int = 100) -> None:
        """Deliver everything in flight, in order, until both outboxes are empty."""
        for _ in range(rounds):
            moved = False
            for sender, receiver in ((self.collecting, self.handling),
                                     (self.handling, self.collecting)):
                while sender.outbox:
                    wire = sender.outbox.pop(0)
                    result = receiver.deliver(wire, now)
                    assert result.outcome in ("applied", "duplicate"), result
                    moved = True
            if not moved:
                return
        raise AssertionError("messages still in flight after pumping")

    def states(self, case_id: str) -> tuple[str, str]:
        return (self.collecting.cases[case_id].state, self.handling.cases[case_id].state)


def example_body(case: Case, event: str, now: int, application: Any = None) -> Any:
    """A valid example body for a local ``event`` of ``case`` at ``now`` (``None`` if it takes none).

    ``application`` is the body for collect/submit/submit_decided: a collecting side
    must send the very body it collected (the collected receipt's cause digests it).
    """
    match event:
        case "collect" | "submit" | "submit_decided":
            return application if application is not None else ex.application(now)
        case "window_supplement" | "request_supplement":
            return ex.supplement_request(now)
        case "window_supplemented" | "supplement":
            return ex.supplement(now)
        case "window_refuse" | "refuse":
            return ex.refuse(now)
        case "withdraw":
            return ex.withdrawal(now)
        case "deliver":
            return ex.delivery(now)
        case "evaluate":
            return ex.evaluation(now)
        case "accept":
            return ex.accept(now, promised_date=case.promised_date_from(now))
        case "forwarded":
            return ex.forwarded(now, attempts=case.forward_attempts + 1)
        case "step" | "suspend" | "resume":
            return ex.progress(now, event)
        case "conclude":
            return ex.outcome(now)
        case "video_check":
            return ex.video_check(now)
    return None


def thaw(value: Any) -> Any:
    """A decoded value with arrays as lists again (the decoder returns tuples), to edit."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value
