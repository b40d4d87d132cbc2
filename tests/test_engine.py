"""The engine against a real store, without NATS: what a batch writes and sends."""

from __future__ import annotations

from pathlib import Path

import pytest
from loopback import T0

from node.engine import Command, Engine
from node.store import Store
from protocol import WeekdayCalendar
from protocol import examples as ex
from receipts import KeyRegistry, NodeKeys, Postmaster


@pytest.fixture
def keys() -> dict[str, NodeKeys]:
    return {region: NodeKeys.generate(region) for region in (ex.COLLECTING, ex.HANDLING)}


def _postmaster(keys: dict[str, NodeKeys], region: str) -> Postmaster:
    registry = KeyRegistry()
    for node_keys in keys.values():
        registry.add_node(node_keys, valid_from=T0 - ex.DAY)
    return Postmaster(keys[region], registry)


async def test_letters_carry_the_receipts_that_were_committed(tmp_path: Path,
                                                              keys: dict[str, NodeKeys]) -> None:
    store = Store(tmp_path / "node.db")
    store.start()
    engine = Engine(region=ex.COLLECTING, postmaster=_postmaster(keys, ex.COLLECTING),
                    store=store, calendar=WeekdayCalendar())
    try:
        changes, [collected] = engine.process(
            [Command(None, "collect", ex.application(T0, scans=False), peer=ex.HANDLING)], T0)
        await store.commit(changes)
        engine.confirm()
        case_id = collected.case_id
        assert case_id is not None
        # A submission whose commit failed (never confirmed), then the one that lands.
        engine.process([Command(case_id, "submit")], T0 + 1)
        changes, [submitted] = engine.process([Command(case_id, "submit")], T0 + 2)
        await store.commit(changes)
        engine.confirm()
        assert submitted.outcome == "applied"
        [(_, _, wire, _)] = changes.outbox
        opened = _postmaster(keys, ex.HANDLING).open(wire, T0 + 3)
        stored = store.receipts(case_id, ex.COLLECTING)
        assert [r.index for r in opened.receipts] == [0, 1]
        assert [r.canonical_bytes for r in opened.receipts] == stored
        assert opened.receipts[1].at == T0 + 2  # made by the batch that was committed
    finally:
        await store.close()


async def test_a_relay_passes_on_what_it_relays_for_and_refuses_the_rest_signed(
        tmp_path: Path, keys: dict[str, NodeKeys]) -> None:
    """A hub node (经由) gets messages for another region: it checks the sender's
    signature and passes the same bytes on, unread, to the region it relays for; for a
    region it does not relay for, it answers the sender with a signed ``no_route``."""
    from node.engine import Incoming
    from protocol import Reason
    from routing.router import MemberPath, Router

    hub = "370000"
    keys = {**keys, hub: NodeKeys.generate(hub)}
    sender = Engine(region=ex.COLLECTING, postmaster=_postmaster(keys, ex.COLLECTING),
                    store=Store(tmp_path / "sender.db"), calendar=WeekdayCalendar())
    sender.store.start()
    routes = Router(hub, lambda basic: [])
    routes.set_members({ex.COLLECTING: MemberPath("joined"),
                        ex.HANDLING: MemberPath("joined", relay=hub), hub: MemberPath("joined")})
    store = Store(tmp_path / "hub.db")
    store.start()
    relay = Engine(region=hub, postmaster=_postmaster(keys, hub), store=store,
                   calendar=WeekdayCalendar(), router=routes)
    try:
        async def send(command: Command, now: int) -> tuple[str, bytes]:
            changes, [result] = sender.process([command], now)
            assert result.outcome == "applied", result
            await sender.store.commit(changes)
            sender.confirm()
            [(msg_id, _, wire, _)] = changes.outbox or [("", "", b"", 0)]
            return msg_id, wire

        await send(Command("case-0001-relay", "collect", ex.application(T0, scans=False),
                           peer=ex.HANDLING), T0)
        msg_id, wire = await send(Command("case-0001-relay", "submit"), T0 + 1)
        relayed, [result] = relay.process([Incoming(msg_id, wire)], T0 + 2)
        await store.commit(relayed)
        assert result.outcome == "relayed"
        assert relayed.outbox == [(msg_id, f"tb.{ex.HANDLING}.in.application", wire, T0 + 2)]
        assert (relayed.cases, relayed.envelopes) == ([], [])  # it holds no case, reads nothing
        again, [repeat] = relay.process([Incoming(msg_id, wire)], T0 + 3)
        assert (repeat.outcome, again.outbox) == ("duplicate", [])

        # The hub stops relaying for the handling region: the sender hears why, signed.
        routes.set_members({ex.COLLECTING: MemberPath("joined"), ex.HANDLING: MemberPath("joined"),
                            hub: MemberPath("joined")})
        msg_id, wire = await send(Command("case-0001-relay", "withdraw", ex.withdrawal(T0 + 4)),
                                  T0 + 4)
        refused, [result] = relay.process([Incoming(msg_id, wire)], T0 + 5)
        assert (result.outcome, result.reason) == ("rejected", Reason.NO_ROUTE)
        [(_, subject, answer, _)] = refused.outbox
        assert subject == f"tb.{ex.COLLECTING}.in.rejection"
        opened = _postmaster(keys, ex.COLLECTING).open(answer, T0 + 6)
        assert (opened.envelope.sender, opened.body.code) == (hub, "no_route")
    finally:
        await store.close()
        await sender.store.close()


