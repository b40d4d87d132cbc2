"""Catalog publishing and federation with real nodes over a real nats-server (in process)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from config import parse_config
from node.app import Node
from node.catalog import CatalogConflict
from node.engine import Command
from node.natsd import EmbeddedNats
from protocol import bodies as b
from protocol import examples as ex
from protocol.catalog import CatalogEntry, CatalogMaterial, FormField, TimeLimit
from protocol.fields import credit_check_char
from receipts import BatchSigner, NodeKeys
from receipts.catalog import sign_entries
from routing.catalog_files import write_catalog_csv

H, C = "370100", "410100"  # the publishing (handling) region, the window (collecting) region
AUTHORITY = "11370100MB2851740" + credit_check_char("11370100MB2851740")


def entry(code: str, name: str, *, version: int = 1, status: str = "active",
          conditions: str = "申请人在本市有合法稳定住所。", **extra: Any) -> CatalogEntry:
    return CatalogEntry.model_validate({
        "region": H, "code": code, "version": version, "status": status,
        "effective_from": "2026-01-01", "basic_code": code[:10], "name": name,
        "matter_type": "07", "level": 3, "authority": "济南市公安局", "authority_code": AUTHORITY,
        "service_objects": (1,), "handling_forms": (1, 2), "conditions": conditions,
        "legal_limit": TimeLimit(days=20), "promised_limit": TimeLimit(days=10),
        "scope": "inter_provincial", "modes": ("online", "proxy"),
        "materials": (CatalogMaterial(name="居民户口簿", copies=1),
                      CatalogMaterial(name="准予迁入证明", deferrable=True)),
        "form": (FormField(name="move_to", label="迁入地", kind="region"),
                 FormField(name="reason", label="迁移原因", kind="choice", choices=("投靠", "工作"))),
        **extra})


HUKOU = entry("0000100001-370100000000-000-A", "户口迁移（迁入）")
MEDICAL = entry("0000100002-370100000000-000-A", "异地就医备案", conditions="参加本市基本医疗保险。",
                modes=("online",))


def _config(base: Path, region: str, peer: str, catalog: Path | None) -> Any:
    return parse_config({
        "region": region, "name": region, "data_dir": str(base / region),
        "auto_review": region == H,
        "departments": [{"kind": "desk", "name": "办理窗口", "auto_conclude": True}],
        **({"catalog": str(catalog)} if catalog else {}),
        "peers": [{"region": peer, "name": peer, "public": str(base / peer / "keys" / "public.json")}],
    }, base=base, environ={})


@contextlib.asynccontextmanager
async def _running(base: Path, url: str, config: Any) -> AsyncIterator[Node]:
    stop = asyncio.Event()
    node = Node(config, urls=[url])
    task = asyncio.create_task(node.run(stop))
    ready = asyncio.create_task(node.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        await task  # raises the start-up error
    try:
        yield node
    finally:
        stop.set()
        await task


@pytest.fixture
async def circle(tmp_path: Path) -> AsyncIterator[tuple[Path, EmbeddedNats]]:
    for region in (H, C):
        NodeKeys.generate(region).save(tmp_path / region / "keys", valid_from=0)
    write_catalog_csv([HUKOU, MEDICAL], tmp_path / "catalog")
    async with EmbeddedNats(tmp_path / "nats") as server:
        yield tmp_path, server


async def _until(condition: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_partners_catalog_is_indexed_and_searchable_in_chinese(circle: tuple[Path, EmbeddedNats],
                                                                       ) -> None:
    base, server = circle
    async with _running(base, server.url, _config(base, H, C, base / "catalog")), \
            _running(base, server.url, _config(base, C, H, None)) as window:
        await _until(lambda: window.catalog.index.counts()["latest"] == 2)
        found = window.catalog.search

        def codes(query: str, **filters: Any) -> list[str]:
            return [hit["code"] for hit in found(query, **filters)]

        assert codes("迁移") == [HUKOU.code]  # two characters: matched by substring
        assert sorted(codes("户口")) == sorted([HUKOU.code, MEDICAL.code])  # 居民户口簿
        assert codes("户口迁移") == [HUKOU.code]  # trigram index
        assert codes("户口 迁移") == [HUKOU.code]  # every term must match
        assert codes("医疗保险") == [MEDICAL.code]  # in the 受理条件
        assert sorted(codes("准予迁入证明")) == sorted([HUKOU.code, MEDICAL.code])  # a material
        assert codes("迁移 医疗") == []
        assert codes("准予迁入证明", mode="proxy") == [HUKOU.code]
        assert codes("迁移", regions=(C,)) == []
        assert codes("迁移", matter_type="01") == []
        assert codes("迁移", matter_type="07", regions=(H,)) == [HUKOU.code]
        assert window.catalog.entry(H, HUKOU.code) == HUKOU
        assert window.catalog.entry(H, "no-such-code") is None


async def test_versions_stay_resolvable_and_withdrawal_leaves_search(
        circle: tuple[Path, EmbeddedNats]) -> None:
    base, server = circle
    async with _running(base, server.url, _config(base, H, C, base / "catalog")) as handling, \
            _running(base, server.url, _config(base, C, H, None)) as window:
        await _until(lambda: window.catalog.index.counts()["latest"] == 2)
        changed = HUKOU.model_copy(update={"version": 2, "conditions": "申请人在本市有合法稳定就业。"})
        assert await handling.catalog.publish([changed, MEDICAL]) == [changed]  # MEDICAL unchanged
        await _until(lambda: window.catalog.search("合法稳定就业") != [])
        assert window.catalog.search("迁移")[0]["version"] == 2
        assert window.catalog.search("合法稳定住所") == []
        assert window.catalog.entry(H, HUKOU.code, 1) == HUKOU  # pinned applications resolve
        withdrawn = changed.model_copy(update={"version": 4, "status": "withdrawn"})
        await handling.catalog.publish([withdrawn])
        await _until(lambda: window.catalog.search("迁移") == [])
        assert window.catalog.entry(H, HUKOU.code, 2) == changed
        assert window.catalog.entry(H, HUKOU.code) == withdrawn
        assert [v for v, _ in window.catalog.index.versions(H, HUKOU.code)] == [1, 2, 4]
        with pytest.raises(CatalogConflict, match="changed without a new version"):
            await handling.catalog.publish([MEDICAL.model_copy(update={"name": "异地就医备案（新）"})])
        with pytest.raises(CatalogConflict, match="is newer than"):
            await handling.catalog.publish([HUKOU.model_copy(update={"version": 3})])


async def test_entries_not_signed_by_the_region_are_ignored_and_reported(
        circle: tuple[Path, EmbeddedNats]) -> None:
    base, server = circle
    async with _running(base, server.url, _config(base, H, C, base / "catalog")) as handling, \
            _running(base, server.url, _config(base, C, H, None)) as window:
        await _until(lambda: window.catalog.index.counts()["latest"] == 2)
        rogue = NodeKeys.generate(H)  # a key nobody registered for 370100
        forged = HUKOU.model_copy(update={"version": 9, "name": "户口迁移（伪造）"})
        [record] = sign_entries(BatchSigner(rogue.signing, rogue.sign_key_id), [forged])
        await handling.transport.put_catalog(forged.key, record.canonical_bytes)
        # A genuine record of 370100, published under another matter's key.
        [moved] = sign_entries(handling.postmaster.signer, [MEDICAL])
        await handling.transport.put_catalog(HUKOU.key, moved.canonical_bytes)
        await handling.transport.put_catalog(f"{H}.not-canonical", b"\xc1")
        await _until(lambda: window.catalog.index.counts()["rejected"] >= 3)
        reasons = {r["reason"].split(":")[0] for r in window.catalog.index.rejections()}
        assert reasons == {"unknown_key", "invalid_field", "malformed"}
        assert window.catalog.search("伪造") == []
        assert window.catalog.entry(H, HUKOU.code) == HUKOU


async def test_applications_are_decided_under_the_pinned_catalog_entry(
        circle: tuple[Path, EmbeddedNats]) -> None:
    base, server = circle
    async with _running(base, server.url, _config(base, H, C, base / "catalog")) as handling, \
            _running(base, server.url, _config(base, C, H, None)) as window:
        assert await window.catalog.wait_for_region(H, timeout=10)
        now = window.clock()
        application = window.catalog.sample_application(H, now, "ZZ-TEST-1")
        assert application.matter == b.MatterRef(code=HUKOU.code, version=1, name=HUKOU.name)
        assert HUKOU.check_form({v.field: v.value for v in application.form})
        unknown = ex.application(now, window_no="ZZ-TEST-2", scans=False)  # not 370100's matter
        cases = []
        for app in (application, unknown):
            collected = await window.command(Command(None, "collect", app, peer=H))
            assert collected.case_id is not None
            await window.command(Command(collected.case_id, "submit"))
            cases.append(collected.case_id)
        await _until(lambda: (window.store.case_row(cases[0]) or {}).get("state") == "outcome_received")
        await _until(lambda: any(r["code"] == "unknown_matter" for r in window.store.rejections()))
        assert handling.store.case_row(cases[1]) is None  # nothing opened for it
        accepted = handling.catalog.entry(H, HUKOU.code, 1)
        assert accepted is not None
        assert accepted.promised_limit.days == 10
