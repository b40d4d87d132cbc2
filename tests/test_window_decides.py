"""异地受理、远程办理 at the 通办专窗 in a real browser: for a matter whose catalog entry
lets the collecting region decide (呼和浩特 居民身份证异地换领、补领), the clerk 受理s at
the window and the handling region receives the case already accepted; a second
application goes through 窗口一次性告知补正 → 补齐 → 窗口受理; a third is refused at the
window and nothing goes to 呼和浩特. Screenshots: test-artifacts/web/window-decides-*.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright

from config import parse_config
from node.natsd import EmbeddedNats
from protocol import bodies as b
from protocol import decode
from receipts import NodeKeys
from tests.api_token import HTTP
from tests.serving import serving, until
from tests.test_window_pages import (
    ARTIFACTS,
    CHROMIUM,
    DESKTOP,
    SAMPLES,
    WINDOW,
    _accounts,
    _state,
    sign_in,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

HOHHOT = "150100"
ID_CARD = "0000107003-150100000000-000-111501000044104529-1-00"  # 居民身份证异地换领、补领


def _config(base: Path, region: str, peer: str) -> Any:
    return parse_config({
        "region": region, "name": {WINDOW: "郑州市", HOHHOT: "呼和浩特市"}[region],
        "data_dir": str(base / region), "http": HTTP,
        **({"catalog": str(SAMPLES / region)} if region == HOHHOT else {}),
        "departments": [{"kind": "desk", "name": "呼和浩特市公安局"}],
        "peers": [{"region": peer, "name": peer, "public": str(base / peer / "keys" / "public.json")}],
    }, base=base, environ={})


def _prepare(base: Path) -> Any:
    """Keys of both regions, the window's configuration and its clerk."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run 'make chromium' (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for region in (WINDOW, HOHHOT):
        NodeKeys.generate(region).save(base / region / "keys", valid_from=0)
    config = _config(base, WINDOW, HOHHOT)
    _accounts(config)
    return config


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"window-decides-{name}.png"), full_page=True)


async def _fill(page: Page, name: str, *, collect: bool) -> None:
    await page.goto(f"/window/apply/{HOHHOT}/{ID_CARD}")
    await page.fill("#a_name", name)
    await page.fill("#a_id_number", "11010519491231002X")
    await page.fill("#a_phone", "13812345678")
    await page.fill("#a_region", "150102")
    await page.fill("#f_applicant_id", "11010519491231002X")
    await page.select_option("#f_reason", "有效期满换领")
    await page.select_option("#f_temporary_card", "否")
    await page.select_option("#f_delivery", index=1)
    await page.fill("#f_phone", "13812345678")
    if collect:
        await page.check("#m2_collected")  # 居民身份证申领登记表 (必要)
    await page.check("#identity_passed")
    if collect:
        await page.check("#review_passed")


async def test_the_window_accepts_asks_once_and_refuses(tmp_path: Path) -> None:
    window_config = _prepare(tmp_path)
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, window_config) as window, \
            serving(server.url, _config(tmp_path, HOHHOT, WINDOW)) as hohhot, \
            async_playwright() as playwright:
        await until(lambda: window.catalog.index.has_region(HOHHOT))
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = await browser.new_context(viewport=DESKTOP,  # type: ignore[arg-type]
                                                base_url=window.address,  # type: ignore[attr-defined]
                                                locale="zh-CN")
            context.set_default_timeout(10_000)
            page = await context.new_page()
            await sign_in(page, "clerk")

            # 1. 窗口受理: the document number is required; the case goes out accepted.
            await _fill(page, "张受理", collect=True)
            await page.check("#w_decision_accept")
            await shot(page, "01-form")
            await page.click("#submit-application")
            assert "受理文书编号" in await page.locator("#err-w_doc_no").inner_text()
            await page.fill("#w_doc_no", "郑受〔2026〕0001号")
            await page.click("#submit-application")
            await page.wait_for_url("**/window/cases/*?done=window_accept")
            first = (await page.locator("#case-id").inner_text()).strip()
            assert "郑受〔2026〕0001号" in await page.locator("#case-summary").inner_text()
            assert "已受理" in await page.locator("#case-summary").inner_text()
            assert _state(window, first) in ("sent_decided", "accepted", "processing")
            await shot(page, "02-accepted")
            await until(lambda: _state(hohhot, first) is not None
                        and _state(hohhot, first) != "new", timeout=20)
            assert _state(hohhot, first) in ("forwarding", "processing")  # accepted on arrival
            sent = b.Application.model_validate(decode(hohhot.store.body(first, "application")
                                                       or b""))
            assert sent.acceptance == "collecting_decides"
            assert sent.window_decision is not None
            assert sent.window_decision.decided_by == "李收件"
            case = hohhot.engine.load_case(first)
            assert case is not None
            assert sent.window_decision.promised_date == case.promised_date_from(
                sent.window_decision.accepted_at)

            # 2. 窗口一次性告知补正 → 补齐 → 窗口受理.
            await _fill(page, "李补正", collect=False)
            await page.check("#w_decision_supplement")
            await page.click("#submit-application")
            assert "一次性告知" in await page.locator("#err-w_missing").inner_text()
            await page.check("#w_missing2")
            await page.fill("#w_missing_other", "近期免冠照片")
            await page.click("#submit-application")
            await page.wait_for_url("**/window/cases/*?done=window_supplement")
            second = (await page.locator("#case-id").inner_text()).strip()
            items = await page.locator("#window-supplement-items").inner_text()
            assert "居民身份证申领登记表" in items
            assert "近期免冠照片" in items
            assert _state(window, second) == "awaiting_materials"
            await shot(page, "03-supplement")
            await page.check("input[name=s0_paper]")
            await page.check("input[name=s1_paper]")
            await page.click("#submit-window-supplemented")
            await page.wait_for_url(f"**/window/cases/{second}?done=window_supplemented")
            assert await page.locator("#window-supplemented-form").count() == 0  # once
            await page.click("#submit-window-accept")
            assert "受理文书编号" in await page.locator("#err-w_doc_no").inner_text()
            await page.fill("#w_doc_no", "郑受〔2026〕0002号")
            await page.click("#submit-window-accept")
            await page.wait_for_url(f"**/window/cases/{second}?done=window_accept")
            await shot(page, "04-accepted-after-supplement")
            await until(lambda: _state(hohhot, second) not in (None, "new"), timeout=20)

            # 3. 窗口不予受理: reason and basis required; nothing goes to 呼和浩特.
            await _fill(page, "王不予", collect=False)
            await page.check("#w_decision_refuse")
            await page.fill("#w_refuse_reason", "申请人户籍在受理地，不属于异地换领。")
            await page.click("#submit-application")
            assert "法律依据" in await page.locator("#err-w_legal_basis").inner_text()
            await page.fill("#w_legal_basis", "《中华人民共和国行政许可法》第三十二条")
            await page.click("#submit-application")
            await page.wait_for_url("**/window/cases/*?done=window_refuse")
            third = (await page.locator("#case-id").inner_text()).strip()
            summary = await page.locator("#case-summary").inner_text()
            assert "不属于异地换领" in summary
            assert "第三十二条" in summary
            assert _state(window, third) == "refused"
            await shot(page, "05-refused")
            await until(lambda: _state(hohhot, second) not in (None, "new"), timeout=5)
            assert _state(hohhot, third) is None
            assert not window.store.envelopes(third)  # nothing sealed for 呼和浩特
            await context.close()
        finally:
            await browser.close()

