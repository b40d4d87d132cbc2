"""The engine: a batch of inputs in, one durable ``Changes`` and the answers out.

Theory of operation
-------------------
Everything the node decides is decided here, synchronously, without I/O except
short reads of the store (the async workers do the rest):

1. each input is fed to its case's ``protocol.Case``: a message from the inbox
   (``Incoming``: opened and checked by the ``Postmaster`` first, duplicates
   answered with the original answer) or a command of our own (``Command``: staff,
   timers, department adapters);
2. all receipts the batch made are signed with **one** Merkle-batched signature;
3. all messages the batch sends are sealed and signed with **one** more;
4. the result is one ``Changes`` (case snapshots, receipts, envelopes, outbox
   rows, timers, dedup entries) that the store writes in one transaction, and one
   ``Result`` per input that says what the transport does with the message (ack,
   nak with delay, term) once the transaction is on disk.

So a crash anywhere loses nothing: until the commit, nothing was acked and the
inbox delivers again; after it, the dedup entries answer the redelivery.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from node.materials import material_row
from node.store import Changes, Store
from protocol import (
    Case,
    LocalProtocolError,
    ProtocolError,
    Reason,
    Receipt,
    RemoteProtocolError,
    Step,
    WorkingCalendar,
    decode,
)
from protocol import bodies as b
from protocol.codec import encode
from protocol.envelope import Envelope
from protocol.fields import date_of
from protocol.joint import part_outcome, resolve, withdrawable
from protocol.states import TRANSITIONS
from protocol.wire import decode_envelope, receipt_from_fields
from receipts import Letter, Postmaster
from receipts.envelopes import Opened
from routing.router import NoRoute, Router

__all__ = ["Command", "Engine", "Incoming", "MatterPolicy", "Result"]

log = logging.getLogger("tongban.engine")


@dataclasses.dataclass(frozen=True)
class MatterPolicy:
    """What the handling side's catalog says about a matter (until the catalog index)."""

    acceptance: str = "handling_decides"
    promise_days: int = 20
    promise_unit: str = "working"


@dataclasses.dataclass(frozen=True)
class Incoming:
    msg_id: str
    data: bytes


@dataclasses.dataclass(frozen=True)
class Command:
    """One of our own events. ``collect`` opens a case (``peer`` = handling region)."""

    case_id: str | None
    event: str
    body: Any = None
    peer: str | None = None


@dataclasses.dataclass(frozen=True)
class JointCollect:
    """The body of a ``collect_joint`` command: a 多地联办 application split into parts,
    each ``(handling region, application)``. The engine names the joint case and its
    parts (``<joint id>.<n>``), and collects and submits them all in one batch, or none."""

    matter: str  # 基本编码
    policy: str  # what a refused part does: whole_case | part_only (protocol.joint)
    parts: tuple[tuple[str, b.Application], ...]


@dataclasses.dataclass
class Result:
    """What became of one input."""

    outcome: str  # applied | duplicate | deferred | rejected | refused | relayed
    case_id: str | None = None
    step: Step | None = None
    reason: Reason | None = None
    detail: str = ""
    #: For metrics: the partner (an inbox message's authenticated sender, or the case's
    #: other region for a command) and an inbox message's kind; ``None`` when unknown.
    peer: str | None = None
    kind: str | None = None


