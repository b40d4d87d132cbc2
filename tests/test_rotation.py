"""Key rotation at the node (docs/protocol.md §13.1): the key ring on disk, the switch
while the node runs, the overlap, the catalog signed again, and the end of the overlap.

Unit tests drive ``KeyRing`` and ``Postmaster`` directly; the live test runs a real
nats-server, a convener (the collecting window) and a handling region that rotates
its keys with the real command line, cases spanning the switch, and a newcomer that
joins after the overlap ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner
from loopback import T0
from receipts_helpers import remote_error

from config import parse_config
from node.app import Node, wall_clock_ms
from node.cli import main
from node.engine import Command
from node.natsd import EmbeddedNats
from protocol import Reason
from protocol import bodies as b
from protocol import examples as ex
from protocol.catalog import CatalogEntry
from protocol.circle import Contact
from protocol.codec import decode
from protocol.wire import decode_envelope, receipt_from_fields
from receipts import KeyFileError, KeyRecord, KeyRegistry, Letter, NodeKeys, Postmaster, verify_bundle
from receipts.keys import SETTLE_MS, KeyRing
from routing.catalog_files import read_catalog_path, write_catalog_csv
from tests.api_token import HEADERS, HTTP, run_tongban
from tests.serving import serving, until

C, H, NEWCOMER = "370100", "410100", "510100"  # the convener collects; H rotates
DAY = ex.DAY

# ------------------------------------------------------------------ the key ring on disk


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _records(pair: NodeKeys, valid_from: int, valid_until: int | None = None) -> list[KeyRecord]:
    registry = KeyRegistry()
    registry.add_node(pair, valid_from, valid_until)
    return registry.records()


def test_rotate_prepares_the_next_pair_beside_the_current_one(tmp_path: Path) -> None:
    first = NodeKeys.generate(H)
    first.save(tmp_path, valid_from=T0)
    before = {name: (tmp_path / name).read_bytes() for name in ("sign.pem", "encrypt.pem")}
    prepared = KeyRing.prepare(tmp_path, valid_from=T0 + DAY)
    for name in ("sign.pem", "encrypt.pem"):
        assert _mode(tmp_path / "next" / name) == 0o600
        assert (tmp_path / name).read_bytes() == before[name]  # the current pair is untouched
    public = json.loads((tmp_path / "next" / "public.json").read_text())
    assert (public["region"], public["sign_key"], public["valid_from"]) == (
        H, prepared.sign_key_id, T0 + DAY)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers
    ring = KeyRing.load(tmp_path, H)
    assert ring.sign_key_id == first.sign_key_id  # not in use before the registry lists it
    assert ring.prepared is not None
    assert ring.prepared.sign_key_id == prepared.sign_key_id
    assert ring.decryption_key(prepared.encrypt_key_id) is not None


def test_rotate_refuses_a_second_prepared_pair_and_a_folder_without_keys(tmp_path: Path) -> None:
    NodeKeys.generate(H).save(tmp_path, valid_from=T0)
    prepared = KeyRing.prepare(tmp_path, valid_from=T0)
    with pytest.raises(KeyFileError, match="already holds prepared keys") as info:
        KeyRing.prepare(tmp_path, valid_from=T0)
    assert "已有待启用的新密钥" in str(info.value)
    assert json.loads((tmp_path / "next" / "public.json").read_text())["sign_key"] == \
        prepared.sign_key_id  # never overwritten
    with pytest.raises(KeyFileError, match="tongban keys new") as empty:
        KeyRing.prepare(tmp_path / "nowhere", valid_from=T0)
    assert "公钥文件不存在" in str(empty.value)


@pytest.mark.parametrize(("damage", "english", "chinese"), [
    (lambda p: p.write_bytes(b"not a key"), "not an unencrypted PKCS#8 PEM key", "密钥文件格式错误"),
    (lambda p: p.chmod(0o644), "chmod 600", "私钥文件权限过宽"),
    (lambda p: p.unlink(), "does not exist", "密钥文件不存在"),
])
def test_a_bad_prepared_key_file_is_a_clear_error(
        tmp_path: Path, damage: Callable[[Path], Any], english: str, chinese: str) -> None:
    NodeKeys.generate(H).save(tmp_path, valid_from=T0)
    KeyRing.prepare(tmp_path, valid_from=T0)
    damage(tmp_path / "next" / "encrypt.pem")
    with pytest.raises(KeyFileError, match=english) as info:
        KeyRing.load(tmp_path, H)
    assert chinese in str(info.value)
    assert str(tmp_path / "next" / "encrypt.pem") in str(info.value)


def test_the_ring_switches_when_listed_and_retires_after_the_overlap(tmp_path: Path) -> None:
    first = NodeKeys.generate(H)
    first.save(tmp_path, valid_from=T0)
    ring = KeyRing.load(tmp_path, H)
    switched: list[str] = []
    ring.observers.append(lambda pair: switched.append(pair.sign_key_id))
    unlisted = ring.update(_records(first, T0), T0 + DAY)
    assert unlisted == []  # nothing prepared: nothing to do
    second = KeyRing.prepare(tmp_path, valid_from=T0 + DAY)
    ring.refresh()  # written while the node runs
    approved, overlap_end = T0 + 2 * DAY, T0 + 9 * DAY
    assert ring.update(_records(first, T0), approved) == []  # not listed yet: no switch
    assert ring.sign_key_id == first.sign_key_id
    listed = _records(first, T0, overlap_end) + _records(second, approved)
    assert ring.update(listed, approved) == []  # partners may not hold that registry yet
    done = ring.update(listed, approved + SETTLE_MS)
    assert any(second.sign_key_id in line for line in done)
    assert (ring.sign_key_id, ring.generation, switched) == (second.sign_key_id, 2,
                                                             [second.sign_key_id])
    assert not (tmp_path / "next").exists()
    assert (tmp_path / "2" / "sign.pem").exists()
    assert ring.signer.key == second.sign_key_id
    assert ring.decryption_key(first.encrypt_key_id) is not None  # the overlap: both open
    assert ring.signer_for(first.sign_key_id) is not None  # cases begun under the first key
    assert KeyRing.load(tmp_path, H).sign_key_id == second.sign_key_id  # a restart: the same
    # The overlap ended, but messages may wait in the inbox: kept for the grace period.
    assert ring.update(listed, overlap_end + DAY) == []
    done = ring.update(listed, overlap_end + 7 * DAY)
    assert any("retired" in line for line in done)
    assert ring.decryption_key(first.encrypt_key_id) is None
    assert ring.signer_for(first.sign_key_id) is None
    assert not (tmp_path / "sign.pem").exists()
    assert _mode(tmp_path / "retired" / "1" / "sign.pem") == 0o600
    reloaded = KeyRing.load(tmp_path, H)
    assert [p.sign_key_id for p in reloaded.held()] == [second.sign_key_id]
    third = KeyRing.prepare(tmp_path, valid_from=overlap_end)  # the region: from 2/public.json
    assert json.loads((tmp_path / "next" / "public.json").read_text())["region"] == H
    reloaded.refresh()
    reloaded.update(listed + _records(third, overlap_end + 7 * DAY),
                    overlap_end + 7 * DAY + SETTLE_MS)
    assert (reloaded.generation, reloaded.sign_key_id) == (3, third.sign_key_id)


def test_an_interrupted_retirement_is_finished_at_load(tmp_path: Path) -> None:
    first = NodeKeys.generate(H)
    first.save(tmp_path, valid_from=T0)
    KeyRing.prepare(tmp_path, valid_from=T0)
    (tmp_path / "next").rename(tmp_path / "2")  # switched over earlier
    (tmp_path / "retired" / "1").mkdir(parents=True)
    (tmp_path / "sign.pem").rename(tmp_path / "retired" / "1" / "sign.pem")  # then stopped
    ring = KeyRing.load(tmp_path, H)
    assert len(ring.held()) == 1
    assert sorted(p.name for p in (tmp_path / "retired" / "1").iterdir()) == [
        "encrypt.pem", "public.json", "sign.pem"]
    assert not (tmp_path / "encrypt.pem").exists()


def test_keys_rotate_on_the_command_line(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(main, ["keys", "new", "--region", H, "--out", str(tmp_path)])
    assert made.exit_code == 0, made.output
    rotated = runner.invoke(main, ["keys", "rotate", "--dir", str(tmp_path)])
    assert rotated.exit_code == 0, rotated.output
    next_key = json.loads((tmp_path / "next" / "public.json").read_text())["sign_key"]
    assert f"--key {next_key}" in rotated.output
    again = runner.invoke(main, ["keys", "rotate", "--dir", str(tmp_path)])
    assert again.exit_code == 2
    assert "无法准备新密钥" in again.output
    assert "already holds prepared keys" in again.output


# ------------------------------------------------------------------ the postmaster


def test_the_postmaster_opens_what_was_sealed_to_a_kept_key(tmp_path: Path) -> None:
    sender = NodeKeys.generate(C)
    first = NodeKeys.generate(H)
    first.save(tmp_path, valid_from=T0)
    second = KeyRing.prepare(tmp_path, valid_from=T0)
    ring = KeyRing.load(tmp_path, H)
    before = KeyRegistry()
    before.add_node(sender, T0)
    before.add_node(first, T0)
    letter = Letter(id=f"{C}-000000000001", kind="rejection", recipient=H, case=f"{C}-case-1",
                    seq=1, sent_at=T0 + DAY,
                    body=b.Rejection(of=bytes(32), code="invalid_field", zh="字段有误",
                                     en="a field is invalid"), receipts=())
    [old] = Postmaster(sender, before).seal([letter])  # sealed before the switch
    assert old.envelope.enc.to == first.encrypt_key_id
    after = KeyRegistry([*before.records(), *_records(second, T0 + DAY)])
    ours = Postmaster(ring, after)
    ring.update(after.records(), T0 + DAY + SETTLE_MS)
    assert ours.signer.key == second.sign_key_id
    assert ours.open(old.wire, T0 + DAY).body == letter.body  # the overlap
    [new] = Postmaster(sender, after).seal([letter])
    assert new.envelope.enc.to == second.encrypt_key_id  # senders take the newest key
    assert ours.open(new.wire, T0 + DAY).body == letter.body
    ring.update([*after.records(), *_records(first, T0, T0 + 2 * DAY)], T0 + 10 * DAY)
    with remote_error(Reason.DECRYPTION_FAILED):  # retired: a message sealed to it is lost
        ours.open(old.wire, T0 + 10 * DAY)


# ------------------------------------------------------------------ live


def _config(base: Path, region: str, catalog: Path | None = None) -> Any:
    return parse_config({
        "region": region, "name": region, "data_dir": str(base / region), "http": HTTP,
        **({"catalog": str(catalog)} if catalog else {}),
        "circle": {"id": "huanghe-2026", "convener": C, "rotation_overlap_days": 1,
                   "anchor": str(base / C / "keys" / "public.json")}}, base=base, environ={})


async def _tongban(*args: str) -> str:
    code, out, err = await run_tongban(*args)
    assert code == 0, err + out
    return out


def _state(node: Node, case_id: str) -> str | None:
    return (node.store.case_row(case_id) or {}).get("state")


async def _send_case(window: Node, handling: str, window_no: str) -> str:
    application = window.catalog.sample_application(handling, window.clock(), window_no)
    collected = await window.command(Command(None, "collect", application, peer=handling))
    assert collected.case_id is not None
    await window.command(Command(collected.case_id, "submit"))
    return collected.case_id


async def _accept(node: Node, case_id: str) -> None:
    case = node.engine.load_case(case_id)
    assert case is not None
    now = node.clock()
    result = await node.command(Command(case_id, "accept", b.Accept(
        doc_no=f"受理-{case_id}"[:50], accepted_at=now, promised_date=case.promised_date_from(now),
        decided_by="审核员")))
    assert result.outcome == "applied", result


def _receipts(node: Node, case_id: str, actor: str) -> list[Any]:
    return [receipt_from_fields(decode(raw)) for raw in node.store.receipts(case_id, actor)]


def _sealed_to(node: Node, case_id: str) -> str:
    """The encryption key the first envelope of a case was sealed to."""
    wire, _, _ = node.store.envelopes(case_id)[0]
    return decode_envelope(wire).enc.to


async def test_a_member_rotates_its_keys_while_cases_and_catalog_go_on(tmp_path: Path) -> None:
    skew = [0]

    def clock() -> int:
        return wall_clock_ms() + skew[0]

    entries: list[CatalogEntry] = read_catalog_path(
        Path(__file__).parent.parent / "config" / "catalogs" / H, H)
    proxy = [e for e in entries if "proxy" in e.modes and e.acceptance == "handling_decides"]
    write_catalog_csv(proxy[:3], tmp_path / "catalog")
    first = {region: NodeKeys.generate(region) for region in (C, H, NEWCOMER)}
    for region, pair in first.items():
        pair.save(tmp_path / region / "keys", valid_from=0)
    keys_dir = tmp_path / H / "keys"
    async with EmbeddedNats(tmp_path / "nats") as server, contextlib.AsyncExitStack() as stack, \
                contextlib.AsyncExitStack() as first_run:
        window = await stack.enter_async_context(
            serving(server.url, _config(tmp_path, C), clock=clock))
        handling = await first_run.enter_async_context(
            serving(server.url, _config(tmp_path, H, tmp_path / "catalog"), clock=clock))
        assert window.circle is not None
        assert handling.circle is not None
        await handling.circle.request_join(Contact(name="值班员"))
        await until(lambda: H in window.circle.requests)  # type: ignore[union-attr]
        await window.circle.approve(H, first[H].sign_key_id)
        await until(lambda: window.catalog.index.has_region(H))  # signed with the first key
        before = await _send_case(window, H, "RT-1")  # spans the rotation
        await until(lambda: _state(handling, before) == "received")

        # The operator prepares new keys and asks, with the real command line.
        await _tongban("keys", "rotate", "--dir", str(keys_dir))
        new = NodeKeys.load(keys_dir / "next", H)
        said = await _tongban("circle", "rotate", "--contact-name", "值班员", "--node",
                              handling.address)  # type: ignore[attr-defined]
        assert new.sign_key_id in said
        await until(lambda: window.circle.requests.get(H) is not None  # type: ignore[union-attr]
                    and window.circle.requests[H].sign_key.key == new.sign_key_id)
        assert handling.keys.sign_key_id == first[H].sign_key_id  # not approved yet
        await first_run.aclose()  # the handling node stops: what comes now waits in its inbox
        published = window.counts["published"]
        sealed_to_old = await _send_case(window, H, "RT-2")
        await until(lambda: window.counts["published"] > published)
        assert _sealed_to(window, sealed_to_old) == first[H].encrypt_key_id
        approved = await _tongban("circle", "approve", H, "--key", new.sign_key_id, "--node",
                                  window.address)  # type: ignore[attr-defined]
        assert "已同意" in approved
        sealed_to_new = await _send_case(window, H, "RT-3")
        assert _sealed_to(window, sealed_to_new) == new.encrypt_key_id

        # It starts again, takes in the registry, switches once every partner holds it
        # (a minute later), and opens both.
        handling = await stack.enter_async_context(
            serving(server.url, _config(tmp_path, H, tmp_path / "catalog"), clock=clock))
        await asyncio.sleep(1.0)
        assert handling.keys.sign_key_id == first[H].sign_key_id  # not settled yet
        skew[0] += SETTLE_MS
        await until(lambda: handling.keys.sign_key_id == new.sign_key_id, timeout=15)
        assert (keys_dir / "2" / "sign.pem").exists()
        assert not (keys_dir / "next").exists()
        for case_id in (sealed_to_old, sealed_to_new):
            await until(lambda c=case_id: _state(handling, c) == "received")
        await _accept(handling, sealed_to_new)
        await _accept(handling, before)
        for case_id in (sealed_to_new, before):
            await until(lambda c=case_id: _state(window, c) in ("accepted", "processing"))
        assert window.store.rejections() == []
        assert handling.store.rejections() == []
        # New receipts: the new key; the old ones still verify, as of their time.
        fresh = _receipts(window, sealed_to_new, H)  # 签收 before the switch, 受理 after
        assert fresh[-1].key == new.sign_key_id
        assert {r.key for r in fresh} <= {first[H].sign_key_id, new.sign_key_id}
        spanning = _receipts(window, before, H)
        assert spanning[0].key == first[H].sign_key_id
        for receipt in fresh + spanning:
            assert window.registry.signing_key(receipt.key, H, receipt.at)
        # The evidence bundle of the case that spans the switch verifies.
        async with aiohttp.ClientSession(headers=HEADERS) as http:
            address = handling.address  # type: ignore[attr-defined]
            async with http.get(f"{address}/api/cases/{before}/bundle") as response:
                assert response.status == 200
                bundle = await response.read()
        report = verify_bundle(bundle)
        assert {first[H].sign_key_id, new.sign_key_id} <= set(report.keys)
        (tmp_path / "bundle.tbb").write_bytes(bundle)
        assert "bundle verifies" in await _tongban("verify", str(tmp_path / "bundle.tbb"))

        # The overlap ends (one day at this convener).
        skew[0] = 2 * DAY
        now = clock()
        with remote_error(Reason.KEY_NOT_VALID):
            window.registry.signing_key(first[H].sign_key_id, H, now, now=now)
        for receipt in spanning:  # receipts made before still verify
            assert window.registry.signing_key(receipt.key, H, receipt.at)
        assert verify_bundle(bundle).case == before
        forged = Postmaster(first[H], KeyRegistry(window.registry.records()))
        [late] = forged.seal([Letter(
            id=f"{H}-late-1", kind="rejection", recipient=C, case=before, seq=10_000,
            sent_at=now, body=b.Rejection(of=bytes(32), code="invalid_field", zh="字段有误",
                                          en="a field is invalid"), receipts=())])
        await handling.transport.publish([(late.envelope.id, f"tb.{C}.in.rejection",
                                           late.wire)], 5.0)
        await until(lambda: any(r["code"] == "key_not_valid"
                                for r in window.store.rejections()))

        # A newcomer after the overlap takes in the catalog signed with the new key.
        newcomer = await stack.enter_async_context(
            serving(server.url, _config(tmp_path, NEWCOMER), clock=clock))
        await until(lambda: len(newcomer.catalog.index.records_of(H)) == len(proxy[:3]))
