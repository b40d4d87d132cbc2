"""多地联办: one application, one part per handling region, each with its own chain;
the joint case follows its parts and closes when every part has its outcome."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from config import parse_config
from node.app import Node
from node.engine import Command
from node.natsd import EmbeddedNats
from protocol import bodies as b
from protocol import decode
from protocol.joint import part_outcome, resolve, withdrawable
from protocol.routes import SignedRouteRefusal
from receipts import NodeKeys, verify_bundle
from receipts.routes import check_refusal
from routing.catalog_files import read_catalog_path, write_catalog_csv
from tests.api_token import HEADERS, HTTP
from tests.serving import serving, until

WINDOW, JINAN, CHENGDU = "410100", "370100", "510100"
HUKOU, PENSION = "0000107001", "0000120002"  # 户口迁移 (whole_case), 养老保险转移 (made part_only)
SAMPLES = Path(__file__).parent.parent / "config" / "catalogs"


# ---------------------------------------------------------------- the rule


@pytest.mark.parametrize(("policy", "outcomes", "state", "closed", "withdraw"), [
    ("whole_case", [None, None], "open", False, ()),
    ("whole_case", ["completed", None], "open", False, ()),
    ("whole_case", ["completed", "completed"], "completed", True, ()),
    ("whole_case", ["refused", None, None], "failed", False, (1, 2)),
    ("whole_case", ["refused", "withdrawn", "completed"], "failed", True, ()),
    ("part_only", ["refused", None], "open", False, ()),
    ("part_only", ["refused", "completed"], "partly_completed", True, ()),
    ("part_only", ["refused", "withdrawn"], "failed", True, ()),
])
def test_the_joint_case_follows_its_parts(policy: str, outcomes: list[str | None], state: str,
                                          closed: bool, withdraw: tuple[int, ...]) -> None:
    decided = resolve(policy, outcomes)
    assert (decided.state, decided.closed, decided.withdraw) == (state, closed, withdraw)


def test_a_part_keeps_its_outcome_once_reached() -> None:
    assert part_outcome("under_review") is None
    assert part_outcome("outcome_received") == "completed"
    assert part_outcome("archived", "refused") == "refused"  # archiving says nothing new
    assert withdrawable("under_review")
    assert not withdrawable("accepted")


# ---------------------------------------------------------------- live


def _catalog(base: Path, region: str) -> Path:
    """The region's sample catalog, with 养老保险转移 ending only its own part if refused."""
    entries = [e.model_copy(update={"joint_failure": "part_only"}) if e.basic_code == PENSION
               else e for e in read_catalog_path(SAMPLES / region, region)]
    write_catalog_csv(entries, base / "catalogs" / region)
    return base / "catalogs" / region


def _config(base: Path, region: str, peers: list[str]) -> Any:
    handling = region != WINDOW
    return parse_config({
        "region": region, "name": region, "data_dir": str(base / region), "http": HTTP,
        **({"catalog": str(_catalog(base, region))} if handling else {}),
        "departments": [{"kind": "desk", "name": "办理科室", "auto_conclude": True}],
        "peers": [{"region": p, "name": p, "public": str(base / p / "keys" / "public.json")}
                  for p in peers]}, base=base, environ={})


async def _decide(node: Node, case_id: str, decision: str) -> None:
    await until(lambda: (node.store.case_row(case_id) or {}).get("state") == "received",
                timeout=20)
    now = node.clock()
    if decision == "accept":
        case = node.engine.load_case(case_id)
        assert case is not None
        body: Any = b.Accept(doc_no=f"受理-{case_id}"[:50], accepted_at=now,
                             promised_date=case.promised_date_from(now), decided_by="王审核")
    else:
        body = b.Refuse(reason="申请人户籍不在本市。", legal_basis="《中华人民共和国行政许可法》第三十二条",
                        refused_at=now, decided_by="王审核")
    result = await node.command(Command(case_id, decision, body))
    assert result.outcome == "applied", result


async def _post(session: aiohttp.ClientSession, node: Any, path: str,
                payload: Any) -> tuple[int, Any]:
    async with session.post(f"{node.address}{path}", json=payload) as response:
        return response.status, await response.json()


