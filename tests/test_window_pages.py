"""The 通办专窗 clerk's pages in a real browser: Playwright drives Debian's chromium
against two real nodes on one embedded nats-server — a collecting window (郑州) and a
handling region (济南, its reviewer's decisions made here with ``node.command``, its
department desk concluding at once). One application walks from the catalog search
to the 好差评; a screenshot of each step is kept in test-artifacts/web/window-*.png."""

from __future__ import annotations

import datetime
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright

from config import parse_config
from node.app import Node
from node.engine import Command
from node.natsd import EmbeddedNats
from node.store.accounts import FILENAME, AccountStore
from node.web.auth import HASHER
from protocol import bodies as b
from protocol import decode
from receipts import NodeKeys
from tests.api_token import HTTP
from tests.serving import serving, until

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
SAMPLES = Path(__file__).resolve().parent.parent / "config" / "catalogs"
WINDOW, JINAN = "410100", "370100"
PASSWORD = "correct-horse-9"
DESKTOP = {"width": 1366, "height": 768}
MEDICAL = "异地就医备案"  # 济南: 异地代收代办, 办理地受理; 异地居住证明 may be 容缺
CHINA = datetime.timezone(datetime.timedelta(hours=8))


def _config(base: Path, region: str, peer: str) -> Any:
    return parse_config({
        "region": region, "name": {WINDOW: "郑州市", JINAN: "济南市"}[region],
        "data_dir": str(base / region), "http": HTTP,
        **({"catalog": str(SAMPLES / region)} if region == JINAN else {}),
        "departments": [{"kind": "desk", "name": "济南市医疗保障局", "auto_conclude": True}],
        "peers": [{"region": peer, "name": peer, "public": str(base / peer / "keys" / "public.json")}],
    }, base=base, environ={})