class Engine:
    def __init__(
        self,
        *,
        region: str,
        postmaster: Postmaster,
        store: Store,
        calendar: WorkingCalendar,
        policy: Callable[[b.Application], MatterPolicy] = lambda application: MatterPolicy(),
        router: Router | None = None,
    ) -> None:
        self.region = region
        self.postmaster = postmaster
        self.store = store
        self.calendar = calendar
        self.policy = policy
        self.router = router  # paths through relays (经由); None: always direct
        self._seq = store.counter("seq")
        self._cases_opened = store.counter("cases")
        # Our receipts signed lately, by (case, index): a letter carries the receipts made
        # since the last one sent, often from an earlier batch (collect, then submit).
        # Batches put theirs in ``_unconfirmed``; ``confirm`` adopts them once committed.
        self._recent: OrderedDict[tuple[str, int], Receipt] = OrderedDict()
        self._unconfirmed: dict[tuple[str, int], Receipt] = {}
        self.recent_receipts = 10_000

    def __repr__(self) -> str:
        return f"<Engine {self.region} seq={self._seq} cases={self._cases_opened}>"

    # ------------------------------------------------------------------ batches

    def process(self, inputs: Sequence[Incoming | Command], now: int) -> tuple[Changes, list[Result]]:
        batch = _Batch(self, now)
        results = []
        for item in inputs:
            if isinstance(item, Incoming):
                result = batch.incoming(item)
                result.peer, result.kind = batch.heard.get(item.msg_id, (None, None))
            else:
                result = batch.command(item)
                case = batch.cases.get(result.case_id or "")
                result.peer = None if case is None else case.theirs
            results.append(result)
        return batch.finish(), results

    def confirm(self) -> None:
        """The last batch is on disk: its receipts may be carried by later letters."""
        recent = self._recent
        recent.update(self._unconfirmed)
        self._unconfirmed = {}
        while len(recent) > self.recent_receipts:
            recent.popitem(last=False)

    def new_case_id(self, now: int) -> str:
        self._cases_opened += 1
        return f"{self.region}-{date_of(now):%Y%m%d}-{self._cases_opened:06d}"

    def next_message(self) -> tuple[str, int]:
        self._seq += 1
        return f"{self.region}-{self._seq:012d}", self._seq

    def load_case(self, case_id: str) -> Case | None:
        snapshot = self.store.case_snapshot(case_id)
        if snapshot is None:
            return None
        case = Case.restore(snapshot, self.calendar)
        case.our_key = self.postmaster.keys.sign_key_id  # the key signing now (after a rotation)
        return case


