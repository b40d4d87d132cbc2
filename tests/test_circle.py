"""The circle registry: signed by the convener, checked before any member key is trusted."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from loopback import T0
from pydantic import ValidationError

from config import ConfigError, parse_config
from node.app import Node, wall_clock_ms
from node.natsd import EmbeddedNats
from node.transport import CIRCLE_BUCKET
from protocol import Reason, RemoteProtocolError
from protocol import examples as ex
from protocol.circle import CircleRegistry, Contact, JoinRequest, Member, MemberKey, SignedRegistry
from protocol.envelope import TAG_RECEIPT, leaf_digest
from receipts import BatchSigner, KeyRegistry, NodeKeys
from receipts.circle import approve, check_registry, key_records, sign_join, sign_registry, with_status
from tests.api_token import HEADERS, HTTP, run_tongban
from tests.serving import serving, stopped, until

CONVENER, H, C = "370100", "410100", "510100"
KEYS = {region: NodeKeys.generate(region) for region in (CONVENER, H, C)}
DAY = ex.DAY


def member(region: str, **extra: Any) -> Member:
    keys = KEYS[region]
    return Member.model_validate({
        "region": region, "name": {"370100": "济南市", "410100": "郑州市", "510100": "成都市"}[region],
        "node_id": f"tb-{region}", "status_at": T0 - 30 * DAY,
        "sign_keys": (MemberKey(key=keys.sign_key_id, public=keys.sign_public, valid_from=T0 - 30 * DAY),),
        "encrypt_keys": (MemberKey(key=keys.encrypt_key_id, public=keys.encrypt_public,
                                   valid_from=T0 - 30 * DAY),),
        "contact": Contact(name="运维值班", phone="0531-12345678"), **extra})


def registry(version: int = 1, **members: Member) -> CircleRegistry:
    listed = {r: member(r) for r in (CONVENER, H, C)} | members
    return CircleRegistry(circle="huanghe-2026", convener=CONVENER, version=version, issued_at=T0,
                          members=tuple(listed[r] for r in sorted(listed)))


def signed(reg: CircleRegistry, by: str = CONVENER) -> SignedRegistry:
    return sign_registry(BatchSigner(KEYS[by].signing, KEYS[by].sign_key_id), reg)


ANCHOR = KeyRegistry()
ANCHOR.add_node(KEYS[CONVENER], valid_from=T0 - 365 * DAY)


def _reason(call: Any) -> Reason:
    with pytest.raises(RemoteProtocolError) as caught:
        call()
    return caught.value.reason


def test_a_registry_signed_by_the_convener_is_trusted_and_fills_the_key_registry() -> None:
    checked = check_registry(signed(registry()), ANCHOR, circle="huanghe-2026", now=T0)
    keys = KeyRegistry(key_records(checked.members))
    assert len(keys) == 6
    # A member's signature now verifies against what the registry says.
    signer = BatchSigner(KEYS[H].signing, KEYS[H].sign_key_id)
    leaf = leaf_digest(TAG_RECEIPT, b"a receipt")
    [sig] = signer.sign([leaf])
    public = keys.signing_key(sig.key, H, T0, now=T0)
    assert public.public_bytes_raw() == KEYS[H].sign_public
    assert keys.encryption_key(C, T0)[0] == KEYS[C].encrypt_key_id


def test_a_registry_anyone_else_signed_or_changed_is_refused() -> None:
    assert _reason(lambda: check_registry(signed(registry(), by=H), ANCHOR, circle="huanghe-2026",
                                          now=T0)) == Reason.UNKNOWN_KEY
    good = signed(registry())
    rogue = NodeKeys.generate(H)
    tampered = good.model_copy(update={"registry": registry(**{H: member(H).model_copy(update={
        "sign_keys": (MemberKey(key=rogue.sign_key_id, public=rogue.sign_public,
                                valid_from=T0 - DAY),)})})})
    assert _reason(lambda: check_registry(tampered, ANCHOR, circle="huanghe-2026",
                                          now=T0)) == Reason.BAD_SIGNATURE
    assert _reason(lambda: check_registry(good, ANCHOR, circle="chuanyu", now=T0)) == \
        Reason.INVALID_FIELD
    held = registry(version=3)
    assert _reason(lambda: check_registry(signed(registry(version=3)), ANCHOR, circle="huanghe-2026",
                                          now=T0, held=held)) == Reason.INVALID_FIELD
    assert check_registry(signed(registry(version=4)), ANCHOR, circle="huanghe-2026", now=T0,
                          held=held).version == 4


def test_suspension_stops_new_messages_while_earlier_receipts_still_verify() -> None:
    suspended_at = T0 - DAY
    reg = registry(**{H: member(H, status="suspended", status_at=suspended_at)})
    keys = KeyRegistry(key_records(check_registry(signed(reg), ANCHOR, circle="huanghe-2026",
                                                  now=T0).members))
    key = KEYS[H].sign_key_id
    assert keys.signing_key(key, H, suspended_at - DAY)  # a receipt made before: verifies
    assert _reason(lambda: keys.signing_key(key, H, suspended_at - DAY, now=T0)) == \
        Reason.KEY_NOT_VALID  # a message arriving now: refused, whatever time it claims
    with pytest.raises(Exception, match=f"no usable encryption key of {H}"):
        keys.encryption_key(H, T0)  # and nothing new is sent to it


def test_a_rotation_overlaps_the_old_and_the_new_key() -> None:
    new = NodeKeys.generate(H)
    rotated = member(H, sign_keys=(
        MemberKey(key=KEYS[H].sign_key_id, public=KEYS[H].sign_public, valid_from=T0 - 30 * DAY,
                  valid_until=T0 + 7 * DAY),
        MemberKey(key=new.sign_key_id, public=new.sign_public, valid_from=T0)))
    keys = KeyRegistry(key_records(registry(**{H: rotated}).members))
    assert keys.signing_key(KEYS[H].sign_key_id, H, T0 + DAY, now=T0 + DAY)  # both in the overlap
    assert keys.signing_key(new.sign_key_id, H, T0 + DAY, now=T0 + DAY)
    assert _reason(lambda: keys.signing_key(KEYS[H].sign_key_id, H, T0 + 8 * DAY,
                                            now=T0 + 8 * DAY)) == Reason.KEY_NOT_VALID


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.model_copy(update={"members": (*r.members, r.members[0])}), "listed twice"),
    (lambda r: r.model_copy(update={"members": tuple(reversed(r.members))}), "in order"),
    (lambda r: r.model_copy(update={"convener": "620100"}), "not a member"),
])
def test_a_malformed_registry_is_refused(change: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CircleRegistry.model_validate(change(registry()).model_dump())


def test_member_keys_are_checked() -> None:
    keys = KEYS[H]
    with pytest.raises(ValidationError, match="must be ed25519"):
        member(H, sign_keys=(MemberKey(key=keys.encrypt_key_id, public=keys.encrypt_public,
                                       valid_from=T0),))
    with pytest.raises(ValidationError, match="not after valid_from"):
        MemberKey(key=keys.sign_key_id, public=keys.sign_public, valid_from=T0, valid_until=T0)
    with pytest.raises(ValidationError, match="does not name this public key"):
        MemberKey(key=keys.sign_key_id, public=bytes(32), valid_from=T0)
    with pytest.raises(ValidationError, match="nats_account"):
        member(H, nats_account="not-an-account")


async def test_a_node_adopts_newer_registries_live_and_keeps_the_last_one(tmp_path: Path) -> None:
    KEYS[CONVENER].save(tmp_path / "convener", valid_from=T0 - 365 * DAY)
    KEYS[C].save(tmp_path / C / "keys", valid_from=0)
    config = parse_config({
        "region": C, "name": "成都市", "data_dir": str(tmp_path / C), "http": HTTP,
        "circle": {"id": "huanghe-2026", "convener": CONVENER,
                   "anchor": str(tmp_path / "convener" / "public.json")},
        "peers": [{"region": H, "name": "郑州市",  # ignored: the circle decides
                   "public": str(tmp_path / "convener" / "public.json")}]}, base=tmp_path, environ={})
    now = wall_clock_ms()
    async with EmbeddedNats(tmp_path / "nats") as server:
        stop = asyncio.Event()
        node = Node(config, urls=[server.url])
        assert {r.region for r in node.registry.records()} == {C}  # only itself, until a registry
        running = asyncio.create_task(node.run(stop))
        await node.ready.wait()
        assert node.circle is not None
        await node.circle.publish(signed(registry(version=1)).canonical_bytes)
        await until(lambda: node.circle is not None and node.circle.current is not None)
        assert node.registry.signing_key(KEYS[H].sign_key_id, H, now, now=now)
        suspended = registry(version=2, **{H: member(H, status="suspended", status_at=now - 1000)})
        await node.circle.publish(signed(suspended).canonical_bytes)
        await until(lambda: node.circle is not None and node.circle.current is not None
                     and node.circle.current.version == 2)
        assert _reason(lambda: node.registry.signing_key(KEYS[H].sign_key_id, H, now, now=now)) == \
            Reason.KEY_NOT_VALID
        with pytest.raises(RemoteProtocolError):  # not the convener's signature: not even sent
            await node.circle.publish(signed(registry(version=3), by=H).canonical_bytes)
        forged = signed(registry(version=3), by=H).canonical_bytes
        await node.transport.put_values(CIRCLE_BUCKET, [("registry", forged)])
        await until(lambda: node.circle is not None and node.circle.refused != [])
        assert node.circle.current is not None
        assert node.circle.current.version == 2
        stop.set()
        await running
    restarted = Node(config, urls=["nats://127.0.0.1:1"])  # no server: the saved registry
    assert restarted.circle is not None
    assert restarted.circle.current is not None
    assert restarted.circle.current.version == 2
    assert {r.region for r in restarted.registry.records()} == {CONVENER, H, C}
    await restarted.store.close()
    restarted.catalog.index.close()


def test_a_missing_anchor_is_a_clear_configuration_error(tmp_path: Path) -> None:
    KEYS[C].save(tmp_path / C / "keys", valid_from=0)
    config = parse_config({
        "region": C, "name": "成都市", "data_dir": str(tmp_path / C),
        "circle": {"id": "huanghe-2026", "convener": CONVENER, "anchor": "nowhere.json"}},
        base=tmp_path, environ={})
    with pytest.raises(ConfigError, match=r"circle\.anchor"):
        Node(config)


def _circle_config(base: Path, region: str, catalog: Path | None = None) -> Any:
    return parse_config({
        "region": region, "name": region, "data_dir": str(base / region), "http": HTTP,
        **({"catalog": str(catalog)} if catalog else {}),
        "circle": {"id": "huanghe-2026", "convener": CONVENER,
                   "anchor": str(base / CONVENER / "keys" / "public.json")}}, base=base, environ={})


async def test_joining_the_registry_lets_a_members_catalog_in_and_names_are_official(
        tmp_path: Path) -> None:
    from protocol.catalog import CatalogEntry
    from routing.catalog_files import read_catalog_path, write_catalog_csv

    samples: list[CatalogEntry] = read_catalog_path(
        Path(__file__).parent.parent / "config" / "catalogs" / CONVENER, CONVENER)
    write_catalog_csv(samples[:2], tmp_path / "catalog")
    for region in (CONVENER, C):
        KEYS[region].save(tmp_path / region / "keys", valid_from=0)
    async with EmbeddedNats(tmp_path / "nats") as server:
        stop = asyncio.Event()
        convener = Node(_circle_config(tmp_path, CONVENER, tmp_path / "catalog"), urls=[server.url])
        window = Node(_circle_config(tmp_path, C), urls=[server.url])
        runs = [asyncio.create_task(n.run(stop)) for n in (convener, window)]
        try:
            await convener.ready.wait()
            await window.ready.wait()
            # Not a member yet as far as the window knows: the convener's entries are refused.
            await until(lambda: window.catalog.index.rejections() != [])
            assert window.catalog.index.counts()["entries"] == 0
            assert convener.circle is not None
            wrong = registry(**{C: member(C).model_copy(update={"name": "成都"})})
            with pytest.raises(ValueError, match="official name of 510100 is 成都市"):
                await convener.circle.publish(signed(wrong).canonical_bytes)
            await convener.circle.publish(signed(registry()).canonical_bytes)
            # Adopted by both; the window looks again at what it refused, and takes it in.
            await until(lambda: window.catalog.index.counts()["entries"] == 2)
            assert window.catalog.search(samples[0].name)
        finally:
            stop.set()
            await stopped(asyncio.gather(*runs))


async def test_regions_join_through_the_convener_and_every_node_takes_them_in_live(
        tmp_path: Path) -> None:
    W = "410100"
    KEYS[W] = NodeKeys.generate(W)
    for region in (CONVENER, C, W):
        KEYS[region].save(tmp_path / region / "keys", valid_from=0)
    async with EmbeddedNats(tmp_path / "nats") as server, contextlib.AsyncExitStack() as stack:
        nodes = {region: await stack.enter_async_context(
            serving(server.url, _circle_config(tmp_path, region))) for region in (CONVENER, W, C)}

        async def tongban(*args: str) -> str:
            code, out, err = await run_tongban("circle", *args)
            assert code == 0, err
            return out

        def address(region: str) -> str:
            return nodes[region].address  # type: ignore[attr-defined,no-any-return]

        convener = nodes[CONVENER].circle
        assert convener is not None
        for region in (W, C):
            await tongban("request-join", "--contact-name", "值班员", "--contact-phone",
                          "13800000000", "--node", address(region))
        await until(lambda: set(convener.requests) == {W, C})
        assert "待审批 / waiting: 510100 成都市" in await tongban("status", "--node", address(CONVENER))
        await tongban("refuse", C, "--reason", "材料不全", "--node", address(CONVENER))
        assert "已同意" in await tongban("approve", W, "--key", KEYS[W].sign_key_id, "--node",
                                       address(CONVENER))
        for region in (CONVENER, W):  # the newcomer is a member everywhere, at once
            await until(lambda r=region: nodes[r].circle.current is not None  # type: ignore[union-attr]
                         and nodes[r].circle.current.member(W) is not None)  # type: ignore[union-attr]
        assert nodes[CONVENER].registry.signing_key(KEYS[W].sign_key_id, W, wall_clock_ms(),
                                                    now=wall_clock_ms())
        assert convener.current is not None
        assert convener.current.member(C) is None  # refused
        assert [d[:3] for d in convener.decisions] == [(C, "refused", "材料不全"), (W, "approved", "")]
        # Asked again, and admitted: the member before it trusts it without a restart.
        await tongban("request-join", "--contact-name", "值班员", "--node", address(C))
        await until(lambda: C in convener.requests)
        await tongban("approve", C, "--key", KEYS[C].sign_key_id, "--node", address(CONVENER))
        await until(lambda: nodes[W].circle.current is not None  # type: ignore[union-attr]
                     and nodes[W].circle.current.member(C) is not None)  # type: ignore[union-attr]
        assert nodes[W].registry.signing_key(KEYS[C].sign_key_id, C, wall_clock_ms(),
                                             now=wall_clock_ms())
        status = await tongban("status", "--node", address(W))
        assert "名册版本 3" in status
        assert "510100 成都市  joined" in status
        # Suspended: nothing new from it is accepted, at once; what it signed before still is.
        before = wall_clock_ms()
        await tongban("suspend", C, "--node", address(CONVENER))
        await until(lambda: nodes[W].circle.current is not None  # type: ignore[union-attr]
                     and nodes[W].circle.current.version == 4)  # type: ignore[union-attr]
        now = wall_clock_ms()
        assert _reason(lambda: nodes[W].registry.signing_key(KEYS[C].sign_key_id, C, now,
                                                             now=now)) == Reason.KEY_NOT_VALID
        assert nodes[W].registry.signing_key(KEYS[C].sign_key_id, C, before - 1)
        await tongban("reinstate", C, "--node", address(CONVENER))
        await until(lambda: nodes[W].circle.current is not None  # type: ignore[union-attr]
                     and nodes[W].circle.current.version == 5)  # type: ignore[union-attr]
        later = wall_clock_ms()
        assert nodes[W].registry.signing_key(KEYS[C].sign_key_id, C, later, now=later)
        # Someone else filing "new keys" for a member: not even put before the convener.
        thief = NodeKeys.generate(W)
        forged = nodes[W].circle.join_request(Contact(name="假冒"))  # type: ignore[union-attr]
        request = forged.request.model_copy(update={
            "sign_key": MemberKey(key=thief.sign_key_id, public=thief.sign_public, valid_from=later),
            "encrypt_key": MemberKey(key=thief.encrypt_key_id, public=thief.encrypt_public,
                                     valid_from=later)})
        unendorsed = sign_join(BatchSigner(thief.signing, thief.sign_key_id), request)
        await nodes[W].transport.put_values(CIRCLE_BUCKET, [(f"join.{W}",
                                                               unendorsed.canonical_bytes)])
        await until(lambda: any("endorsement" in r for r in convener.refused))
        assert W not in convener.requests
        async with aiohttp.ClientSession(headers=HEADERS) as http:
            api = address(CONVENER)
            async with http.post(f"{api}/api/circle/members/{C}/revoke", data="x",
                                 headers={"Content-Type": "text/plain"}) as response:
                assert response.status == 415  # no form post from another site
            async with http.post(f"{api}/api/circle/members/{C}/revoke", json={}) as response:
                assert response.status == 200
            async with http.post(f"{api}/api/circle/members/{C}/reinstate", json={}) as response:
                assert response.status == 422  # revocation is final
                assert "final" in (await response.json())["en"]
            async with http.post(f"{api}/api/circle/requests/{C}/approve",
                                 json={"key": "ed25519:0000000000000000"}) as response:
                assert response.status == 404


def test_a_member_bringing_new_keys_rotates_with_an_overlap() -> None:
    new = NodeKeys.generate(H)
    request = JoinRequest(
        circle="huanghe-2026", region=H, name="郑州市", node_id=f"tb-{H}",
        sign_key=MemberKey(key=new.sign_key_id, public=new.sign_public, valid_from=T0),
        encrypt_key=MemberKey(key=new.encrypt_key_id, public=new.encrypt_public, valid_from=T0),
        contact=Contact(name="运维值班"), requested_at=T0)
    rotated = approve(registry(), request, T0, overlap_ms=7 * DAY)
    assert rotated.version == 2
    keys = KeyRegistry(key_records(rotated.members))
    old = KEYS[H].sign_key_id
    assert keys.signing_key(old, H, T0 + DAY, now=T0 + DAY)  # the overlap: both keys
    assert keys.signing_key(new.sign_key_id, H, T0 + DAY, now=T0 + DAY)
    assert _reason(lambda: keys.signing_key(old, H, T0 + 8 * DAY, now=T0 + 8 * DAY)) == \
        Reason.KEY_NOT_VALID
    assert keys.signing_key(old, H, T0 - DAY)  # receipts signed before still verify
    assert keys.encryption_key(H, T0 + DAY)[0] == new.encrypt_key_id  # new messages: the new key
    again = approve(rotated, request, T0 + DAY, overlap_ms=7 * DAY).member(H)  # the same request
    first = rotated.member(H)
    assert again is not None
    assert first is not None
    assert again.sign_keys == first.sign_keys  # no further change to the keys


def test_the_convener_cannot_suspend_itself_nor_a_stranger() -> None:
    with pytest.raises(ValueError, match="its own status"):
        with_status(registry(), CONVENER, "suspended", T0)
    with pytest.raises(LookupError, match="not a member"):
        with_status(registry(), "620100", "suspended", T0)


async def test_an_old_registry_is_refused_as_a_possible_replay(tmp_path: Path) -> None:
    KEYS[CONVENER].save(tmp_path / "convener", valid_from=T0 - 365 * DAY)
    KEYS[C].save(tmp_path / C / "keys", valid_from=0)
    config = parse_config({
        "region": C, "name": "成都市", "data_dir": str(tmp_path / C),
        "circle": {"id": "huanghe-2026", "convener": CONVENER, "registry_max_age_days": 30,
                   "anchor": str(tmp_path / "convener" / "public.json")}}, base=tmp_path, environ={})
    node = Node(config, clock=lambda: T0 + 31 * DAY)
    assert node.circle is not None
    with pytest.raises(ValueError, match="older than 30 days"):
        node.circle._adopt(signed(registry()).canonical_bytes)
    fresh = registry().model_copy(update={"issued_at": T0 + 30 * DAY})
    node.circle._adopt(signed(fresh).canonical_bytes)
    assert node.circle.current is not None
    await node.store.close()
    node.catalog.index.close()


def test_a_registry_is_read_from_its_parts_and_must_be_canonical() -> None:
    """A node decodes only the members a new registry changed; the bytes must still be
    exactly the canonical encoding, or the registry is refused before its signature."""
    import msgpack

    from protocol.codec import raw_fields
    from receipts.circle import decode_registry

    known: dict[bytes, Member] = {}
    first = decode_registry(signed(registry()).canonical_bytes, known)
    assert first.registry == registry()
    assert len(known) == 3
    changed = registry(version=2, **{C: member(C, status="suspended")})
    second = decode_registry(signed(changed).canonical_bytes, known)
    assert second.registry == changed
    assert second.registry.members[0] is first.registry.members[0]  # unchanged: reused
    assert second.registry.members[2] is not first.registry.members[2]
    check_registry(second, ANCHOR, circle="huanghe-2026", now=T0)

    def rebuilt(parts: dict[str, bytes], header: bytes | None = None) -> bytes:
        return (header or msgpack.Packer().pack_map_header(len(parts))) + b"".join(
            msgpack.packb(k) + v for k, v in parts.items())

    data = signed(registry()).canonical_bytes
    outer = raw_fields(data)
    fields = raw_fields(outer["registry"])
    long_header = {**fields, "members": b"\xdc\x00\x03" + fields["members"][1:]}  # array16
    for bad in (rebuilt({**outer, "registry": rebuilt(long_header)}),
                rebuilt(outer, header=b"\xde\x00\x02")):  # map16 for two fields
        with pytest.raises(RemoteProtocolError) as caught:
            decode_registry(bad, {})
        assert caught.value.reason == Reason.NON_CANONICAL
    # A member (or the registry) encoded without a field it has by default re-encodes
    # differently: refused, as every other message would be.
    from protocol.codec import encode

    plain = registry().model_dump(exclude_none=True)
    plain["members"] = [{k: v for k, v in m.items() if k != "status"} for m in plain["members"]]
    stripped = signed(registry()).model_dump(exclude_none=True)
    stripped["registry"] = plain
    with pytest.raises(RemoteProtocolError) as caught:
        decode_registry(encode(stripped), {})
    assert caught.value.reason == Reason.NON_CANONICAL