async def _joint(session: aiohttp.ClientSession, node: Any, joint_id: str) -> Any:
    async with session.get(f"{node.address}/api/joints/{joint_id}") as response:
        assert response.status == 200
        return await response.json()


async def test_a_joint_application_fans_out_and_closes_as_its_catalog_entries_say(
        tmp_path: Path) -> None:
    regions = (WINDOW, JINAN, CHENGDU)
    for region in regions:
        NodeKeys.generate(region).save(tmp_path / region / "keys", valid_from=0)
    peers = {r: [p for p in regions if p != r] for r in regions}
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, _config(tmp_path, WINDOW, peers[WINDOW])) as window, \
            serving(server.url, _config(tmp_path, JINAN, peers[JINAN])) as jinan, \
            serving(server.url, _config(tmp_path, CHENGDU, peers[CHENGDU])) as chengdu, \
            aiohttp.ClientSession(headers=HEADERS) as session:
        await until(lambda: window.catalog.index.has_region(JINAN)
                    and window.catalog.index.has_region(CHENGDU))
        handlers = {JINAN: jinan, CHENGDU: chengdu}
        where = ["370102", "510104"]  # 历下区 and 锦江区: 迁出地 and 迁入地

        # 1. Both regions accept and conclude: every part has its outcome, the case closes.
        status, opened = await _post(session, window, "/api/joints",
                                     {"matter": HUKOU, "locations": where})
        assert status == 201, opened
        assert (opened["policy"], opened["state"]) == ("whole_case", "open")
        assert [p["handling"] for p in opened["parts"]] == [JINAN, CHENGDU]
        assert all(p["state"] == "sent" for p in opened["parts"])
        for part in opened["parts"]:
            await _decide(handlers[part["handling"]], part["case_id"], "accept")
        await until(lambda: (window.store.joint(opened["joint_id"]) or {}).get("closed_at")
                    is not None, timeout=20)
        done = await _joint(session, window, opened["joint_id"])
        assert (done["state"], done["state_zh"]) == ("completed", "全部办结")
        assert [p["outcome"] for p in done["parts"]] == ["completed", "completed"]
        # Each part has a chain of its own, and the handling side knows what it is part of.
        for part in done["parts"]:
            case_id, handler = part["case_id"], handlers[part["handling"]]
            bundle = window.store.receipts(case_id)
            assert bundle
            application = b.Application.model_validate(
                decode(handler.store.body(case_id, "application") or b""))
            assert application.joint is not None
            assert (application.joint.id, application.joint.regions) == (done["joint_id"],
                                                                        (JINAN, CHENGDU))
            report = verify_bundle(await _bundle(session, window, case_id))
            assert report.chains == {WINDOW: len(window.store.receipts(case_id, WINDOW)),
                                     part["handling"]: len(window.store.receipts(
                                         case_id, part["handling"]))}

        # 2. 户口迁移 (whole_case): 成都 refuses; the 济南 part, still under review, is
        # withdrawn at once, and the joint case fails and closes.
        status, opened = await _post(session, window, "/api/joints",
                                     {"matter": HUKOU, "locations": where})
        assert status == 201, opened
        jinan_part, chengdu_part = (p["case_id"] for p in opened["parts"])
        await until(lambda: (jinan.store.case_row(jinan_part) or {}).get("state") == "received",
                    timeout=20)
        await _decide(chengdu, chengdu_part, "refuse")
        await until(lambda: (window.store.joint(opened["joint_id"]) or {}).get("closed_at")
                    is not None, timeout=20)
        failed = await _joint(session, window, opened["joint_id"])
        assert failed["state"] == "failed"
        assert [p["outcome"] for p in failed["parts"]] == ["withdrawn", "refused"]
        assert (jinan.store.case_row(jinan_part) or {})["state"] == "withdrawn"

        # 3. 养老保险转移 (part_only): 成都 refuses its part, 济南's goes on to its end.
        status, opened = await _post(session, window, "/api/joints",
                                     {"matter": PENSION, "locations": where})
        assert status == 201, opened
        assert opened["policy"] == "part_only"
        jinan_part, chengdu_part = (p["case_id"] for p in opened["parts"])
        await _decide(chengdu, chengdu_part, "refuse")
        await until(lambda: (window.store.case_row(chengdu_part) or {}).get("state") == "refused",
                    timeout=20)
        assert (await _joint(session, window, opened["joint_id"]))["state"] == "open"
        await _decide(jinan, jinan_part, "accept")
        await until(lambda: (window.store.joint(opened["joint_id"]) or {}).get("closed_at")
                    is not None, timeout=20)
        partly = await _joint(session, window, opened["joint_id"])
        assert (partly["state"], partly["state_zh"]) == ("partly_completed", "部分办结")
        assert [p["outcome"] for p in partly["parts"]] == ["completed", "refused"]

        # No route for one of the places: nothing is collected, the refusal is signed.
        before = len(window.store.joints())
        status, reply = await _post(session, window, "/api/joints",
                                    {"matter": HUKOU, "locations": ["370102", "440305"]})
        assert (status, reply["error"]) == (422, "no_route"), reply
        signed = SignedRouteRefusal.model_validate(
            decode(base64.b64decode(reply["refusal"]["signed"])))
        assert check_refusal(signed, window.registry).locations == ("370102", "440305")
        assert len(window.store.joints()) == before
        for payload in ({"matter": HUKOU, "locations": ["370102"]},
                        {"matter": HUKOU, "locations": "370102"},
                        {"matter": HUKOU, "locations": ["370102", "370103"]}):
            status, reply = await _post(session, window, "/api/joints", payload)
            assert status in (400, 422), reply
            assert reply["zh"]
            assert reply["en"]
        async with session.get(f"{window.address}/api/joints/nothing-here") as response:
            assert response.status == 404