class _Batch:
    """The working state of one ``Engine.process`` call."""

    def __init__(self, engine: Engine, now: int) -> None:
        self.engine = engine
        self.now = now
        self.cases: dict[str, Case] = {}
        self.meta: dict[str, dict[str, Any]] = {}  # case -> matter, window_no for new rows
        self.steps: list[tuple[str, Step, bytes | None]] = []  # case, step, answered digest
        self.changes = Changes()
        self.seen_here: dict[str, Result] = {}
        self.answered: dict[bytes, tuple[str, str]] = {}  # envelope digest -> msg id, case
        # Out-of-band rejections of authenticated messages: recipient, case, body.
        self.rejections: list[tuple[str, str, b.Rejection]] = []
        self.seen_answers: dict[bytes, list[str]] = {}
        self.joints: dict[str, dict[str, Any]] = {}  # 多地联办 rows read or made in this batch
        self.new_joints: list[str] = []
        #: Inbox messages whose sender was authenticated: msg id -> (sender, kind). Only
        #: these name a partner in metrics, so a forged sender cannot add label values.
        self.heard: dict[str, tuple[str, str]] = {}

    # ------------------------------------------------------------------ inputs

    def incoming(self, item: Incoming) -> Result:
        earlier = self.seen_here.get(item.msg_id) or self._seen(item.msg_id)
        if earlier is not None:
            return earlier
        try:
            opened = self.engine.postmaster.open(item.data, self.now)
        except RemoteProtocolError as exc:
            if exc.reason is Reason.WRONG_RECIPIENT:
                return self._pass_on(item, exc)
            return self._refuse(item, None, self._membership(item, exc))
        envelope = opened.envelope
        self.heard[item.msg_id] = (envelope.sender, envelope.kind)
        if envelope.kind == "rejection" and not opened.receipts:
            return self._peer_rejection(item, opened)
        case = self._case(envelope.case)
        if case is None:
            opening = self._open_handling_case(opened)
            if isinstance(opening, Result):
                return opening
            case = opening
        try:
            step = case.receive(envelope, opened.body, opened.receipts, self.now)
        except RemoteProtocolError as exc:
            return self._refuse(item, opened.envelope, exc)
        except LocalProtocolError as exc:  # our side cannot apply it now: try again later
            log.error("cannot apply %s to case %s yet: %s", item.msg_id, envelope.case, exc.en)
            return Result("deferred", envelope.case, reason=exc.reason, detail=exc.detail)
        if step is None:  # an earlier message again under another id: nothing to answer
            result = Result("duplicate", envelope.case)
            self._remember(item, envelope.digest, envelope.case, result, [])
            return result
        self.cases[envelope.case] = case
        self.changes.receipts.extend(_receipt_row(r) for r in opened.receipts)
        for ref in _materials_of(envelope.kind, opened.body):
            self.changes.materials.append(
                {**material_row(ref, envelope.case, envelope.sender, "to_fetch"), "at": self.now})
        self.changes.envelopes.append(_envelope_row(opened, "in", self.now, item.data))
        self.steps.append((envelope.case, step, envelope.digest))
        result = Result("applied", envelope.case, step)
        self.answered[envelope.digest] = (item.msg_id, envelope.case)
        self.seen_here[item.msg_id] = result
        return result

    def command(self, item: Command) -> Result:
        try:
            if item.event == "collect":
                return self._collect(item)
            if item.event == "collect_joint":
                return self._collect_joint(item)
            case = self._case(item.case_id) if item.case_id else None
            if case is None:
                raise LocalProtocolError(Reason.INVALID_FIELD, f"no case {item.case_id}")
            body = item.body
            if item.event in ("submit", "submit_decided") and body is None:
                raw = self.engine.store.body(case.case, "application")
                body = b.Application.model_validate(decode(raw)) if raw else None
            transition = TRANSITIONS.get((case.role, case.state, item.event))
            if transition is not None and transition.send is not None:
                # A step that writes to a partner we cannot seal to (suspended, revoked)
                # is refused here, not when the whole batch is sealed.
                self.engine.postmaster.registry.encryption_key(case.theirs, self.now)
            step = case.local(item.event, body, self.now)
        except LocalProtocolError as exc:
            return Result("refused", item.case_id, reason=exc.reason, detail=exc.detail)
        self.steps.append((case.case, step, None))
        return Result("applied", case.case, step)

    # ------------------------------------------------------------------ finishing

    def finish(self) -> Changes:
        engine, changes, now = self.engine, self.changes, self.now
        self._follow_joints()
        changes.joints += [self.joints[j] for j in self.new_joints
                           if not any(row["joint_id"] == j for row in changes.joints)]
        unsigned = [step.receipt for _, step, _ in self.steps if step.receipt is not None]
        signed = {r.digest: r for r in engine.postmaster.sign_receipts(unsigned)}
        ours = {(r.case, r.index): r for r in signed.values()}  # all made by this batch
        engine._unconfirmed = ours
        for case_id, step, _ in self.steps:
            if step.receipt is not None:
                changes.receipts.append(_receipt_row(signed[step.receipt.digest]))
            if step.event_record is not None:
                changes.events.append((case_id, now, encode(step.event_record)))  # for bundles
            changes.timers_cancel.extend((case_id, name) for name in step.cancel_timers)
            changes.timers_set.extend((case_id, n, due) for n, due in step.set_timers.items())
        letters, answers_for = [], []
        for case_id, step, answering in self.steps:
            if step.send is None:
                continue
            case = self.cases[case_id]
            msg_id, seq = engine.next_message()
            carried = self._our_receipts(case, step.send.first_receipt, step.send.last_receipt,
                                         ours)
            letters.append(Letter(id=msg_id, kind=step.send.kind, recipient=case.theirs,
                                  case=case_id, seq=seq, sent_at=now, body=step.send.body,
                                  receipts=tuple(carried)))
            answers_for.append(answering)
        for recipient, case_id, rejection in self.rejections:
            msg_id, seq = engine.next_message()
            self.seen_answers[rejection.of].append(msg_id)
            letters.append(Letter(id=msg_id, kind="rejection", recipient=recipient, case=case_id,
                                  seq=seq, sent_at=now, body=rejection, receipts=()))
            answers_for.append(None)
        answers: dict[bytes, list[str]] = {}
        sealed_letters = zip(letters, engine.postmaster.seal(letters), answers_for, strict=True)
        for letter, sealed, answering in sealed_letters:
            envelope = sealed.envelope
            for ref in _materials_of(envelope.kind, letter.body):
                held = engine.store.material(ref.object or "")
                if held is None:  # a file this node never received: nothing to transfer
                    log.warning("case %s names material %s, which this node does not hold",
                                envelope.case, ref.object)
                    continue
                changes.materials.append(
                    {**material_row(ref, envelope.case, envelope.recipient, "to_send"), "at": now})
            hop = envelope.recipient if engine.router is None else engine.router.next_hop(
                envelope.recipient)
            subject = f"tb.{hop}.in.{envelope.kind}"
            changes.outbox.append((envelope.id, subject, sealed.wire, now))
            changes.envelopes.append({
                "digest": envelope.digest, "case_id": envelope.case, "direction": "out",
                "msg_id": envelope.id, "kind": envelope.kind, "peer": envelope.recipient,
                "at": now, "wire": sealed.wire, "content_key": sealed.content_key,
                "plaintext": sealed.plaintext})
            if answering is not None:
                answers.setdefault(answering, []).append(envelope.id)
        for digest, (msg_id, case_id) in self.answered.items():
            changes.seen.append((msg_id, digest, case_id, "applied", answers.get(digest, []), now))
        for case_id, case in self.cases.items():
            changes.cases.append({"case_id": case_id, "role": case.role, "peer": case.theirs,
                                  "state": case.state, "snapshot": case.snapshot(), "at": now,
                                  **self.meta.get(case_id, {"matter": None, "window_no": None})})
        changes.counters = {"seq": engine._seq, "cases": engine._cases_opened}
        return changes

    # ------------------------------------------------------------------ helpers

    def _case(self, case_id: str) -> Case | None:
        case = self.cases.get(case_id)
        if case is None:
            case = self.engine.load_case(case_id)
            if case is not None:
                self.cases[case_id] = case
        return case

    def _collect(self, item: Command) -> Result:
        if not isinstance(item.body, b.Application) or item.peer is None:
            raise LocalProtocolError(Reason.INVALID_FIELD, "collect needs the application and "
                                     "the handling region")
        case_id = item.case_id or self.engine.new_case_id(self.now)
        case = Case(case=case_id, role="collecting", ours=self.engine.region, theirs=item.peer,
                    our_key=self.engine.postmaster.keys.sign_key_id, calendar=self.engine.calendar,
                    acceptance=item.body.acceptance)
        step = case.local("collect", item.body, self.now)
        self.cases[case_id] = case
        self.meta[case_id] = {"matter": item.body.matter.code,
                              "window_no": item.body.window.window_no}
        self.changes.bodies.append((case_id, "application", item.body.canonical_bytes))
        self.steps.append((case_id, step, None))
        return Result("applied", case_id, step)

    def _collect_joint(self, item: Command) -> Result:
        joint = item.body
        if not isinstance(joint, JointCollect) or not 2 <= len(joint.parts) <= 20:
            raise LocalProtocolError(Reason.INVALID_FIELD, "a joint case has 2 to 20 parts")
        if not all(isinstance(application, b.Application) for _, application in joint.parts):
            raise LocalProtocolError(Reason.INVALID_FIELD, "every part is an application")
        joint_id = self.engine.new_case_id(self.now) + "J"
        regions = tuple(peer for peer, _ in joint.parts)
        parts = [(f"{joint_id}.{n}", peer, application.model_copy(update={
                  "joint": b.JointRef(id=joint_id, part=n, regions=regions)}))
                 for n, (peer, application) in enumerate(joint.parts, start=1)]
        for case_id, peer, application in parts:  # every part valid, or none is collected
            trial = Case(case=case_id, role="collecting", ours=self.engine.region, theirs=peer,
                         our_key=self.engine.postmaster.keys.sign_key_id,
                         calendar=self.engine.calendar, acceptance=application.acceptance)
            trial.local("collect", application, self.now)
            trial.local("submit", application, self.now)
            self.engine.postmaster.registry.encryption_key(peer, self.now)  # we can write to it
        for case_id, peer, application in parts:  # collected and sent in this one batch
            self._collect(Command(case_id, "collect", application, peer=peer))
            self.steps.append((case_id, self.cases[case_id].local("submit", application,
                                                                  self.now), None))
        self.joints[joint_id] = {
            "joint_id": joint_id, "matter": joint.matter, "policy": joint.policy,
            "state": "open", "parts": [(case_id, peer) for case_id, peer, _ in parts],
            "outcomes": [None] * len(parts), "at": self.now, "closed_at": None}
        self.new_joints.append(joint_id)
        return Result("applied", joint_id)

    def _joint(self, joint_id: str) -> dict[str, Any] | None:
        joint = self.joints.get(joint_id)
        if joint is None:
            joint = self.engine.store.joint(joint_id)
            if joint is not None:
                self.joints[joint_id] = joint
        return joint

    def _follow_joints(self) -> None:
        """多地联办: the joint cases whose parts moved in this batch follow them."""
        touched = {case_id.rpartition(".")[0] for case_id, case in self.cases.items()
                   if "." in case_id and case.role == "collecting"}
        for joint_id in sorted(touched):
            joint = self._joint(joint_id)
            if joint is None or joint["closed_at"] is not None:
                continue
            parts = [self._case(case_id) for case_id, _ in joint["parts"]]
            outcomes = [None if case is None else part_outcome(case.state, earlier)
                        for case, earlier in zip(parts, joint["outcomes"], strict=True)]
            decided = resolve(joint["policy"], outcomes)
            withdraw = [case.case for i, case in enumerate(parts)
                        if i in decided.withdraw and case is not None and withdrawable(case.state)]
            if (outcomes, decided.state) == (joint["outcomes"], joint["state"]) and not withdraw:
                continue
            joint.update(outcomes=outcomes, state=decided.state, at=self.now,
                         closed_at=self.now if decided.closed else None, withdraw=withdraw)
            self.changes.joints.append(joint)

    def _open_handling_case(self, opened: Opened) -> Case | Result:
        envelope, body = opened.envelope, opened.body
        if envelope.kind != "application" or not isinstance(body, b.Application):
            error = RemoteProtocolError(Reason.INVALID_TRANSITION,
                                        f"no case {envelope.case} for a {envelope.kind!r} message")
            return self._refuse(Incoming(envelope.id, b""), envelope, error)
        try:
            policy = self.engine.policy(body)
        except RemoteProtocolError as exc:  # not a matter of ours, or its form is not filled in right
            return self._refuse(Incoming(envelope.id, b""), envelope, exc)
        case = Case(case=envelope.case, role="handling", ours=self.engine.region,
                    theirs=envelope.sender, our_key=self.engine.postmaster.keys.sign_key_id,
                    calendar=self.engine.calendar, acceptance=policy.acceptance,  # type: ignore[arg-type]
                    promise_days=policy.promise_days, promise_unit=policy.promise_unit)
        self.meta[envelope.case] = {"matter": body.matter.code, "window_no": body.window.window_no}
        self.changes.bodies.append((envelope.case, "application", body.canonical_bytes))
        return case

    def _our_receipts(self, case: Case, first: int, last: int,
                      in_batch: dict[tuple[str, int], Receipt]) -> list[Receipt]:
        """Our receipts ``first..last`` of a case: signed in this batch, or stored earlier."""
        known = self.engine._recent
        found = [in_batch.get((case.case, i)) or known.get((case.case, i))
                 for i in range(first, last + 1)]
        if all(found):
            return found  # type: ignore[return-value]
        stored: dict[int, Receipt] = {}
        for raw in self.engine.store.receipts(case.case, case.ours, first, last):
            receipt = receipt_from_fields(decode(raw))
            stored[receipt.index] = receipt
        return [in_batch.get((case.case, i)) or stored[i] for i in range(first, last + 1)]

    def _seen(self, msg_id: str) -> Result | None:
        seen = self.engine.store.seen(msg_id)
        if seen is None:
            return None
        _, answers = seen
        self.changes.resend.extend(answers)  # the original answer, never an error
        return Result("duplicate")

    def _remember(self, item: Incoming, digest: bytes, case_id: str | None, result: Result,
                  answers: list[str]) -> None:
        self.seen_here[item.msg_id] = result
        self.seen_answers[digest] = answers  # filled in by finish() if we answer it
        self.changes.seen.append((item.msg_id, digest, case_id, result.outcome, answers, self.now))

    def _membership(self, item: Incoming, exc: RemoteProtocolError) -> RemoteProtocolError:
        """A key refused because its region is suspended or revoked in the circle is
        refused as ``not_a_member``: the sender's membership, not its key, is at issue."""
        router = self.engine.router
        if exc.reason is not Reason.KEY_NOT_VALID or router is None:
            return exc
        sender = _sender_of(item.data)
        status = None if sender is None else router.status(sender)
        if status in (None, "joined"):
            return exc
        return RemoteProtocolError(Reason.NOT_A_MEMBER, f"{sender} is {status} in the circle")

    def _pass_on(self, item: Incoming, misaddressed: RemoteProtocolError) -> Result:
        """A message for another region. A relay (经由) of that region passes it on
        unread, once its sender's signature holds; anyone else refuses it, signed."""
        try:
            envelope = self.engine.postmaster.authenticate(item.data, self.now)
        except RemoteProtocolError as exc:
            return self._refuse(item, None, exc)
        self.heard[item.msg_id] = (envelope.sender, envelope.kind)
        router = self.engine.router
        if router is None:
            return self._refuse(item, envelope, misaddressed)
        try:
            hop = router.transit(envelope.recipient)
        except NoRoute as exc:
            return self._refuse(item, envelope, RemoteProtocolError(Reason.NO_ROUTE, exc.en))
        self.changes.outbox.append((envelope.id, f"tb.{hop}.in.{envelope.kind}", item.data,
                                    self.now))
        result = Result("relayed", envelope.case)
        self._remember(item, envelope.digest, envelope.case, result, [])
        return result

    def _refuse(self, item: Incoming, envelope: Envelope | None, exc: ProtocolError) -> Result:
        case_id = envelope.case if envelope else None
        if exc.reason.transient:
            return Result("deferred", case_id, reason=exc.reason, detail=exc.detail)
        result = Result("rejected", case_id, reason=exc.reason, detail=exc.detail)
        sender = _sender_of(item.data) if envelope is None else envelope.sender
        digest = envelope.digest if envelope else b""
        self.changes.rejections.append({
            "digest": digest, "msg_id": item.msg_id, "sender": sender, "case_id": case_id,
            "code": exc.reason.code, "detail": exc.detail[:500], "at": self.now})
        log.warning("rejected message %s from %s: %s", item.msg_id, sender, exc.en)
        self._remember(item, digest, case_id, result, [])
        if envelope is not None and envelope.kind != "rejection":
            # The sender is authenticated: tell it why, with a stable reason code.
            self.rejections.append((envelope.sender, envelope.case, b.Rejection(
                of=digest, code=exc.reason.code, zh=exc.reason.zh, en=exc.reason.en,
                detail=exc.detail[:500])))
        return result

    def _peer_rejection(self, item: Incoming, opened: Opened) -> Result:
        body = opened.body
        assert isinstance(body, b.Rejection)
        self.changes.rejections.append({
            "digest": body.of, "msg_id": item.msg_id, "sender": opened.envelope.sender,
            "case_id": opened.envelope.case, "code": body.code, "detail": f"peer: {body.en}",
            "at": self.now})
        result = Result("applied", opened.envelope.case)
        self._remember(item, opened.envelope.digest, opened.envelope.case, result, [])
        return result


def _materials_of(kind: str, body: Any) -> list[b.MaterialRef]:
    """The scanned materials a message hands over (those with a file to transfer)."""
    if kind in ("application", "supplement"):
        return [m for m in body.materials if m.object is not None]
    return []


def _sender_of(data: bytes) -> str | None:
    try:
        return decode_envelope(data).sender
    except ProtocolError:
        return None


def _receipt_row(receipt: Receipt) -> dict[str, Any]:
    return {"case_id": receipt.case, "actor": receipt.actor, "idx": receipt.index,
            "kind": receipt.kind, "at": receipt.at, "digest": receipt.digest,
            "receipt": receipt.canonical_bytes}


def _envelope_row(opened: Opened, direction: str, now: int, wire: bytes) -> dict[str, Any]:
    envelope = opened.envelope
    return {"digest": envelope.digest, "case_id": envelope.case, "direction": direction,
            "msg_id": envelope.id, "kind": envelope.kind, "peer": envelope.sender, "at": now,
            "wire": wire, "content_key": opened.content_key, "plaintext": opened.plaintext}

