"""The printed 受理通知书 and 补正告知书 (/cases/{case_id}/notice/acceptance|supplement):
two real nodes on one embedded nats-server — a collecting window (郑州) and a handling
region (济南, its reviewer's decisions made with ``node.command``). Cases reach each
decision (受理 by the reviewer, 视为受理, 补正 by the reviewer, 受理 and 补正 at the
window); the clerk prints them in Debian's chromium and the QR code opens a /verify
page that says 回执真实有效; the desk prints the same notices; no decision is a 409,
another region's account a 403. Screenshots: test-artifacts/web/notice-*.png."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

from config import parse_config
from node.app import Node
from node.engine import Command
from node.natsd import EmbeddedNats
from node.store.accounts import FILENAME, AccountStore
from node.web import window_forms
from node.web.auth import HASHER
from node.web.verify import token_of
from protocol import bodies as b
from protocol import decode
from protocol.wire import receipt_from_fields
from receipts import NodeKeys
from tests.api_token import HTTP
from tests.serving import serving, until

pytestmark = [pytest.mark.timeout(60)]
on_the_nodes = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
SAMPLES = Path(__file__).resolve().parent.parent / "config" / "catalogs"
WINDOW, JINAN = "410100", "370100"
ID_CARD = "0000107003-370100000000-000-113701000077616989-1-00"  # 济南: 收件地受理
PASSWORD = "correct-horse-9"
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
#: username → (name, roles, region, node)
ACCOUNTS = {
    "clerk": ("李收件", ("clerk",), WINDOW, WINDOW),
    "outsider": ("孙济南", ("clerk",), JINAN, WINDOW),
    "reviewer": ("王审核", ("reviewer",), JINAN, JINAN),
}
#: The sample applicant's personal data (protocol/examples.py) and how it is printed.
PERSONAL = ("张三丰", "11010519491231002X", "13812345678")
MASKED = ("张*丰", "1101**********002X", "138****5678")
DOC_NO = "济医保受〔2026〕0007号"
WINDOW_DOC_NO = "郑受〔2026〕0001号"
ITEMS = (("跨省异地就医登记备案表", "申请人未签字，请补交签字页。"),
         ("异地居住证明", "证明已过期 <b>请重开</b>"))  # markup stays text
NOTE = "请于 2026-12-31 前一次性补齐。"


@dataclasses.dataclass
class Circle:
    window: Node
    jinan: Node
    cases: dict[str, str]  # what happened → case id


def _config(base: Path, region: str, peer: str) -> Any:
    return parse_config({
        "region": region, "name": {WINDOW: "郑州市", JINAN: "济南市"}[region],
        "data_dir": str(base / region), "http": HTTP, "auto_review": False,
        **({"catalog": str(SAMPLES / region)} if region == JINAN else {}),
        "departments": [{"kind": "desk", "name": "济南市医疗保障局", "auto_conclude": False}],
        "peers": [{"region": peer, "name": peer, "public": str(base / peer / "keys" / "public.json")}],
    }, base=base, environ={})


def _prepare(base: Path) -> tuple[Any, Any]:
    configs = []
    for region in (WINDOW, JINAN):
        NodeKeys.generate(region).save(base / region / "keys", valid_from=0)
    for region, peer in ((WINDOW, JINAN), (JINAN, WINDOW)):
        config = _config(base, region, peer)
        store = AccountStore(config.data_dir / FILENAME)
        for username, (name, roles, home, node) in ACCOUNTS.items():
            if node == region:
                store.create(username=username, display_name=name, roles=roles, region=home,
                             password_hash=HASHER.hash(PASSWORD), now=time.time_ns() // 1_000_000,
                             actor="test")
        store.close()
        configs.append(config)
    return configs[0], configs[1]


def _state(node: Node, case_id: str) -> str | None:
    return (node.store.case_row(case_id) or {}).get("state")


async def _sent(window: Node, jinan: Node, number: int) -> str:
    """A case collected at the window and 签收ed by 济南 (handling decides)."""
    application = window.catalog.sample_application(JINAN, window.clock(), f"{WINDOW}-W-{number:04d}")
    collected = await window.command(Command(None, "collect", application, peer=JINAN))
    assert collected.case_id is not None
    assert (await window.command(Command(collected.case_id, "submit"))).outcome == "applied"
    case_id = collected.case_id
    await until(lambda: _state(jinan, case_id) == "received", timeout=20)
    return case_id


async def _decided_at_window(window: Node, number: int) -> tuple[str, b.Application]:
    """A case collected at the window for a matter the window decides (not yet sent)."""
    application = window.catalog.sample_application(JINAN, window.clock(), f"{WINDOW}-W-{number:04d}",
                                                    code=ID_CARD)
    application = application.model_copy(update={"acceptance": "collecting_decides"})
    collected = await window.command(Command(None, "collect", application, peer=JINAN))
    assert collected.case_id is not None
    return collected.case_id, application


async def _window_accept(window: Node, case_id: str, application: b.Application) -> None:
    entry = window.catalog.entry(JINAN, ID_CARD)
    assert entry is not None
    errors: dict[str, str] = {}
    accept = window_forms.window_accept(entry, window, {"w_doc_no": WINDOW_DOC_NO}, errors,
                                        window.clock(), "李收件")
    assert accept is not None, errors
    decided = application.model_copy(update={"window_decision": accept})
    assert (await window.command(Command(case_id, "submit_decided", decided))).outcome == "applied"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def circle(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Circle]:
    base = tmp_path_factory.mktemp("notices")
    window_config, jinan_config = _prepare(base)
    async with EmbeddedNats(base / "nats") as server, \
            serving(server.url, window_config) as window, \
            serving(server.url, jinan_config) as jinan:
        await until(lambda: window.catalog.index.has_region(JINAN), timeout=20)
        cases: dict[str, str] = {}
        now = jinan.clock()
        # 受理 by 济南's reviewer.
        cases["accepted"] = await _sent(window, jinan, 1)
        case = jinan.engine.load_case(cases["accepted"])
        assert case is not None
        accept = b.Accept(doc_no=DOC_NO, accepted_at=now, promised_date=case.promised_date_from(now),
                          decided_by="王审核")
        assert (await jinan.command(Command(cases["accepted"], "accept", accept))).outcome == "applied"
        # 补正 by 济南's reviewer (一次性告知).
        cases["supplement"] = await _sent(window, jinan, 2)
        request = b.SupplementRequest(items=tuple(b.SupplementItem(material=m, reason=r)
                                                  for m, r in ITEMS),
                                      note=NOTE, notified_at=now, decided_by="王审核")
        result = await jinan.command(Command(cases["supplement"], "request_supplement", request))
        assert result.outcome == "applied"
        # 视为受理: the 5-working-day notice timer fires.
        cases["deemed"] = await _sent(window, jinan, 3)
        assert (await jinan.command(Command(cases["deemed"], "notice_due"))).outcome == "applied"
        # 受理 at the window (异地受理、远程办理).
        cases["window"], application = await _decided_at_window(window, 4)
        await _window_accept(window, cases["window"], application)
        # 窗口一次性告知补正, then 补齐 and 受理: 济南 holds the 补正 receipt, not the list.
        cases["window_supplement"], application = await _decided_at_window(window, 5)
        window_request = b.SupplementRequest(
            items=(b.SupplementItem(material="近期免冠照片", reason="需补充提交"),),
            notified_at=window.clock(), decided_by="李收件")
        result = await window.command(Command(cases["window_supplement"], "window_supplement",
                                              window_request))
        assert result.outcome == "applied"
        # Only collected: no decision at all.
        cases["collected"], _ = await _decided_at_window(window, 6)

        await until(lambda: _state(window, cases["accepted"]) in ("accepted", "processing")
                    and _state(window, cases["supplement"]) == "supplement_requested"
                    and _state(window, cases["deemed"]) in ("accepted", "processing")
                    and _state(jinan, cases["window"]) in ("forwarding", "processing"), timeout=20)
        yield Circle(window, jinan, cases)


# ---------------------------------------------------------------- over HTTP


@contextlib.asynccontextmanager
async def signed_in(node: Node, username: str) -> AsyncIterator[aiohttp.ClientSession]:
    address = node.address  # type: ignore[attr-defined]
    async with aiohttp.ClientSession(base_url=address,
                                     cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get("/login") as page:
            token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
        assert token is not None
        async with http.post("/login", allow_redirects=False, data={
                "username": username, "password": PASSWORD, "csrf_token": token.group(1)}) as done:
            assert done.status == 303
        yield http


async def _get(http: aiohttp.ClientSession, path: str) -> tuple[int, str]:
    async with http.get(path, allow_redirects=False) as response:
        return response.status, await response.text()


def _verify_url(html: str) -> str:
    found = re.search(r'data-verify-url="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _deciding_token(node: Node, case_id: str, kind: str, actor: str) -> str:
    [receipt] = [r for r in (receipt_from_fields(decode(raw)) for raw in node.store.receipts(case_id))
                 if r.kind == kind and r.actor == actor]
    return token_of(receipt.digest)


def _masked(html: str) -> None:
    for personal in PERSONAL:
        assert personal not in html, personal
    for masked in MASKED:
        assert masked in html, masked


@on_the_nodes
async def test_deemed_acceptance_says_so_and_cites_the_law(circle: Circle) -> None:
    case_id = circle.cases["deemed"]
    async with signed_in(circle.window, "clerk") as http:
        status, html = await _get(http, f"/cases/{case_id}/notice/acceptance")
        assert status == 200
        assert "视为受理" in html
        assert "第三十二条第一款第（四）项" in html
        assert f"视为受理-{case_id}"[:50] in html  # the 受理文书编号 the law's acceptance gets
        assert 'data-kind="deemed_accepted"' in html
        _masked(html)
        token = _deciding_token(circle.window, case_id, "deemed_accepted", JINAN)
        assert _verify_url(html).endswith(f"/verify/{token}")
        status, page = await _get(http, f"/verify/{token}")
        assert status == 200
        assert "回执真实有效" in page
        assert "逾期未告知补正，视为受理" in page


@on_the_nodes
async def test_the_desk_prints_the_same_notices_with_the_same_receipts(circle: Circle) -> None:
    jinan = circle.jinan
    async with signed_in(jinan, "reviewer") as http:
        for case, notice, kind, actor in (
                ("accepted", "acceptance", "accepted", JINAN),
                ("supplement", "supplement", "supplement_requested", JINAN),
                ("window", "acceptance", "accepted_at_window", WINDOW)):
            case_id = circle.cases[case]
            status, page = await _get(http, f"/desk/cases/{case_id}")
            assert status == 200
            assert f'href="/cases/{case_id}/notice/{notice}"' in page, case
            status, html = await _get(http, f"/cases/{case_id}/notice/{notice}")
            assert status == 200, case
            _masked(html)
            token = _deciding_token(jinan, case_id, kind, actor)
            assert _verify_url(html) == f"{jinan.address}/verify/{token}"  # type: ignore[attr-defined]
            status, verified = await _get(http, f"/verify/{token}")
            assert status == 200
            assert "回执真实有效" in verified, case
        # The window's 补正 list stays at the window: 济南 holds only its receipt.
        case_id = circle.cases["window_supplement"]
        supplied = b.Supplement(note="已补齐", supplied_at=circle.window.clock())
        result = await circle.window.command(Command(case_id, "window_supplemented", supplied))
        assert result.outcome == "applied"
        await _window_accept(circle.window, case_id, b.Application.model_validate(
            decode(circle.window.store.body(case_id, "application") or b"")))
        await until(lambda: _state(jinan, case_id) in ("forwarding", "processing"), timeout=20)
        status, page = await _get(http, f"/desk/cases/{case_id}")
        assert "打印受理通知书" in page
        assert "打印补正告知书" not in page
        status, html = await _get(http, f"/cases/{case_id}/notice/supplement")
        assert status == 409
        assert "补正告知书由收件地打印" in html
        assert "请联系收件地的通办专窗" in html
    async with signed_in(circle.window, "clerk") as http:  # the window still prints both
        for notice in ("supplement", "acceptance"):
            status, html = await _get(http, f"/cases/{case_id}/notice/{notice}")
            assert status == 200, notice
        assert "近期免冠照片" in (await _get(http, f"/cases/{case_id}/notice/supplement"))[1]


@on_the_nodes
async def test_without_the_decision_there_is_nothing_to_print(circle: Circle) -> None:
    cases = circle.cases
    async with signed_in(circle.window, "clerk") as http:
        for case, notice, told in (
                ("collected", "acceptance", "该办件尚未受理"),
                ("collected", "supplement", "该办件没有补正告知"),
                ("supplement", "acceptance", "请先打印补正告知书"),
                ("accepted", "supplement", "补正告知书在办理地审核员或收件窗口一次性告知补正后才能打印")):
            status, html = await _get(http, f"/cases/{cases[case]}/notice/{notice}")
            assert status == 409, (case, notice)
            assert told in html, (case, notice)
            assert "下一步" in html
        status, page = await _get(http, f"/window/cases/{cases['collected']}")
        assert status == 200
        assert "打印受理通知书" not in page
        assert "打印补正告知书" not in page
        status, html = await _get(http, "/cases/no-such-case-1/notice/acceptance")
        assert status == 404


@on_the_nodes
async def test_only_signed_in_staff_of_the_region_may_print(circle: Circle) -> None:
    path = f"/cases/{circle.cases['accepted']}/notice/acceptance"
    address = circle.window.address  # type: ignore[attr-defined]
    async with aiohttp.ClientSession(base_url=address) as http, \
            http.get(path, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"].startswith("/login?next=")
    async with signed_in(circle.window, "outsider") as http:
        for notice in ("acceptance", "supplement"):
            status, html = await _get(http, f"/cases/{circle.cases['supplement']}/notice/{notice}")
            assert status == 403
            for personal in (*PERSONAL, *MASKED):
                assert personal not in html


# ---------------------------------------------------------------- in chromium


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.fail("chromium is not installed: run 'make chromium' (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.asynccontextmanager
async def page_at(browser: Browser, node: Node, viewport: dict[str, int],
                  username: str | None = None) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=viewport,  # type: ignore[arg-type]
                                        base_url=node.address,  # type: ignore[attr-defined]
                                        locale="zh-CN")
    context.set_default_timeout(10_000)
    try:
        page = await context.new_page()
        if username is not None:
            await page.goto("/login")
            await page.fill("#username", username)
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]:has-text('登录')")
            await page.wait_for_load_state()
        yield page
    finally:
        await context.close()


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"notice-{name}.png"), full_page=True)


async def _printed(page: Page, name: str) -> str:
    """The sheet as printed: nothing but the sheet, black on white, the QR code whole,
    one A4 page; its screenshot; the QR code's address."""
    await page.emulate_media(media="print")
    for hidden in (".site-nav", ".site-header", "#print-receipt", ".site-footer"):
        assert not await page.locator(hidden).is_visible(), hidden
    qr = page.locator("#notice-qr svg.qr-code")
    assert await qr.is_visible()
    colour = await page.evaluate("getComputedStyle(document.querySelector('.receipt-sheet')).color")
    assert colour == "rgb(0, 0, 0)"
    await shot(page, name)
    pdf = await page.pdf(format="A4")
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1  # fits one A4 sheet
    await page.emulate_media(media="screen")
    url = await page.locator("#notice-qr").get_attribute("data-verify-url")
    assert url is not None
    return url


