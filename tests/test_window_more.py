"""More of the 通办专窗 in a real browser: 撤回 from the case page (accepted by the
handling region, or refused because it had already decided), and 多地联办 from the
事项查询 to the 联办件 page. Nodes, accounts and the browser as in
tests/test_window_pages.py; screenshots in test-artifacts/web/window-more-*.png."""

from __future__ import annotations

import asyncio
import datetime
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from node.app import Node
from node.engine import Command
from node.natsd import EmbeddedNats
from protocol import bodies as b
from receipts import NodeKeys
from tests.serving import serving, until
from tests.test_window_pages import (
    ARTIFACTS,
    CHINA,
    CHROMIUM,
    DESKTOP,
    JINAN,
    _config,
    _prepare,
    _state,
    sign_in,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"window-more-{name}.png"), full_page=True)


async def _context(browser: Browser, node: Any, *, script: bool = True) -> BrowserContext:
    context = await browser.new_context(viewport=DESKTOP,  # type: ignore[arg-type]
                                        base_url=node.address, locale="zh-CN",
                                        java_script_enabled=script)
    context.set_default_timeout(10_000)
    return context


async def _sent(window: Node, jinan: Node, query: str) -> str:
    """A case collected at the window and received by 济南 (under review there)."""
    hit = window.catalog.search(query, regions=(JINAN,), mode="proxy", limit=1)[0]
    now = window.clock()
    application = window.catalog.sample_application(JINAN, now, window.window_no(now),
                                                    hit["code"], hit["version"])
    collected = await window.command(Command(None, "collect", application, peer=JINAN))
    assert collected.outcome == "applied", collected
    assert collected.case_id is not None
    assert (await window.command(Command(collected.case_id, "submit"))).outcome == "applied"
    case_id = collected.case_id
    await until(lambda: _state(jinan, case_id) == "received"
                and _state(window, case_id) == "under_review", timeout=20)
    return case_id


def _accept(jinan: Node, case_id: str) -> Command:
    case = jinan.engine.load_case(case_id)
    assert case is not None
    now = jinan.clock()
    return Command(case_id, "accept", b.Accept(
        doc_no=f"济受〔2026〕{case_id[-6:]}号", accepted_at=now,
        promised_date=case.promised_date_from(now), decided_by="王审核"))


def _withdraw(window: Node, case_id: str) -> Command:
    return Command(case_id, "withdraw", b.Withdrawal(
        reason="申请人决定暂不办理。", requested_at=window.clock(), requested_by="李收件"))


