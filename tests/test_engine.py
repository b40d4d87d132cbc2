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
