"""The whole walk in a real browser, across two running nodes on one embedded
nats-server: a 通办专窗 clerk at 郑州 (410100) collects an application for a matter of
济南 (370100); 济南's reviewer (审核员) sees it in the 待办队列 with its clocks, views
the scan in the page, asks for 补正 once; the clerk supplements; the reviewer accepts;
济南's department desk (部门办理员) records a 办理环节, a 特别程序 and the 办结; the clerk
hands the result over by post and records the 好差评. Each step's screenshot is kept
in test-artifacts/web/walk-*.png."""

from __future__ import annotations

import datetime
import shutil
import struct
import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from config import parse_config
from node.app import Node
from node.natsd import EmbeddedNats
from node.store.accounts import FILENAME, AccountStore
from node.web.auth import HASHER
from node.web.desk import clock_of
from protocol.calendar import WeekdayCalendar
from protocol.fields import end_of_day
from receipts import NodeKeys
from tests.api_token import HTTP
from tests.serving import serving, until

pytestmark = [pytest.mark.timeout(120)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
SAMPLES = Path(__file__).resolve().parent.parent / "config" / "catalogs"
WINDOW, JINAN = "410100", "370100"
PASSWORD = "correct-horse-9"
DESKTOP = {"width": 1366, "height": 768}
MEDICAL = "异地就医备案"
FORM_TABLE = "跨省异地就医登记备案表"
CHINA = datetime.timezone(datetime.timedelta(hours=8))
#: username → (name, roles, region, node)
ACCOUNTS = {
    "clerk": ("李收件", ("clerk",), WINDOW, WINDOW),
    "reviewer": ("王审核", ("reviewer",), JINAN, JINAN),
    "dept": ("赵办理", ("department",), JINAN, JINAN),
    "outsider": ("孙郑州", ("reviewer",), WINDOW, JINAN),
}


def _config(base: Path, region: str, peer: str) -> Any:
    return parse_config({
        "region": region, "name": {WINDOW: "郑州市", JINAN: "济南市"}[region],
        "data_dir": str(base / region), "http": HTTP,
        **({"catalog": str(SAMPLES / region)} if region == JINAN else {}),
        "departments": [{"kind": "desk", "name": "济南市医疗保障局", "auto_conclude": False}],
        "auto_review": False,
        "peers": [{"region": peer, "name": peer, "public": str(base / peer / "keys" / "public.json")}],
    }, base=base, environ={})


def _accounts(config: Any, region: str) -> None:
    store = AccountStore(config.data_dir / FILENAME)
    password_hash = HASHER.hash(PASSWORD)
    for username, (name, roles, home, node) in ACCOUNTS.items():
        if node == region:
            store.create(username=username, display_name=name, roles=roles, region=home,
                         password_hash=password_hash, now=time.time_ns() // 1_000_000,
                         actor="test")
    store.close()


def _png(width: int = 240, height: int = 160) -> bytes:
    """A small real PNG (a grey gradient), so the browser can draw it."""
    rows = b"".join(b"\x00" + bytes((x + y) % 256 for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def _pdf() -> bytes:
    """A one-page PDF the browser's viewer can open (a framed box and a line of text)."""
    stream = b"4 w 72 560 468 200 re S BT /F1 28 Tf 100 650 Td (Registration form, signed) Tj ET"
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def _prepare(base: Path) -> tuple[Any, Any, Path, Path]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run 'make chromium' (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for region in (WINDOW, JINAN):
        NodeKeys.generate(region).save(base / region / "keys", valid_from=0)
    window, jinan = _config(base, WINDOW, JINAN), _config(base, JINAN, WINDOW)
    _accounts(window, WINDOW)
    _accounts(jinan, JINAN)
    pdf = base / "登记备案表.pdf"
    pdf.write_bytes(_pdf())
    png = base / "签字页.png"
    png.write_bytes(_png())
    return window, jinan, pdf, png


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"walk-{name}.png"), full_page=True)


async def signed_in(browser: Browser, node: Node, username: str) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport=DESKTOP,  # type: ignore[arg-type]
                                        base_url=node.address,  # type: ignore[attr-defined]
                                        locale="zh-CN")
    context.set_default_timeout(15_000)
    page = await context.new_page()
    await page.goto("/login")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]:has-text('登录')")
    await page.wait_for_load_state()
    return context, page


def _state(node: Node, case_id: str) -> str | None:
    return (node.store.case_row(case_id) or {}).get("state")


def _arrived(node: Node, case_id: str, count: int) -> bool:
    """The scans of a case have all reached the handling node."""
    rows = node.store.materials_in("fetched", 100)
    return sum(1 for row in rows if row["case_id"] == case_id) >= count