async def test_a_clerk_withdraws_and_is_told_when_the_decision_came_first(
        tmp_path: Path) -> None:
    started = time.monotonic()
    window_config, _ = _prepare(tmp_path)
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, window_config) as window, \
            serving(server.url, _config(tmp_path, JINAN, window_config.region)) as jinan, \
            async_playwright() as playwright:
        await until(lambda: window.catalog.index.has_region(JINAN))
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # 1. Before the decision: the reason is required; then 撤回中 → 已撤回, live.
            case_id = await _sent(window, jinan, "就医备案")
            context = await _context(browser, window)
            page = await context.new_page()
            await sign_in(page, "clerk")
            await page.goto(f"/window/cases/{case_id}")
            await page.click("#submit-withdrawal")
            assert "请填写申请人撤回申请的原因" in await page.locator("#err-w_reason").inner_text()
            assert await page.get_attribute("#w_reason", "aria-invalid") == "true"
            await page.fill("#w_reason", "申请人决定暂不办理。")
            await page.click("#submit-withdrawal")
            await page.wait_for_url(f"**/window/cases/{case_id}?done=withdraw")
            status = page.locator("#withdrawal-status")
            assert (await status.inner_text()).startswith(("撤回中", "已撤回"))  # racing the reply
            await page.locator("#case-state:has-text('已撤回')").wait_for()
            assert (await status.inner_text()).startswith("已撤回")
            assert await page.locator("#withdraw-form").count() == 0  # nothing left to withdraw
            assert "已撤回" in await page.locator("#timeline").inner_text()
            await until(lambda: _state(jinan, case_id) == "withdrawn", timeout=20)
            await shot(page, "01-withdrawn")
            await context.close()

            # 2. The page was loaded before the decision (no script: not refreshed);
            #    the handling side accepts; the withdrawal is refused, with what to do.
            case_id = await _sent(window, jinan, "就医备案")
            context = await _context(browser, window, script=False)
            page = await context.new_page()
            await sign_in(page, "clerk")
            await page.goto(f"/window/cases/{case_id}")
            assert (await jinan.command(_accept(jinan, case_id))).outcome == "applied"
            await until(lambda: _state(window, case_id) not in ("under_review", None),
                        timeout=20)
            await page.fill("#w_reason", "申请人决定暂不办理。")
            await page.click("#submit-withdrawal")
            error = await page.locator("#action-error").inner_text()
            assert error.startswith("撤回未获同意")
            assert "请告知申请人" in error
            await shot(page, "02-withdrawal-too-late")
            await context.close()

            # 3. The decision and the withdrawal cross on the wire: 撤回未获同意.
            case_id = await _sent(window, jinan, "就医备案")
            accepted, withdrawn = await asyncio.gather(jinan.command(_accept(jinan, case_id)),
                                                       window.command(_withdraw(window, case_id)))
            assert (accepted.outcome, withdrawn.outcome) == ("applied", "applied")
            context = await _context(browser, window)
            page = await context.new_page()
            await sign_in(page, "clerk")
            await page.goto(f"/window/cases/{case_id}")
            await page.locator("#withdrawal-status:has-text('撤回未获同意')").wait_for()
            assert await page.locator("#withdraw-form").count() == 0
            await shot(page, "03-withdrawal-refused")
            await context.close()
        finally:
            await browser.close()
    assert time.monotonic() - started < 40


