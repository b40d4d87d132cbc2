"""Catalog publishing and federation with real nodes over a real nats-server (in process)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from config import parse_config
from node.catalog import CatalogConflict
from node.engine import Command
from node.natsd import EmbeddedNats
from node.transport import CATALOG_BUCKET
from protocol import bodies as b
from protocol import examples as ex
from protocol.catalog import TAG_CATALOG, CatalogEntry, CatalogMaterial, FormField, TimeLimit
from protocol.codec import Raw, encode
from protocol.envelope import leaf_digest
from protocol.fields import credit_check_char
from receipts import BatchSigner, NodeKeys
from receipts.catalog import sign_entries
from routing.catalog_files import write_catalog_csv
from tests.api_token import HEADERS, HTTP, run_tongban
from tests.cluster import free_port
from tests.serving import serving, until

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
        "auto_review": region == H, "http": HTTP,
        "departments": [{"kind": "desk", "name": "办理窗口", "auto_conclude": True}],
        **({"catalog": str(catalog)} if catalog else {}),
        "peers": [{"region": peer, "name": peer, "public": str(base / peer / "keys" / "public.json")}],
    }, base=base, environ={})


@pytest.fixture
async def circle(tmp_path: Path) -> AsyncIterator[tuple[Path, EmbeddedNats]]:
    for region in (H, C):
        NodeKeys.generate(region).save(tmp_path / region / "keys", valid_from=0)
    write_catalog_csv([HUKOU, MEDICAL], tmp_path / "catalog")
    async with EmbeddedNats(tmp_path / "nats") as server:
        yield tmp_path, server


async def test_a_partners_catalog_is_indexed_and_searchable_in_chinese(circle: tuple[Path, EmbeddedNats],
                                                                       ) -> None:
    base, server = circle
    async with serving(server.url, _config(base, H, C, base / "catalog")), \
            serving(server.url, _config(base, C, H, None)) as window:
        await until(lambda: window.catalog.index.counts()["matters"] == 2)
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
    async with serving(server.url, _config(base, H, C, base / "catalog")) as handling, \
            serving(server.url, _config(base, C, H, None)) as window:
        await until(lambda: window.catalog.index.counts()["matters"] == 2)
        changed = HUKOU.model_copy(update={"version": 2, "conditions": "申请人在本市有合法稳定就业。"})
        assert await handling.catalog.publish([changed, MEDICAL]) == [changed]  # MEDICAL unchanged
        await until(lambda: window.catalog.search("合法稳定就业") != [])
        assert window.catalog.search("迁移")[0]["version"] == 2
        assert window.catalog.search("合法稳定住所") == []
        assert window.catalog.entry(H, HUKOU.code, 1) == HUKOU  # pinned applications resolve
        withdrawn = changed.model_copy(update={"version": 4, "status": "withdrawn"})
        await handling.catalog.publish([withdrawn])
        await until(lambda: window.catalog.search("迁移") == [])
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
    async with serving(server.url, _config(base, H, C, base / "catalog")) as handling, \
            serving(server.url, _config(base, C, H, None)) as window:
        await until(lambda: window.catalog.index.counts()["matters"] == 2)
        rogue = NodeKeys.generate(H)  # a key nobody registered for 370100
        forged = HUKOU.model_copy(update={"version": 9, "name": "户口迁移（伪造）"})
        [record] = sign_entries(BatchSigner(rogue.signing, rogue.sign_key_id), [forged])
        await handling.transport.put_values(CATALOG_BUCKET, [(forged.key, record.canonical_bytes)])
        # A genuine record of 370100, published under another matter's key.
        [moved] = sign_entries(handling.postmaster.signer, [MEDICAL])
        await handling.transport.put_values(CATALOG_BUCKET, [(HUKOU.key, moved.canonical_bytes)])
        await handling.transport.put_values(CATALOG_BUCKET, [(f"{H}.not-canonical", b"\xc1")])
        await until(lambda: window.catalog.index.counts()["rejected"] >= 3)
        reasons = {r["reason"].split(":")[0] for r in window.catalog.index.rejections()}
        assert reasons == {"unknown_key", "invalid_field", "malformed"}
        assert window.catalog.search("伪造") == []
        assert window.catalog.entry(H, HUKOU.code) == HUKOU


async def test_applications_are_decided_under_the_pinned_catalog_entry(
        circle: tuple[Path, EmbeddedNats]) -> None:
    base, server = circle
    async with serving(server.url, _config(base, H, C, base / "catalog")) as handling, \
            serving(server.url, _config(base, C, H, None)) as window:
        assert await window.catalog.wait_for_region(H, timeout=10)
        now = window.clock()
        application = window.catalog.sample_application(H, now, "ZZ-TEST-1")
        assert application.matter == b.MatterRef(code=HUKOU.code, version=1, name=HUKOU.name)
        assert HUKOU.check_form({v.field: v.value for v in application.form})
        unknown = ex.application(now, window_no="ZZ-TEST-2", scans=False)  # not 370100's matter
        wrong_form = application.model_copy(update={"form": (
            b.FormValue(field="move_to", value="郑州"), b.FormValue(field="reason", value="旅游"))})
        cases = []
        for app in (application, unknown, wrong_form):
            collected = await window.command(Command(None, "collect", app, peer=H))
            assert collected.case_id is not None
            await window.command(Command(collected.case_id, "submit"))
            cases.append(collected.case_id)
        await until(lambda: (window.store.case_row(cases[0]) or {}).get("state") == "outcome_received")
        await until(lambda: {"unknown_matter", "invalid_field"} <= {
            r["code"] for r in window.store.rejections()})
        assert handling.store.case_row(cases[1]) is None  # nothing opened for either
        assert handling.store.case_row(cases[2]) is None
        [refusal] = [r for r in handling.store.rejections() if r["code"] == "invalid_field"]
        assert "迁入地" in refusal["detail"]  # every wrong field is named
        assert "迁移原因" in refusal["detail"]
        assert (handling.store.case_snapshot(cases[0]) or {})["promise_days"] == 10
        # A new version with another promised limit: an application filled against
        # version 1 is still decided under version 1.
        await handling.catalog.publish([HUKOU.model_copy(update={
            "version": 2, "promised_limit": TimeLimit(days=15)})])
        await until(lambda: len(window.catalog.index.versions(H, HUKOU.code)) == 2)
        pinned = application.model_copy(update={"window": application.window.model_copy(
            update={"window_no": "ZZ-TEST-4"})})
        collected = await window.command(Command(None, "collect", pinned, peer=H))
        assert collected.case_id is not None
        await window.command(Command(collected.case_id, "submit"))
        await until(lambda: handling.store.case_snapshot(collected.case_id or "") is not None)
        assert (handling.store.case_snapshot(collected.case_id) or {})["promise_days"] == 10
        fresh = window.catalog.sample_application(H, window.clock(), "ZZ-TEST-5")
        assert fresh.matter.version == 2  # a new application is filled against the newest


async def test_the_json_api_searches_shows_entries_and_refuses_bad_requests(
        circle: tuple[Path, EmbeddedNats]) -> None:
    base, server = circle
    async with serving(server.url, _config(base, H, C, base / "catalog")), \
            serving(server.url, _config(base, C, H, None)) as window, \
            aiohttp.ClientSession(headers=HEADERS) as http:
        await until(lambda: window.catalog.index.counts()["matters"] == 2)
        api = window.address  # type: ignore[attr-defined]

        async def get(path: str, status: int = 200) -> Any:
            async with http.get(api + path) as response:
                assert response.status == status, await response.text()
                return await response.json()

        hits = await get("/api/catalog/search?q=户口迁移&region=370100&mode=proxy&type=07")
        assert [h["code"] for h in hits["results"]] == [HUKOU.code]
        detail = await get(f"/api/catalog/{H}/{HUKOU.code}?version=1")
        assert detail["entry"]["name"] == HUKOU.name
        assert detail["entry"]["materials"][1]["deferrable"] is True
        assert detail["versions"] == [{"version": 1, "status": "active"}]
        assert (await get("/api/catalog/stats"))["matters"] == 2
        for query, code in (("region=37", "bad_region"), ("mode=fax", "bad_mode"),
                            ("type=99", "bad_type"), ("limit=0", "bad_limit"),
                            ("limit=x", "bad_limit")):
            answer = await get(f"/api/catalog/search?q=户口&{query}", 400)
            assert answer["error"] == code
            assert answer["zh"]
            assert answer["en"]
        assert (await get(f"/api/catalog/{H}/{HUKOU.code}?version=9", 404))["error"] == "no_matter"
        for version in ("v1", "²", "99999999999999999999", "0"):
            assert (await get(f"/api/catalog/{H}/{HUKOU.code}?version={version}", 400))[
                "error"] == "bad_version"
        assert (await get("/api/catalog/export?region=620100", 404))["error"] == "no_catalog"
        async with http.post(api + "/api/catalog", data=b"x",
                             headers={"Content-Type": "text/plain"}) as response:
            assert response.status == 415
        for body, content_type in ((b"--x\r\nbroken", "multipart/form-data"),
                                   ("--x\r\nContent-Disposition: form-data; name=\"事项\"\r\n".encode(),
                                    "multipart/form-data; boundary=x")):
            async with http.post(api + "/api/catalog", data=body,
                                 headers={"Content-Type": content_type}) as response:
                assert response.status == 400, await response.text()
        async with http.post(api + "/api/catalog", data=b"not a workbook", headers={
                "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
                ) as response:
            assert response.status == 422
            assert "XLSX" in (await response.json())["problems"][0]["reason"]


async def test_the_catalog_commands(circle: tuple[Path, EmbeddedNats], tmp_path: Path) -> None:
    base, server = circle
    async with serving(server.url, _config(base, H, C, base / "catalog")) as handling, \
            serving(server.url, _config(base, C, H, None)) as window:
        await until(lambda: window.catalog.index.counts()["matters"] == 2)
        code, out, _ = await run_tongban("catalog", "search", "户口迁移", "--node", window.address)  # type: ignore[attr-defined]
        assert code == 0
        assert HUKOU.name in out
        assert "异地代收代办" in out
        exported = tmp_path / "exported.xlsx"
        code, _, err = await run_tongban("catalog", "export", str(exported), "--region", H,
                                      "--node", window.address)  # type: ignore[attr-defined]
        assert code == 0, err
        code, out, err = await run_tongban("catalog", "import", str(exported), "--region", H,
                                        "--out", str(tmp_path / "csv"))
        assert code == 0, err
        assert "2 个事项无误" in out
        # A new version, published through the handling node's API from the CSV folder.
        matters = tmp_path / "csv" / "事项.csv"
        matters.write_text(matters.read_text(encoding="utf-8-sig").replace(
            f"{HUKOU.code},1,", f"{HUKOU.code},2,"), encoding="utf-8")
        code, out, err = await run_tongban("catalog", "publish", str(tmp_path / "csv"),
                                        "--node", handling.address)  # type: ignore[attr-defined]
        assert code == 0, err
        assert "新发布 1 个" in out
        await until(lambda: [v for v, _ in window.catalog.index.versions(H, HUKOU.code)] == [1, 2])
        # A bad catalog: every problem is named, nothing is published.
        matters.write_text(matters.read_text(encoding="utf-8").replace(",07,", ",99,"), encoding="utf-8")
        for command in (("import", str(tmp_path / "csv"), "--region", H),
                        ("publish", str(tmp_path / "csv"), "--node", handling.address)):  # type: ignore[attr-defined]
            code, _, err = await run_tongban("catalog", *command)
            assert code == 2
            assert "事项 第 2 行「事项类型代码」" in err
            assert "nothing was imported" in err
        assert [v for v, _ in handling.catalog.index.versions(H, HUKOU.code)] == [1, 2]


async def test_a_restarted_node_and_a_restarted_server_lose_nothing(tmp_path: Path) -> None:
    for region in (H, C):
        NodeKeys.generate(region).save(tmp_path / region / "keys", valid_from=0)
    write_catalog_csv([HUKOU, MEDICAL], tmp_path / "catalog")
    server = EmbeddedNats(tmp_path / "nats", port=free_port())
    await server.start()
    try:
        window_config = _config(tmp_path, C, H, None)
        async with serving(server.url, _config(tmp_path, H, C, tmp_path / "catalog")) \
                as handling:
            async with serving(server.url, window_config) as window:
                await until(lambda: window.catalog.index.counts()["matters"] == 2)
            async with serving(server.url, window_config) as window:  # restarted
                await window.catalog.caught_up.wait()
                assert window.catalog.index.counts() == {"entries": 2, "matters": 2, "texts": 2,
                                                         "rejected": 0}
                server.kill()  # and the server: same port, same store, back in a moment
                await asyncio.sleep(0.5)
                await server.start()
                changed = HUKOU.model_copy(update={"version": 2, "name": "户口迁移（迁入）新版"})
                await until(lambda: handling.transport.connected)
                await handling.catalog.publish([changed])
                await until(lambda: window.catalog.search("新版") != [], timeout=30)
                assert window.catalog.index.counts()["entries"] == 3
    finally:
        await server.stop()


async def test_malformed_signed_entries_are_refused_without_stopping_the_node(
        circle: tuple[Path, EmbeddedNats]) -> None:
    """A member's own signature does not make every field sane: each bad entry is ignored
    and reported, the good ones beside it are indexed, and the node keeps running."""
    base, server = circle
    async with serving(server.url, _config(base, H, C, base / "catalog")) as handling, \
            serving(server.url, _config(base, C, H, None)) as window:
        await until(lambda: window.catalog.index.counts()["matters"] == 2)
        signer = handling.postmaster.signer
        good = entry("0000100003-370100000000-000-A", "出生医学证明补发")

        def forged(code: str, **fields: Any) -> tuple[str, bytes]:
            data = {**good.model_dump(exclude_none=True), "code": code, **fields}
            # Each value packed as it is (a float too), the map's keys in order.
            raw = encode({key: Raw(msgpack.packb(value) if isinstance(value, float) else encode(value))
                          for key, value in data.items()})
            [sig] = signer.sign([leaf_digest(TAG_CATALOG, raw)])
            return f"{H}.{code}", encode({"entry": Raw(raw), "sig": sig.model_dump()})

        await handling.transport.put_values(CATALOG_BUCKET, [
            forged("BIG-VERSION", version=2**63 - 1), forged("BAD-DATE", effective_to={"a": 1}),
            forged("BAD-MODE", modes=("x;proxy",)), forged("BAD-STATUS", status="zzz"),
            (good.key, sign_entries(signer, [good])[0].canonical_bytes),
            forged("FLOAT", legal_basis=1.5)])
        await until(lambda: window.catalog.search("出生医学证明") != [])
        reasons = {r["key"].split(".", 1)[1]: r["reason"] for r in window.catalog.index.rejections()}
        for code, field in (("BIG-VERSION", "version"), ("BAD-DATE", "effective_to"),
                            ("BAD-MODE", "modes"), ("BAD-STATUS", "status")):
            assert field in reasons[code], reasons
        # Found in search only as far as the index checks; opening it reports it.
        assert window.catalog.entry(H, "FLOAT") is None
        assert "unusable" in {r["key"]: r["reason"] for r in window.catalog.index.rejections()}[
            f"{H}.FLOAT"]
        # The same bad value again only counts up.
        await handling.transport.put_values(CATALOG_BUCKET, [forged("BAD-STATUS", status="zzz")])
        await until(lambda: any(r["times"] == 2 for r in window.catalog.index.rejections()))


async def test_a_version_published_ahead_of_its_date_waits_for_it(
        circle: tuple[Path, EmbeddedNats]) -> None:
    base, server = circle
    async with serving(server.url, _config(base, H, C, base / "catalog")) as handling, \
            serving(server.url, _config(base, C, H, None)) as window:
        await until(lambda: window.catalog.index.counts()["matters"] == 2)
        later = HUKOU.model_copy(update={"version": 2, "name": "户口迁移（迁入）2030版",
                                         "effective_from": "2030-01-01"})
        await handling.catalog.publish([later])
        await until(lambda: len(window.catalog.index.versions(H, HUKOU.code)) == 2)
        [hit] = window.catalog.search("迁移")
        assert hit["version"] == 1  # the version in force today
        assert window.catalog.entry(H, HUKOU.code) == HUKOU
        assert window.catalog.search("2030版") == []
        # An application pinned to the later version before it is in force is refused.
        application = window.catalog.sample_application(H, window.clock(), "ZZ-TEST-6")
        early = application.model_copy(update={"matter": b.MatterRef(
            code=HUKOU.code, version=2, name=later.name)})
        collected = await window.command(Command(None, "collect", early, peer=H))
        assert collected.case_id is not None
        await window.command(Command(collected.case_id, "submit"))
        await until(lambda: any("not in force" in r["detail"] for r in handling.store.rejections()))