async def _genuine(browser: Browser, node: Node, url: str, signed: str, name: str) -> None:
    """The QR code's address, opened by someone not signed in: 回执真实有效."""
    async with page_at(browser, node, PHONE) as phone:
        response = await phone.goto(url)
        assert response is not None
        assert response.status == 200
        assert "回执真实有效" in await phone.locator("h1").inner_text()
        body = await phone.locator("body").inner_text()
        assert signed in body
        for personal in PERSONAL:
            assert personal not in body
        await shot(phone, name)


@on_the_nodes
async def test_the_clerk_prints_the_reviewers_acceptance_and_its_qr_code_is_genuine(
        circle: Circle, browser: Browser) -> None:
    case_id = circle.cases["accepted"]
    async with page_at(browser, circle.window, DESKTOP, "clerk") as page:
        await page.goto(f"/window/cases/{case_id}")
        assert await page.locator("#print-supplement").count() == 0
        await page.click("#print-acceptance")
        await page.wait_for_url(f"**/cases/{case_id}/notice/acceptance")
        assert await page.locator("h1").inner_text() == "受理通知书"
        assert await page.locator("#notice-no").inner_text() == DOC_NO
        assert await page.locator("#notice-applicant").inner_text() == "张*丰"
        assert "济南市" in await page.locator("#notice-issuer").inner_text()
        assert "办理地受理" in await page.locator("#notice-how").inner_text()
        case = circle.jinan.engine.load_case(case_id)
        assert case is not None
        assert case.promised_date is not None
        assert case.promised_date in await page.locator("#notice-promised").inner_text()
        assert "0531-" in await page.locator("#notice-ask").inner_text()  # 咨询电话 of the entry
        _masked(await page.content())
        await shot(page, "acceptance-screen")
        url = await _printed(page, "acceptance-print")
    token = _deciding_token(circle.window, case_id, "accepted", JINAN)
    assert url == f"{circle.window.address}/verify/{token}"  # type: ignore[attr-defined]
    await _genuine(browser, circle.window, url, "已受理", "acceptance-verified")