def _accounts(config: Any) -> None:
    store = AccountStore(config.data_dir / FILENAME)
    password_hash = HASHER.hash(PASSWORD)
    for username, name, region in (("clerk", "李收件", WINDOW), ("outsider", "孙济南", JINAN)):
        store.create(username=username, display_name=name, roles=("clerk",), region=region,
                     password_hash=password_hash, now=time.time_ns() // 1_000_000, actor="test")
    store.close()


def _prepare(base: Path) -> tuple[Any, Path]:
    """Keys of both regions, the window's configuration and accounts, a scan to upload."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run 'make chromium' (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for region in (WINDOW, JINAN):
        NodeKeys.generate(region).save(base / region / "keys", valid_from=0)
    config = _config(base, WINDOW, JINAN)
    _accounts(config)
    scan = base / "登记备案表.pdf"
    scan.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 12_000)  # about 3 MB
    return config, scan


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"window-{name}.png"), full_page=True)


async def sign_in(page: Page, username: str) -> None:
    await page.goto("/login")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]:has-text('登录')")
    await page.wait_for_load_state()


def _state(node: Node, case_id: str) -> str | None:
    return (node.store.case_row(case_id) or {}).get("state")


async def test_a_clerk_collects_follows_supplements_delivers_and_records_the_evaluation(
        tmp_path: Path) -> None:
    window_config, scan = _prepare(tmp_path)
    today = datetime.datetime.now(CHINA).date()
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, window_config) as window, \
            serving(server.url, _config(tmp_path, JINAN, WINDOW)) as jinan, \
            async_playwright() as playwright:
        await until(lambda: window.catalog.index.has_region(JINAN))
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = await browser.new_context(viewport=DESKTOP,  # type: ignore[arg-type]
                                                base_url=window.address,  # type: ignore[attr-defined]
                                                locale="zh-CN")
            context.set_default_timeout(10_000)
            page = await context.new_page()
            await sign_in(page, "clerk")
            await page.click("a:has-text('事项查询')")

            # 1. Search every partner's catalog and pick the matter.
            await page.fill("#q", "就医备案")
            await page.select_option("#region", JINAN)
            await page.click("button:has-text('查询')")
            row = page.locator(f"#matters tr[data-region='{JINAN}']", has_text=MEDICAL)
            assert "济南市" in await row.inner_text()
            await shot(page, "01-search")
            await row.locator("a:has-text('收件登记')").click()
            assert MEDICAL in await page.locator("h1").inner_text()

            # 2. The form its catalog entry defines, the checklist, the checks, a scan.
            await page.fill("#a_name", "张三丰")
            await page.fill("#a_id_number", "11010519491231002X")
            await page.fill("#a_phone", "13812345678")
            await page.fill("#a_region", "370102")
            await page.select_option("#f_insured_category", "异地长期居住人员")
            await page.fill("#f_start_date", today.isoformat())
            await page.fill("#f_applicant_id", "11010519491231002X")
            await page.fill("#f_phone", "13812345678")
            # f_destination (就医地, required) is left empty on purpose.
            await page.check("#m0_collected")
            await page.check("#m1_collected")
            await page.click("#field-m3 summary")
            await page.check("#m3_deferred")
            await page.fill("#m3_due", (today + datetime.timedelta(days=7)).isoformat())
            await page.select_option("#apply-scan-for", "跨省异地就医登记备案表")
            await page.set_input_files("#apply-scan-file", str(scan))
            done = page.locator("#apply-scans .scan-done")
            await done.wait_for()
            assert await done.locator("progress").evaluate("p => p.value") == 100
            assert "已上传" in await done.inner_text()
            await page.check("#identity_passed")
            await page.check("#review_passed")
            await shot(page, "02-form")
            await page.click("#submit-application")
            error = page.locator("#err-f_destination")
            assert "就医地行政区划：必填" in await error.inner_text()
            assert await page.get_attribute("#f_destination", "aria-invalid") == "true"
            assert await page.input_value("#a_name") == "张三丰"  # what was typed is kept
            assert await page.input_value("#f_phone") == "13812345678"
            assert await page.is_checked("#m3_deferred")
            assert await page.locator("#apply-scans .scan-done").count() == 1  # and the scan
            await shot(page, "03-missing-field")

            # 3. Submit: the detail page, then live updates.
            await page.fill("#f_destination", "410105")
            await page.click("#submit-application")
            await page.wait_for_url("**/window/cases/*")
            case_id = (await page.locator("#case-id").inner_text()).strip()
            assert "已发送至办理地" in await page.locator("#timeline").inner_text()
            await page.evaluate("window.sameDocument = true")
            await shot(page, "04-sent")
            await until(lambda: _state(jinan, case_id) == "received", timeout=20)
            application = b.Application.model_validate(
                decode(jinan.store.body(case_id, "application") or b""))
            assert [d.material for d in application.deferred] == [
                "异地居住或工作证明（居住证、工作证明或个人承诺书）"]
            assert any(m.object for m in application.materials)

            # 4. A 补正 round: the request shows up live; the clerk supplements.
            now = jinan.clock()
            asked = await jinan.command(Command(case_id, "request_supplement", b.SupplementRequest(
                items=(b.SupplementItem(material="跨省异地就医登记备案表",
                                        reason="申请人未签字，请补交签字后的原件。"),),
                note="请一次性补齐。", notified_at=now, decided_by="王审核")))
            assert asked.outcome == "applied", asked
            items = page.locator("#supplement-items")
            await items.wait_for()
            assert "申请人未签字" in await items.inner_text()
            assert await page.locator("#case-state").inner_text() == "待补正"
            assert await page.evaluate("window.sameDocument") is True  # no reload
            await shot(page, "05-supplement-requested")
            await page.click("#submit-supplement")  # nothing ticked: told what to do
            assert "请勾选申请人已补交的纸质材料" in await page.locator(
                "#err-s_materials").inner_text()
            await page.check("input[name=s0_paper]")
            await page.click("#submit-supplement")
            await page.wait_for_url(f"**/window/cases/{case_id}?done=supplement")
            await page.evaluate("window.sameDocument = true")
            await until(lambda: _state(jinan, case_id) == "supplied", timeout=20)

            # 5. The handling region accepts; the department concludes at once.
            case = jinan.engine.load_case(case_id)
            assert case is not None
            now = jinan.clock()
            accepted = await jinan.command(Command(case_id, "accept", b.Accept(
                doc_no="济医保受〔2026〕0001号", accepted_at=now,
                promised_date=case.promised_date_from(now), decided_by="王审核")))
            assert accepted.outcome == "applied", accepted
            await page.locator("#timeline li[data-kind=accepted]").first.wait_for()
            assert "已受理" in await page.locator("#timeline").inner_text()
            await page.locator("#outcome").wait_for()
            assert await page.locator("#case-state").inner_text() == "已办结·待送达"
            assert await page.evaluate("window.sameDocument") is True
            await shot(page, "06-outcome")

            # 6. 邮寄: courier and tracking number are required.
            await page.check("input[name=d_mode][value=post]")
            await page.fill("#d_courier", "中国邮政EMS")
            await page.click("#submit-delivery")
            assert "物流单号" in await page.locator("#err-d_tracking").inner_text()
            await page.fill("#d_tracking", "EMS1234567890")
            await page.click("#submit-delivery")
            await page.wait_for_url(f"**/window/cases/{case_id}?done=deliver")
            assert "EMS1234567890" in await page.locator("#delivery-record").inner_text()
            await shot(page, "07-delivered")

            # 7. 好差评: five stars (GB/T 39046 A.8 code 1, 非常满意) and a comment.
            await page.check("input[name=e_stars][value='5']")
            await page.fill("#e_text", "窗口服务热情，一次办好。")
            await page.click("#submit-evaluation")
            await page.wait_for_url(f"**/window/cases/{case_id}?done=evaluate")
            record = await page.locator("#evaluation-record").inner_text()
            assert "非常满意" in record
            assert "一次办好" in record
            await shot(page, "08-evaluated")
            await until(lambda: _state(jinan, case_id) == "evaluated", timeout=20)
            await context.close()

            # 8. A clerk of another region is refused.
            context = await browser.new_context(viewport=DESKTOP,  # type: ignore[arg-type]
                                                base_url=window.address,  # type: ignore[attr-defined]
                                                locale="zh-CN")
            page = await context.new_page()
            await sign_in(page, "outsider")
            for path in ("/window/matters", f"/window/cases/{case_id}",
                         f"/window/apply/{JINAN}/x"):
                response = await page.goto(path)
                assert response is not None
                assert response.status == 403, path
            assert "请登录您所在地区的节点" in await page.locator(".next-step").inner_text()
            await shot(page, "09-other-region")
            await context.close()
        finally:
            await browser.close()

