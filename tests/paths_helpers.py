"""Shared helpers for the end-to-end path tests (``test_paths``, ``test_paths_races``).

``Driver`` runs a loopback ``Pair`` with a node's local-event-then-pump rhythm,
optionally delivering every message twice and checking the second copy is a
duplicate; ``run_to_processing`` and ``run_to_end`` walk a case through the usual path.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from loopback import T0, Delivered, Pair, Side, example_body

from protocol import Step, decode_envelope
from protocol import bodies as b
from protocol import examples as ex

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