async def test_a_clerk_takes_a_joint_application_once_and_follows_its_parts(
        tmp_path: Path) -> None:
    from tests.test_joint import CHENGDU, WINDOW, _decide
    from tests.test_joint import _config as joint_config

    started = time.monotonic()
    _prepare(tmp_path)  # keys of 郑州 and 济南, the clerk's account, the artifacts folder
    NodeKeys.generate(CHENGDU).save(tmp_path / CHENGDU / "keys", valid_from=0)
    regions = (WINDOW, JINAN, CHENGDU)
    configs = {r: joint_config(tmp_path, r, [p for p in regions if p != r]) for r in regions}
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, configs[WINDOW]) as window, \
            serving(server.url, configs[JINAN]) as jinan, \
            serving(server.url, configs[CHENGDU]) as chengdu, \
            async_playwright() as playwright:
        await until(lambda: window.catalog.index.has_region(JINAN)
                    and window.catalog.index.has_region(CHENGDU))
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = await _context(browser, window)
            page = await context.new_page()
            await sign_in(page, "clerk")

            # 1. 事项查询: 户口迁移 is offered as 多地联办 and links to 联办收件.
            await page.goto("/window/matters")
            await page.fill("#q", "户口迁移")
            await page.select_option("#mode", "joint")
            await page.click("button:has-text('查询')")
            row = page.locator(f"#matters tr[data-region='{JINAN}']")
            await row.locator("a:has-text('联办收件')").click()
            assert "联办收件：户口迁移" in await page.locator("h1").inner_text()
            assert "成都市" in await page.locator(".matter-facts").inner_text()

            # 2. The applicant once; one place only: told to name at least two.
            await page.fill("#a_name", "张三丰")
            await page.fill("#a_id_number", "11010519491231002X")
            await page.fill("#a_phone", "13812345678")
            await page.fill("#a_region", "370102")
            await page.fill("#loc0", "370102")
            await page.select_option("#f_move_reason", "投靠子女")
            await page.fill("#f_from_region", "370102")
            await page.fill("#f_applicant_id", "11010519491231002X")
            await page.fill("#f_persons", "0")
            await page.fill("#f_phone", "13812345678")
            for i in range(3):  # 居民身份证, 居民户口簿, 户口迁移申请表
                await page.check(f"#m{i}_collected")
            await page.check("#identity_passed")
            await page.check("#review_passed")
            await page.click("#submit-joint")
            assert "至少要填两个地点" in await page.locator("#err-locations").inner_text()
            assert await page.get_attribute("#loc1", "aria-invalid") == "true"
            assert await page.input_value("#f_persons") == "0"  # what was typed is kept
            assert await page.is_checked("#m2_collected")
            await shot(page, "04-joint-one-place")

            # 3. Two places: two parts, routed to 济南 and 成都, collected in one batch.
            await page.fill("#loc1", "510104")
            await page.click("#submit-joint")
            await page.wait_for_url("**/window/joints/*")
            joint_id = (await page.locator("#joint-id").inner_text()).strip()
            parts = page.locator("#joint-parts tbody tr")
            assert await parts.count() == 2
            assert [await parts.nth(i).get_attribute("data-handling") for i in range(2)] == [
                JINAN, CHENGDU]
            assert "济南市" in await parts.nth(0).inner_text()
            assert await page.locator("#joint-state").inner_text() == "联办中"
            joint = window.store.joint(joint_id)
            assert joint is not None
            first, second = (case_id for case_id, _ in joint["parts"])
            await shot(page, "05-joint-collected")
            await page.evaluate("window.sameDocument = true")

            # 4. 成都 refuses (户口迁移: whole_case): 济南's part is withdrawn, live.
            await until(lambda: _state(jinan, first) == "received", timeout=20)
            await _decide(chengdu, second, "refuse")
            await page.locator("#joint-state:has-text('联办失败')").wait_for(timeout=20_000)
            await page.locator("#joint-parts tr[data-part='1'] .part-outcome:has-text('已撤回')"
                               ).wait_for(timeout=20_000)
            outcomes = await page.locator("#joint-parts .part-outcome").all_inner_texts()
            assert outcomes == ["已撤回", "不予受理"]
            assert await page.evaluate("window.sameDocument") is True  # no reload
            await shot(page, "06-joint-failed")

            # 5. A part's own page is the ordinary case page.
            await page.click("#joint-parts tr[data-part='2'] a:has-text('办件详情')")
            assert await page.locator("#case-state").inner_text() == "不予受理"
            response = await page.goto("/window/joints/nothing-here")
            assert response is not None
            assert response.status == 404
            await context.close()
        finally:
            await browser.close()
    assert time.monotonic() - started < 40