@on_the_nodes
async def test_the_clerk_prints_the_reviewers_supplement_list_exactly(
        circle: Circle, browser: Browser) -> None:
    case_id = circle.cases["supplement"]
    async with page_at(browser, circle.window, DESKTOP, "clerk") as page:
        await page.goto(f"/window/cases/{case_id}")
        assert await page.locator("#print-acceptance").count() == 0
        await page.click("#print-supplement")
        await page.wait_for_url(f"**/cases/{case_id}/notice/supplement")
        assert await page.locator("h1").inner_text() == "补正告知书"
        rows = await page.locator("#notice-items tbody tr").evaluate_all(
            "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
        assert rows == [[str(i), m, r] for i, (m, r) in enumerate(ITEMS, start=1)]
        assert await page.locator("#notice-note").inner_text() == f"说明：{NOTE}"
        text = await page.locator("#notice").inner_text()
        assert "一次性告知" in text
        assert "第三十二条第一款第（四）项" in text
        assert "2026-12-31" in text  # the deadline, as the request gives it
        _masked(await page.content())
        await shot(page, "supplement-screen")
        url = await _printed(page, "supplement-print")
    token = _deciding_token(circle.window, case_id, "supplement_requested", JINAN)
    assert url == f"{circle.window.address}/verify/{token}"  # type: ignore[attr-defined]
    await _genuine(browser, circle.window, url, "办理地要求补正", "supplement-verified")


@on_the_nodes
async def test_the_window_prints_its_own_acceptance(circle: Circle, browser: Browser) -> None:
    case_id = circle.cases["window"]
    async with page_at(browser, circle.window, DESKTOP, "clerk") as page:
        await page.goto(f"/window/cases/{case_id}")
        await page.click("#print-acceptance")
        await page.wait_for_url(f"**/cases/{case_id}/notice/acceptance")
        assert await page.locator("#notice-no").inner_text() == WINDOW_DOC_NO
        assert await page.locator("#notice-issuer").inner_text() == "郑州市跨域通办专窗"
        assert "收件地窗口受理" in await page.locator("#notice-how").inner_text()
        _masked(await page.content())
        url = await _printed(page, "window-acceptance-print")
    token = _deciding_token(circle.window, case_id, "accepted_at_window", WINDOW)
    assert url == f"{circle.window.address}/verify/{token}"  # type: ignore[attr-defined]
    await _genuine(browser, circle.window, url, "窗口已受理并发送", "window-acceptance-verified")


@on_the_nodes
async def test_the_window_prints_its_own_supplement_list_and_the_deemed_acceptance(
        circle: Circle, browser: Browser) -> None:
    async with page_at(browser, circle.window, DESKTOP, "clerk") as page:
        case_id = circle.cases["window_supplement"]
        await page.goto(f"/window/cases/{case_id}")
        await page.click("#print-supplement")
        await page.wait_for_url(f"**/cases/{case_id}/notice/supplement")
        assert await page.locator("#notice-issuer").inner_text() == "郑州市跨域通办专窗"
        assert "近期免冠照片" in await page.locator("#notice-items").inner_text()
        assert "收件地窗口" in await page.locator("#notice-by").inner_text()
        assert "本窗口不会就本次申请再次要求您补正" in await page.locator("#notice-next").inner_text()
        _masked(await page.content())
        url = await _printed(page, "window-supplement-print")
        token = _deciding_token(circle.window, case_id, "window_supplement_notice", WINDOW)
        assert url == f"{circle.window.address}/verify/{token}"  # type: ignore[attr-defined]

        case_id = circle.cases["deemed"]
        await page.goto(f"/window/cases/{case_id}")
        await page.click("#print-acceptance")
        await page.wait_for_url(f"**/cases/{case_id}/notice/acceptance")
        assert await page.locator("#notice-deemed").inner_text() == "视为受理"
        assert "视为受理" in await page.locator("#notice-how").inner_text()
        await _printed(page, "deemed-acceptance-print")
