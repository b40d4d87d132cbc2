"""Both sides converge whatever the network does.

Hypothesis draws a random schedule: legal local acts of either side (by the
transition table, with example bodies), timers firing as days pass, and a network
that delivers in any order, duplicates and drops (a dropped message stays with its
sender and is retransmitted later: at-least-once). At the end everything is
retransmitted until nothing more applies, and both sides must agree.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import hypothesis
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import T0, Delivered, Pair, Side, example_body

from protocol import examples as ex
from protocol.states import LOCAL_EVENTS, TIMER_EVENTS, TRANSITIONS

CID = "CASE-CONVERGE-0001"
STEP_MS = 3_600_017  # an hour and a bit per act: never on a whole second, so never a timer instant


#: After the network is drained: the collecting states compatible with each handling
#: state (``None``: the handling side never had the case). Derived from the table:
#: every message is applied, so neither side waits for anything in flight; the only
#: freedom left is what each side did locally after its last message.
AGREE: dict[str | None, set[str]] = {
    # only the window's own acts: collect, 补正 at the window, refusal, withdrawal
    None: {"collected", "awaiting_materials", "supplied_at_window", "refused", "withdrawn",
           "archived"},
    "received": {"under_review"},
    "supplement_requested": {"supplement_requested"},
    "supplied": {"supplied"},
    "refused": {"refused", "archived"},
    "withdrawn": {"withdrawn", "archived"},
    "forwarding": {"accepted"},
    "dead_letter": {"accepted"},
    "processing": {"processing"},
    "suspended": {"suspended"},
    "outcome_acknowledged": {"outcome_received"},
    "delivered": {"delivered", "archived"},
    "evaluated": {"evaluated", "archived"},
    "archived": {"refused", "withdrawn", "delivered", "evaluated", "archived"},
    # "new" (application never applied) and "concluded" (outcome never acknowledged)
    # cannot be final once every message is applied
}

#: Which way the case went, read off a side's own receipts.
BRANCH_KINDS = {
    "accepted": {"accepted", "accepted_at_window", "deemed_accepted", "received_accepted"},
    "refused": {"refused"},
    "withdrawn": {"withdrawn"},
    "window_refused": {"refused_at_window"},
}


def branch(side: Side) -> str | None:
    kinds = set(side.kinds(CID)) if CID in side.chains else set()
    found = {name for name, names in BRANCH_KINDS.items() if kinds & names}
    assert len(found) <= 1, kinds
    return found.pop() if found else None


@dataclasses.dataclass
class Network:
    pair: Pair
    flight: list[tuple[Side, bytes]] = dataclasses.field(default_factory=list)
    sent: dict[str, list[bytes]] = dataclasses.field(default_factory=dict)
    outcomes: list[Delivered] = dataclasses.field(default_factory=list)

    def peer(self, side: Side) -> Side:
        return self.pair.handling if side is self.pair.collecting else self.pair.collecting

    def collect(self) -> None:
        """Move what both sides queued onto the wire, remembering it for retransmission."""
        for sender in (self.pair.collecting, self.pair.handling):
            log = self.sent.setdefault(sender.region, [])
            for wire in sender.take_outbox():
                self.flight.append((self.peer(sender), wire))
                if wire not in log:
                    log.append(wire)

    def deliver(self, receiver: Side, wire: bytes, now: int) -> Delivered:
        result = receiver.deliver(wire, now)
        self.outcomes.append(result)
        assert result.outcome != "rejected", result
        if result.outcome == "deferred":
            self.flight.append((receiver, wire))  # early: back in flight for later
        self.collect()
        return result

    def retransmissions(self) -> list[tuple[Side, bytes]]:
        return [(self.peer(sender), wire)
                for sender in (self.pair.collecting, self.pair.handling)
                for wire in self.sent.get(sender.region, [])]

    def drain(self, now: int) -> None:
        """Deliver everything, retransmitting every message ever sent, until nothing applies."""
        for _ in range(50):
            self.collect()
            batch = self.flight + self.retransmissions()
            self.flight = []
            applied = False
            for receiver, wire in batch:
                applied |= self.deliver(receiver, wire, now).outcome == "applied"
            if not applied:
                return
        raise AssertionError("the network does not quiesce")


#: Acts that turn a case off the straight road (to 办结, 送达, 评价, 归档). Each schedule
#: draws which of them it may use, so some schedules go far and shrinking heads home.
DIVERTING = ("window_supplement", "window_refuse", "withdraw", "request_supplement", "refuse",
             "forward_exhausted", "suspend", "evaluate", "archive")


def local_choices(pair: Pair, model: str, diverting: frozenset[str]) -> list[tuple[Side, str]]:
    choices = []
    for side in (pair.collecting, pair.handling):
        case = side.cases.get(CID)
        if case is None:
            continue
        for event in sorted(LOCAL_EVENTS[case.role]):
            if (case.role, case.state, event) not in TRANSITIONS or event in TIMER_EVENTS.values():
                continue
            if event in ("submit", "submit_decided") and event != (
                    "submit_decided" if model == "collecting_decides" else "submit"):
                continue
            if event.startswith("window_") and model != "collecting_decides":
                continue  # only that model lets the window decide
            if event in DIVERTING and event not in diverting and not (
                    event == "archive" and case.state in ("refused", "withdrawn")):
                continue
            choices.append((side, event))
    return choices


def available_acts(pair: Pair, net: Network, choices: list[tuple[Side, str]]) -> list[str]:
    """What may happen next, weighted: acts of the sides and of the network."""
    acts = ["local"] * 10 if choices else []
    if net.flight:
        acts += ["deliver"] * 10 + ["duplicate", "drop", "drop"]
    if net.retransmissions():
        acts.append("retransmit")
    if any(case.timers for side in (pair.collecting, pair.handling) for case in side.cases.values()):
        acts.append("time")
    return acts


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_random_schedules_converge(data: st.DataObject) -> None:
    model = data.draw(st.sampled_from(["handling_decides", "handling_decides", "collecting_decides"]),
                      label="model")
    diverting = data.draw(st.frozensets(st.sampled_from(DIVERTING), max_size=3), label="diverting")
    pair = Pair(acceptance=model)
    net = Network(pair)
    application = ex.application(T0, window_decision=ex.accept(T0) if model == "collecting_decides"
                                 else None)
    pair.collecting.local(CID, "collect", application, T0)
    now = T0
    for _ in range(data.draw(st.integers(20, 100), label="acts")):
        now += STEP_MS
        choices = local_choices(pair, model, diverting)
        acts = available_acts(pair, net, choices)
        if not acts:
            break  # nothing left to do but wait for nothing
        act = data.draw(st.sampled_from(acts))
        if act == "local":
            role, event = data.draw(st.sampled_from([(s.cases[CID].role, e) for s, e in choices]))
            side = pair.collecting if role == "collecting" else pair.handling
            body: Any = example_body(side.cases[CID], event, now, application)
            side.local(CID, event, body, now)
            net.collect()
        elif act == "time":
            now += data.draw(st.integers(1, 16)) * ex.DAY
            for side in (pair.collecting, pair.handling):
                side.fire_timers(now, at=now)
            net.collect()
        elif act == "retransmit":
            pending = net.retransmissions()
            net.flight.append(pending[data.draw(st.integers(0, len(pending) - 1))])
        else:
            i = data.draw(st.integers(0, len(net.flight) - 1))
            if act == "deliver":
                receiver, wire = net.flight.pop(i)
                net.deliver(receiver, wire, now)
            elif act == "duplicate":
                net.flight.append(net.flight[i])
            else:  # drop: lost on the wire, still with its sender
                net.flight.pop(i)

    net.drain(now + STEP_MS)
    h_case = pair.handling.cases.get(CID)
    hypothesis.event(f"final {pair.collecting.cases[CID].state}/{h_case.state if h_case else None}")
    check_converged(pair, net)


def check_converged(pair: Pair, net: Network) -> None:
    c, h = pair.collecting, pair.handling
    assert all(result.outcome != "rejected" for result in net.outcomes)
    c_case, h_case = c.cases[CID], h.cases.get(CID)
    h_state = h_case.state if h_case is not None else None
    assert c_case.state in AGREE.get(h_state, set()), (c_case.state, h_state)
    # the same decision on both sides (the window's own acts never reach the handling side)
    if h_case is None:
        assert branch(c) in (None, "withdrawn", "window_refused")
    else:
        assert branch(c) == branch(h)
    # each holds every receipt the other sent, and those are a prefix of the other's chain
    for holder, owner in ((c, h), (h, c)):
        owner_case = owner.cases.get(CID)
        chain = owner.chains.get(CID, [])
        held = holder.theirs.get(CID, [])
        assert [(r.digest, r.sig) for r in held] == [(r.digest, r.sig) for r in chain[:len(held)]]
        sent = owner_case.sent_index + 1 if owner_case is not None else 0
        assert len(held) == sent
        if owner_case is not None:
            holder_case = holder.cases.get(CID)
            assert (holder_case.their_index if holder_case else -1) == owner_case.sent_index
    c.verify(CID)
    if h_case is not None:
        h.verify(CID)
    # quiescent: nothing retransmitted applies any more
    for receiver, wire in net.retransmissions():
        assert receiver.deliver(wire, T0 + 400 * ex.DAY).outcome == "duplicate"