async def no_horizontal_scroll(page: Page) -> bool:
    return bool(await page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


async def post_again(page: Page, path: str, fields: dict[str, str]) -> tuple[int, str]:
    """A form POST the page no longer offers, made by hand with the session's token."""
    result = await page.evaluate("""async ([path, fields]) => {
        const token = document.querySelector('meta[name="csrf-token"]').content;
        const body = new URLSearchParams({...fields, csrf_token: token});
        const response = await fetch(path, {method: "POST", body});
        return [response.status, await response.text()];
    }""", [path, fields])
    return int(result[0]), str(result[1])


@pytest.mark.asyncio
async def test_the_whole_walk_across_two_nodes(tmp_path: Path) -> None:
    window_config, jinan_config, pdf, png = _prepare(tmp_path)
    today = datetime.datetime.now(CHINA).date()
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, window_config) as window, \
            serving(server.url, jinan_config) as jinan, \
            async_playwright() as playwright:
        await until(lambda: window.catalog.index.has_region(JINAN))
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            _, desk = await signed_in(browser, jinan, "reviewer")
            await desk.click("a:has-text('待初审')")
            await desk.wait_for_url("**/desk")
            assert await desk.locator("#queue-empty").count() == 1
            _, clerk = await signed_in(browser, window, "clerk")

            # 1. The clerk collects the application with a scan and sends it.
            await clerk.goto(f"/window/matters?q=就医备案&region={JINAN}")
            row = clerk.locator(f"#matters tr[data-region='{JINAN}']", has_text=MEDICAL)
            await row.locator("a:has-text('收件登记')").click()
            for field, value in (("#a_name", "张三丰"), ("#a_id_number", "11010519491231002X"),
                                 ("#a_phone", "13812345678"), ("#a_region", "370102"),
                                 ("#f_start_date", today.isoformat()),
                                 ("#f_applicant_id", "11010519491231002X"),
                                 ("#f_phone", "13812345678"), ("#f_destination", "410105")):
                await clerk.fill(field, value)
            await clerk.select_option("#f_insured_category", "异地长期居住人员")
            await clerk.check("#m0_collected")
            await clerk.check("#m1_collected")
            await clerk.click("#field-m3 summary")
            await clerk.check("#m3_deferred")
            await clerk.fill("#m3_due", (today + datetime.timedelta(days=7)).isoformat())
            await clerk.select_option("#apply-scan-for", FORM_TABLE)
            await clerk.set_input_files("#apply-scan-file", str(pdf))
            await clerk.locator("#apply-scans .scan-done").wait_for()
            await clerk.check("#identity_passed")
            await clerk.check("#review_passed")
            await clerk.click("#submit-application")
            await clerk.wait_for_url("**/window/cases/*")
            case_id = (await clerk.locator("#case-id").inner_text()).strip()
            await shot(clerk, "01-clerk-submitted")

            # 2. It shows up in the reviewer's queue by itself, with the 5-day clock.
            queued = desk.locator(f"#queue tr[data-case='{case_id}']")
            await queued.wait_for(timeout=20_000)
            text = await queued.inner_text()
            assert MEDICAL in text
            assert "郑州市" in text
            assert "补正告知期限" in text
            assert "剩" in text
            assert await no_horizontal_scroll(desk)
            await desk.fill("#q", "没有这个事项")
            await desk.click("#queue-filter button")
            assert await desk.locator("#queue-empty").count() == 1
            await desk.fill("#q", "就医")
            await desk.click("#queue-filter button")
            await shot(desk, "02-reviewer-queue")

            # 3. The reviewer opens the case and views the PDF scan in the page.
            await until(lambda: _arrived(jinan, case_id, 1), timeout=20)
            await desk.locator(f"#queue a:has-text('{case_id}')").click()
            assert await desk.locator("#applicant-name").inner_text() == "张三丰"
            await desk.click(f"#materials li:has-text('{FORM_TABLE}') a.view-scan")
            frame = desk.locator("iframe#scan-frame")
            await frame.wait_for()
            source = await frame.get_attribute("src")
            assert source is not None
            fetched = await desk.evaluate("""async (src) => {
                const r = await fetch(src);
                return [r.status, r.headers.get('content-type'), (await r.arrayBuffer()).byteLength,
                        r.headers.get('x-frame-options')];
            }""", source)
            assert fetched == [200, "application/pdf", pdf.stat().st_size, "SAMEORIGIN"]
            assert await no_horizontal_scroll(desk)
            await desk.wait_for_timeout(1000)  # the browser's PDF viewer draws the page
            await shot(desk, "03-reviewer-views-scan")

            # 4. 补正, once: an item from the catalog's list and a free-text one.
            await desk.click("#decision-supplement summary")
            await desk.check(f"#field-sm label:has-text('{FORM_TABLE}') input")
            await desk.fill("#sm2_reason", "申请人未签字，请补交签字页。")
            await desk.fill("#sm_note", "请一次性补齐。")
            await shot(desk, "04-reviewer-asks-supplement")
            await desk.click("#submit-supplement")
            await desk.wait_for_url(f"**/desk/cases/{case_id}?done=supplement")
            assert "申请人未签字" in await desk.locator("#supplement-items").inner_text()
            assert await desk.locator("#supplement-form").count() == 0
            assert "不能再次要求补正" in await desk.locator("#no-second-supplement").inner_text()

            # 5. The clerk sees the request live and supplements with a scan.
            items = clerk.locator("#supplement-items")
            await items.wait_for(timeout=20_000)
            assert "申请人未签字" in await items.inner_text()
            await clerk.check("input[name=s0_paper]")
            await clerk.set_input_files("#supplement-scan-file", str(png))
            await clerk.locator("#supplement-scans .scan-done").wait_for()
            await shot(clerk, "05-clerk-supplements")
            await clerk.click("#submit-supplement")
            await clerk.wait_for_url(f"**/window/cases/{case_id}?done=supplement")

            # 6. The reviewer's page follows; 补正 is not offered a second time.
            await until(lambda: _state(jinan, case_id) == "supplied", timeout=20)
            await desk.locator("#supplied-note").wait_for(timeout=20_000)
            assert await desk.locator("#supplement-form").count() == 0
            assert "不能再次要求补正" in await desk.locator("#no-second-supplement").inner_text()
            status, body = await post_again(desk, f"/desk/cases/{case_id}/supplement",
                                            {"sm0": "on"})
            assert status == 409
            assert "补正只能一次性告知" in body
            await until(lambda: _arrived(jinan, case_id, 2), timeout=20)
            await desk.goto(f"/desk/cases/{case_id}")
            await desk.click("#materials li:has-text('（补正）') a.view-scan")
            image = desk.locator("img#scan-image")
            await image.wait_for()
            await desk.wait_for_function(
                "document.getElementById('scan-image').naturalWidth === 240")
            await shot(desk, "06-reviewer-views-supplement")

            # 7. 受理 with a 受理文书编号; the promised date is shown; then 流转.
            await desk.click("#submit-accept")  # no number: told what to write
            assert "受理文书编号" in await desk.locator("#err-doc_no").inner_text()
            await desk.fill("#doc_no", "济医保受〔2026〕0001号")
            promised = (await desk.locator("#promised-date strong").inner_text()).strip()
            assert datetime.date.fromisoformat(promised) >= today  # 即办件: 0 working days
            await desk.click("#submit-accept")
            await desk.wait_for_url(f"**/desk/cases/{case_id}?done=accept")
            await until(lambda: _state(jinan, case_id) == "processing", timeout=20)
            await desk.locator("#forward-state:has-text('济南市医疗保障局')").wait_for()
            assert promised in await desk.locator("#accept-record").inner_text()
            await shot(desk, "07-reviewer-accepted-forwarded")

            # 8. The department: a 办理环节, a 特别程序 started and ended, the 办结.
            _, dept = await signed_in(browser, jinan, "dept")
            await dept.click("a:has-text('部门办理')")
            await dept.wait_for_url("**/dept")
            queued = dept.locator(f"#queue tr[data-case='{case_id}']")
            assert f"承诺办结 {promised}" in await queued.inner_text()
            await shot(dept, "08-department-queue")
            await queued.locator("a").first.click()
            await dept.fill("#step_name", "审查")
            await dept.fill("#step_opinion", "材料齐全，符合备案条件。")
            await dept.click("#submit-step")
            await dept.wait_for_url(f"**/dept/cases/{case_id}?done=step")
            await dept.click("#action-suspend summary")
            await dept.fill("#sp_name", "现场核查")
            await dept.fill("#sp_reason", "需核实异地居住情况")
            await dept.fill("#sp_days", "3")
            await dept.click("#submit-suspend")
            await dept.wait_for_url(f"**/dept/cases/{case_id}?done=suspend")
            assert await dept.locator("#case-state").inner_text() == "特别程序中"
            assert "暂停" in await dept.locator("#case-clock").inner_text()
            await shot(dept, "09-department-special-procedure")
            await dept.fill("#sp_result", "核查属实")
            await dept.click("#submit-resume")
            await dept.wait_for_url(f"**/dept/cases/{case_id}?done=resume")
            await dept.click("#action-conclude summary")
            await dept.select_option("#o_result", "approved")
            await dept.select_option("#o_delivery", "post")
            await dept.fill("#o_description", "准予备案，备案有效期内可直接结算。")
            await dept.click("#submit-conclude")
            await dept.wait_for_url(f"**/dept/cases/{case_id}?done=conclude")
            steps = await dept.locator("#progress-items").inner_text()
            assert "审查" in steps
            assert "特别程序开始：现场核查" in steps
            assert "特别程序结束：现场核查" in steps
            assert "准予办结" in await dept.locator("#outcome-result").inner_text()
            await shot(dept, "10-department-concluded")

            # 9. The clerk sees the outcome live, posts it and records the 好差评.
            await clerk.locator("#outcome").wait_for(timeout=20_000)
            timeline = await clerk.locator("#timeline").inner_text()
            assert "特别程序开始" in timeline
            assert "特别程序结束" in timeline
            await shot(clerk, "11-clerk-outcome")
            await clerk.check("input[name=d_mode][value=post]")
            await clerk.fill("#d_courier", "中国邮政EMS")
            await clerk.fill("#d_tracking", "EMS1234567890")
            await clerk.click("#submit-delivery")
            await clerk.wait_for_url(f"**/window/cases/{case_id}?done=deliver")
            await clerk.check("input[name=e_stars][value='5']")
            await clerk.fill("#e_text", "跨省也能一次办好。")
            await clerk.click("#submit-evaluation")
            await clerk.wait_for_url(f"**/window/cases/{case_id}?done=evaluate")
            assert "非常满意" in await clerk.locator("#evaluation-record").inner_text()
            await shot(clerk, "12-clerk-evaluated")
            await until(lambda: _state(jinan, case_id) == "evaluated", timeout=20)
            await desk.goto(f"/desk/cases/{case_id}")
            kinds = await desk.locator("#timeline li").evaluate_all(
                "items => items.map(li => li.dataset.kind)")
            for kind in ("received", "supplement_requested", "supplied", "accepted", "forwarded",
                         "suspended", "resumed", "concluded", "delivered", "evaluated"):
                assert kind in kinds, kind
            await shot(desk, "13-reviewer-receipt-chain")

            # 10. A reviewer of another region is refused, pages and scans alike.
            _, outsider = await signed_in(browser, jinan, "outsider")
            for path in ("/desk", f"/desk/cases/{case_id}", source, "/dept"):
                response = await outsider.goto(path)
                assert response is not None
                assert response.status == 403, path
            await outsider.goto("/desk")
            assert "请登录您所在地区的节点" in await outsider.locator(".next-step").inner_text()
            await shot(outsider, "14-other-region-refused")
        finally:
            await browser.close()