async def _bundle(session: aiohttp.ClientSession, node: Any, case_id: str) -> bytes:
    async with session.get(f"{node.address}/api/cases/{case_id}/bundle") as response:
        assert response.status == 200
        return await response.read()


async def test_parts_are_collected_in_one_batch_or_not_at_all(tmp_path: Path) -> None:
    from loopback import T0

    from node.engine import Engine, JointCollect
    from node.store import Store
    from protocol import WeekdayCalendar
    from protocol import examples as ex
    from receipts import KeyRegistry, Postmaster

    keys = NodeKeys.generate(WINDOW)
    registry = KeyRegistry()
    for node_keys in (keys, NodeKeys.generate(JINAN), NodeKeys.generate(CHENGDU)):
        registry.add_node(node_keys, valid_from=0)
    store = Store(tmp_path / "node.db")
    store.start()
    engine = Engine(region=WINDOW, postmaster=Postmaster(keys, registry), store=store,
                    calendar=WeekdayCalendar())
    try:
        application = ex.application(T0, scans=False)
        changes, [one] = engine.process([Command(None, "collect_joint", JointCollect(
            matter=HUKOU, policy="whole_case", parts=((JINAN, application),)))], T0)
        assert one.outcome == "refused"
        assert not changes.cases
        assert not changes.joints
        # The second part is not an application: the first, valid, is not collected either.
        changes, [bad] = engine.process([Command(None, "collect_joint", JointCollect(
            matter=HUKOU, policy="whole_case",
            parts=((JINAN, application), (CHENGDU, ex.withdrawal(T0)))))], T0)  # type: ignore[arg-type]
        assert bad.outcome == "refused"
        assert not changes.cases
        assert not changes.joints
        assert not changes.bodies
        changes, [both] = engine.process([Command(None, "collect_joint", JointCollect(
            matter=HUKOU, policy="whole_case",
            parts=((JINAN, application), (CHENGDU, application))))], T0)
        assert both.outcome == "applied"
        assert [(c["case_id"], c["state"]) for c in changes.cases] == [
            (f"{both.case_id}.1", "sent"), (f"{both.case_id}.2", "sent")]  # collected and sent
        assert [subject for _, subject, _, _ in changes.outbox] == [
            f"tb.{JINAN}.in.application", f"tb.{CHENGDU}.in.application"]
        [joint] = changes.joints
        await store.commit(changes)
        stored = store.joint(joint["joint_id"])
        assert stored is not None
        assert (stored["state"], stored["outcomes"]) == ("open", [None, None])
        assert stored["parts"] == [(f"{both.case_id}.1", JINAN), (f"{both.case_id}.2", CHENGDU)]
    finally:
        await store.close()