async def _tab_to(page: Page, target: str, seen: list[str], limit: int = 80) -> None:
    """Press Tab until ``#target`` has the focus, noting every field passed."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement.id")
        if not seen or seen[-1] != focused:
            seen.append(focused)
        if focused == target:
            return
    raise AssertionError(f"Tab never reached #{target}; passed {seen}")


async def _choose(page: Page, target: str, label: str) -> None:
    """A focused <select>: arrow down until the option ``label`` is chosen."""
    for _ in range(20):
        if await page.evaluate("document.activeElement.selectedOptions[0].label") == label:
            return
        await page.keyboard.press("ArrowDown")
    raise AssertionError(f"#{target} has no option {label}")


async def _date_order(page: Page) -> list[str]:
    """The order of a date input's parts in this browser: the system locale's, not the
    page's (Debian's chromium shows 月/日/年). Found by typing 11, 12, 2000 into a probe."""
    focused = await page.evaluate("document.activeElement.id")
    await page.evaluate("""() => { const probe = document.createElement('input');
        probe.type = 'date'; probe.id = 'date-probe'; document.body.append(probe);
        probe.focus(); }""")
    await page.keyboard.type("11122000")
    value = await page.evaluate("document.getElementById('date-probe').value")
    await page.evaluate(f"""() => {{ document.getElementById('date-probe').remove();
        document.getElementById('{focused}').focus(); }}""")
    return {"2000-11-12": ["month", "day", "year"],
            "2000-12-11": ["day", "month", "year"]}.get(value, ["year", "month", "day"])


async def _type_date(page: Page, day: datetime.date) -> None:
    """A focused date input, typed part by part; 年 takes up to 6 digits, so → leaves
    it, 月 and 日 move on by themselves."""
    order = await _date_order(page)
    for n, part in enumerate(order):
        await page.keyboard.type({"year": f"{day:%Y}", "month": f"{day:%m}",
                                  "day": f"{day:%d}"}[part])
        if part == "year" and n < len(order) - 1:
            await page.keyboard.press("ArrowRight")


async def test_a_clerk_fills_the_intake_form_with_the_keyboard_only(tmp_path: Path) -> None:
    started = time.monotonic()
    window_config, _ = _prepare(tmp_path)
    today = datetime.datetime.now(CHINA).date()
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, window_config) as window, \
            serving(server.url, _config(tmp_path, JINAN, window_config.region)) as jinan, \
            async_playwright() as playwright:
        await until(lambda: window.catalog.index.has_region(JINAN))
        hit = window.catalog.search("就医备案", regions=(JINAN,), mode="proxy", limit=1)[0]
        entry = window.catalog.entry(JINAN, hit["code"], hit["version"])
        assert entry is not None
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = await _context(browser, window)
            page = await context.new_page()
            await sign_in(page, "clerk")
            await page.goto(f"/window/apply/{JINAN}/{hit['code']}?version={hit['version']}")
            typed = {"a_name": "张三丰", "a_id_number": "11010519491231002X",
                     "a_phone": "13812345678", "a_region": "370102",
                     "f_applicant_id": "11010519491231002X", "f_phone": "1381234567",  # 10 digits
                     "f_destination": "410105"}
            seen: list[str] = []
            # Tab through the form in reading order, typing, choosing and ticking as it goes.
            for field in ("a_name", "a_id_number", "a_phone", "a_region"):
                await _tab_to(page, field, seen)
                await page.keyboard.type(typed[field])
            for f in entry.form:
                await _tab_to(page, f"f_{f.name}", seen)
                if f.name == "insured_category":
                    await _choose(page, "f_insured_category", "异地长期居住人员")
                elif f.kind == "date":
                    await _type_date(page, today)
                elif f"f_{f.name}" in typed:
                    await page.keyboard.type(typed[f"f_{f.name}"])
            for i, m in enumerate(entry.materials):
                if m.necessity == "required":
                    await _tab_to(page, f"m{i}_collected", seen)
                    await page.keyboard.press("Space")
            for check in ("identity_passed", "review_passed"):
                await _tab_to(page, check, seen)
                await page.keyboard.press("Space")
            await _tab_to(page, "review_notes", seen)
            # The applicant fields came in reading order.
            order = [s for s in seen if s.startswith("a_")]
            assert order == ["a_kind", "a_name", "a_id_type", "a_id_number", "a_phone",
                             "a_region", "a_address"], order
            assert await page.input_value("#f_start_date") == today.isoformat()
            await page.keyboard.press("Enter")  # submits the form

            # One field wrong: the focus is on it, its message read with it.
            await page.wait_for_load_state()
            await page.locator("#error-summary").wait_for()
            assert await page.locator("#error-summary li").count() == 1
            await page.wait_for_function("document.activeElement.id === 'f_phone'")
            described = await page.get_attribute("#f_phone", "aria-describedby") or ""
            assert "err-f_phone" in described.split()
            await shot(page, "07-keyboard-error")
            await page.keyboard.press("End")
            await page.keyboard.type("8")  # the missing digit
            await page.keyboard.press("Enter")
            await page.wait_for_url("**/window/cases/*")
            case_id = (await page.locator("#case-id").inner_text()).strip()
            await until(lambda: _state(jinan, case_id) == "received", timeout=20)
            await context.close()
        finally:
            await browser.close()
    assert time.monotonic() - started < 40