def test_the_queue_reads_each_clock_as_due_soon_overdue_or_stopped() -> None:
    """The 待办队列's clocks (no browser): days are working days (Monday to Friday here)."""
    node: Any = SimpleNamespace(engine=SimpleNamespace(calendar=WeekdayCalendar()))
    monday = datetime.date(2026, 6, 1)
    now = int(datetime.datetime.combine(monday, datetime.time(9), CHINA).timestamp() * 1000)

    def notice(day: datetime.date) -> dict[str, Any]:
        return {"timers": {"notice": end_of_day(day)}}

    ok = clock_of(node, "received", notice(datetime.date(2026, 6, 5)), now)
    assert (ok.level, ok.text) == ("ok", "补正告知期限 2026-06-05，剩 4 个工作日")
    soon = clock_of(node, "received", notice(datetime.date(2026, 6, 2)), now)
    assert soon.level == "soon"
    late = clock_of(node, "received", notice(datetime.date(2026, 5, 29)), now)  # a Friday
    assert late.level == "overdue"
    assert "已过 1 个工作日" in late.text
    promised = clock_of(node, "processing", {"promised_date": "2026-05-28", "timers": {}}, now)
    assert promised.level == "overdue"
    assert "已超承诺办结时限 2 个工作日" in promised.text
    stopped = clock_of(node, "suspended", {"promised_date": "2026-06-10",
                                           "suspended_on": "2026-06-01", "timers": {}}, now)
    assert stopped.level == "stopped"
    assert "暂停" in stopped.text
    assert sorted([ok, stopped, late, soon], key=lambda c: c.rank) == [late, soon, ok, stopped]