async def test_a_suspended_members_new_message_is_refused_as_not_a_member(
        tmp_path: Path, keys: dict[str, NodeKeys]) -> None:
    from node.engine import Incoming
    from protocol import Reason
    from routing.router import MemberPath, Router

    sender = Engine(region=ex.COLLECTING, postmaster=_postmaster(keys, ex.COLLECTING),
                    store=Store(tmp_path / "sender.db"), calendar=WeekdayCalendar())
    postmaster = _postmaster(keys, ex.HANDLING)
    postmaster.registry.revoke(keys[ex.COLLECTING].sign_key_id, T0)  # suspended at T0
    routes = Router(ex.HANDLING, lambda basic: [])
    routes.set_members({ex.COLLECTING: MemberPath("suspended"), ex.HANDLING: MemberPath("joined")})
    receiver = Engine(region=ex.HANDLING, postmaster=postmaster, store=Store(tmp_path / "r.db"),
                      calendar=WeekdayCalendar(), router=routes)
    for engine in (sender, receiver):
        engine.store.start()
    try:
        changes, _ = sender.process(
            [Command("case-0002-suspended", "collect", ex.application(T0, scans=False),
                     peer=ex.HANDLING)], T0 + 1)
        await sender.store.commit(changes)
        sender.confirm()
        changes, _ = sender.process([Command("case-0002-suspended", "submit")], T0 + 2)
        [(msg_id, _, wire, _)] = changes.outbox
        _, [refused] = receiver.process([Incoming(msg_id, wire)], T0 + 3)
        assert (refused.outcome, refused.reason) == ("rejected", Reason.NOT_A_MEMBER)
        assert "suspended" in refused.detail
    finally:
        for engine in (sender, receiver):
            await engine.store.close()


async def test_a_step_to_a_partner_that_cannot_be_written_to_is_refused_alone(
        tmp_path: Path, keys: dict[str, NodeKeys]) -> None:
    """Sealing to a suspended partner is impossible: its step is refused, and the other
    inputs of the batch go through."""
    from protocol import Reason

    postmaster = _postmaster(keys, ex.COLLECTING)
    engine = Engine(region=ex.COLLECTING, postmaster=postmaster, store=Store(tmp_path / "n.db"),
                    calendar=WeekdayCalendar())
    engine.store.start()
    try:
        changes, _ = engine.process([Command("case-0003-a", "collect", ex.application(
            T0, scans=False), peer=ex.HANDLING)], T0)
        await engine.store.commit(changes)
        engine.confirm()
        postmaster.registry.revoke(keys[ex.HANDLING].encrypt_key_id, T0 + 1)  # suspended
        changes, [refused, other] = engine.process([
            Command("case-0003-a", "submit"),
            Command("case-0003-b", "collect", ex.application(T0, scans=False), peer=ex.HANDLING),
        ], T0 + 2)
        assert (refused.outcome, refused.reason) == ("refused", Reason.NOT_A_MEMBER)
        assert other.outcome == "applied"
        assert {c["case_id"]: c["state"] for c in changes.cases} == {
            "case-0003-a": "collected", "case-0003-b": "collected"}  # a: as it was
        assert changes.outbox == []
    finally:
        await engine.store.close()
