"""The public receipt-verification page (/verify/{token}) and the printed 收件回执
(/cases/{case_id}/receipt): masking, tokens and the verdict without a node; then a real
node (embedded nats-server) over HTTP and in Debian's chromium. Screenshots go to
test-artifacts/web/verify-*.png."""

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
from node.web.auth import HASHER
from node.web.verify import check_receipt, digest_of, qr_svg, token_of
from protocol import decode
from protocol.examples import application as example_application
from protocol.masking import mask_id_number, mask_name, mask_phone
from protocol.states import RECEIPT_NAMES_ZH, TRANSITIONS
from protocol.wire import receipt_from_fields
from receipts import KeyRegistry, NodeKeys, SignatureChecker
from tests.api_token import HEADERS, HTTP
from tests.serving import serving

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
REGION = "410100"
HANDLING = "370100"
PASSWORD = "correct-horse-9"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 768}
#: username → (name, roles, region)
ACCOUNTS = {"clerk": ("李收件", ("clerk",), REGION), "outsider": ("孙济南", ("clerk",), HANDLING),
            "admin": ("王管理", ("admin",), REGION)}
#: The personal data of the example applicant (protocol/examples.py), never on the public page.
APPLICANT = example_application(1_800_000_000_000).applicant
PERSONAL = [APPLICANT.name, APPLICANT.id_number, APPLICANT.phone or "", APPLICANT.address or "",
            "金水区", "李窗口"]

on_the_node = pytest.mark.asyncio(loop_scope="module")


# ---------------------------------------------------------------- masking (pure)


@pytest.mark.parametrize(("name", "masked"), [
    ("张三丰", "张*丰"), ("李四", "李*"), ("王", "*"), ("", ""), ("欧阳娜娜", "欧**娜"),
    ("阿卜杜拉·艾力", "阿***·*力"), (" 张三丰 ", "张*丰"),
])
def test_a_name_keeps_its_first_and_last_character(name: str, masked: str) -> None:
    assert mask_name(name) == masked


@pytest.mark.parametrize(("number", "masked"), [
    ("370102199003071234", "3701**********1234"), ("11010519491231002X", "1101**********002X"),
    ("110105491231002", "110*********002"), ("E12345678", "E1*****78"), ("123", "***"),
    ("", ""),
])
def test_an_id_number_keeps_at_most_a_quarter_at_each_end(number: str, masked: str) -> None:
    assert mask_id_number(number) == masked
    assert len(masked) == len(number)


@pytest.mark.parametrize(("phone", "masked"), [
    ("13812345678", "138****5678"), ("0531-8888888", "053*****8888"), ("88886666", "****6666"),
    ("12345", "***45"), ("12", "**"),
])
def test_a_phone_keeps_its_last_four_digits(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


# ---------------------------------------------------------------- tokens and verdicts (pure)


def test_a_token_is_the_digest_in_url_safe_base64_and_nothing_else_is_accepted() -> None:
    digest = bytes(range(200, 232))
    token = token_of(digest)
    assert len(token) == 43
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert digest_of(token) == digest
    last = "AEIMQUYcgkosw048"  # a last character with low bits set decodes the same
    sloppy = token[:-1] + next(c for c in "BCDFGH" if c not in last)
    for bad in ("", "abc", token + "A", token[:-1], token + "=", digest.hex(), sloppy,
                token[:-1] + "/", token.replace(token[0], "+", 1), "../" + token[3:]):
        assert digest_of(bad) is None, bad


def test_every_receipt_kind_has_a_chinese_name() -> None:
    kinds = {t.receipt for t in TRANSITIONS.values() if t.receipt is not None}
    assert kinds <= RECEIPT_NAMES_ZH.keys()


def test_the_qr_code_is_plain_svg_without_style_or_script() -> None:
    svg = qr_svg("http://127.0.0.1:8080/verify/" + "A" * 43)
    assert svg.startswith("<svg ")
    assert svg.endswith("</svg>")
    for allowed_nowhere in ("style", "script", "xlink", "href"):  # CSP: no inline style
        assert allowed_nowhere not in svg


# ---------------------------------------------------------------- a real node


@dataclasses.dataclass
class Site:
    node: Node
    address: str
    case_id: str
    token: str  # of the case's first receipt (collected)


def _prepare(base: Path) -> Any:
    NodeKeys.generate(REGION).save(base / REGION / "keys", valid_from=0)
    config = parse_config({"region": REGION, "name": "郑州市", "data_dir": str(base / REGION),
                           "http": HTTP}, base=base, environ={})
    store = AccountStore(config.data_dir / FILENAME)
    password_hash = HASHER.hash(PASSWORD)
    for username, (name, roles, region) in ACCOUNTS.items():
        store.create(username=username, display_name=name, roles=roles, region=region,
                     password_hash=password_hash, now=time.time_ns() // 1_000_000, actor="test")
    store.close()
    return config


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    base = tmp_path_factory.mktemp("verify")
    config = _prepare(base)
    async with EmbeddedNats(base / "nats") as server, serving(server.url, config) as node:
        now = node.clock()
        application = node.catalog.sample_application(HANDLING, now, f"{REGION}-W-0042")
        result = await node.command(Command(None, "collect", application, peer=HANDLING))
        assert result.case_id is not None
        [first] = node.store.receipts(result.case_id)
        token = token_of(receipt_from_fields(decode(first)).digest)
        yield Site(node, node.address, result.case_id, token)  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def signed_in(site: Site, username: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{site.address}/login") as page:
            token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
        assert token is not None
        async with http.post(f"{site.address}/login", allow_redirects=False, data={
                "username": username, "password": PASSWORD, "csrf_token": token.group(1)}) as done:
            assert done.status == 303
        yield http


async def _get(path: str, site: Site, http: aiohttp.ClientSession | None = None
               ) -> tuple[int, str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(aiohttp.ClientSession(headers=HEADERS))
        async with http.get(site.address + path, allow_redirects=False) as response:
            return response.status, await response.text(), response.headers


@on_the_node
async def test_the_page_of_a_real_receipt_says_genuine_and_shows_no_personal_data(site: Site) -> None:
    status, html, headers = await _get(f"/verify/{site.token}", site)
    assert status == 200
    assert "回执真实有效" in html
    assert "已收件" in html  # the case's state
    assert RECEIPT_NAMES_ZH["collected"] in html  # the receipt's kind
    assert "郑州市（410100）" in html
    assert "济南市（370100）" in html
    assert "异地就医备案" in html  # the matter (the sample's, its catalog not known here)
    for personal in PERSONAL:
        assert personal not in html, personal
    assert "noindex" in headers["X-Robots-Tag"]
    assert "Content-Security-Policy" in headers
    assert headers["Cache-Control"] == "no-store"


@on_the_node
async def test_an_unknown_or_tampered_token_is_not_a_receipt_of_this_system(site: Site) -> None:
    flipped = site.token[:10] + ("B" if site.token[10] != "B" else "C") + site.token[11:]
    for token in (flipped, token_of(bytes(32))):
        status, html, _ = await _get(f"/verify/{token}", site)
        assert status == 404
        assert "不是本系统签发的回执" in html
        assert "请携带回执原件到为您收件的通办专窗核实" in html
    for bad in ("abc", site.token + "x", "00" * 32, site.token[:-1] + "%2F"):
        status, html, _ = await _get(f"/verify/{bad}", site)
        assert status == 404, bad
        assert "回执验证链接无效" in html
        assert "请对准二维码重新扫描一次" in html


@on_the_node
async def test_a_receipt_whose_key_was_revoked_before_it_was_made_does_not_verify(site: Site) -> None:
    node = site.node
    [raw] = node.store.receipts(site.case_id)
    receipt = receipt_from_fields(decode(raw))
    record = node.registry.record(receipt.key)
    node.registry.revoke(receipt.key, at=record.valid_from)  # as if stolen from the start
    try:
        status, html, _ = await _get(f"/verify/{site.token}", site)
    finally:
        node.registry.add(record)
    assert status == 200
    assert "签名无法验证" in html
    assert "回执真实有效" not in html
    assert "已收件" not in html  # nothing is vouched for
    assert "请不要依据这张回执办理后续事项" in html
    # Without the node: no key at all, and a receipt the chain does not hold.
    checker = SignatureChecker()
    assert check_receipt(receipt.digest, [raw], KeyRegistry(), checker).outcome == "unverifiable"
    assert check_receipt(bytes(32), [raw], node.registry, checker).outcome == "unverifiable"
    assert check_receipt(receipt.digest, [raw], node.registry, checker).outcome == "genuine"


@on_the_node
async def test_the_printed_receipt_is_for_signed_in_staff_of_the_region_only(site: Site) -> None:
    path = f"/cases/{site.case_id}/receipt"
    status, _, headers = await _get(path, site)
    assert status == 303
    assert headers["Location"].startswith("/login?next=")
    async with signed_in(site, "outsider") as http:
        assert (await _get(path, site, http))[0] == 403
    async with signed_in(site, "admin") as http:
        assert (await _get(path, site, http))[0] == 403
    async with signed_in(site, "clerk") as http:
        status, html, _ = await _get(path, site, http)
        assert status == 200
        for masked in ("张*丰", "1101**********002X", "138****5678"):
            assert masked in html
        for personal in (APPLICANT.name, APPLICANT.id_number, APPLICANT.phone or ""):
            assert personal not in html
        assert f'data-verify-url="{site.address}/verify/{site.token}"' in html
        status, html, _ = await _get("/cases/no-such-case-1/receipt", site, http)
        assert status == 404
        assert "请返回办件列表" in html


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
async def page_of(browser: Browser, site: Site, viewport: dict[str, int]) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=viewport, base_url=site.address,  # type: ignore[arg-type]
                                        locale="zh-CN")
    context.set_default_timeout(5_000)
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"verify-{name}.png"), full_page=True)


@on_the_node
async def test_a_clerk_prints_the_receipt_and_its_qr_code_opens_the_public_page(
        site: Site, browser: Browser) -> None:
    async with page_of(browser, site, DESKTOP) as page:
        await page.goto("/login")
        await page.fill("#username", "clerk")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]:has-text('登录')")
        await page.wait_for_url(f"{site.address}/")
        await page.goto("/cases")
        await page.click("#cases a:has-text('打印回执')")
        await page.wait_for_url(f"{site.address}/cases/{site.case_id}/receipt")
        assert await page.locator("h1").inner_text() == "收件回执"
        assert await page.locator("#receipt-applicant").inner_text() == "张*丰"
        assert "居民身份证" in await page.locator("#receipt-materials").inner_text()
        await shot(page, "receipt-screen")

        qr = page.locator("#receipt-qr svg.qr-code")
        assert await qr.count() == 1
        url = await page.locator("#receipt-qr").get_attribute("data-verify-url")
        assert url == f"{site.address}/verify/{site.token}"
        drawn = await qr.locator("path").evaluate_all("paths => paths.map(p => p.getAttribute('d'))")
        assert drawn == re.findall(r' d="([^"]+)"', qr_svg(url))  # the QR code encodes url

        assert await page.locator(".site-nav").is_visible()
        await page.emulate_media(media="print")
        for hidden in (".site-nav", ".site-header", "#print-receipt", ".site-footer"):
            assert not await page.locator(hidden).is_visible(), hidden
        assert await qr.is_visible()
        colour = await page.evaluate("getComputedStyle(document.querySelector('.receipt-sheet')).color")
        assert colour == "rgb(0, 0, 0)"
        await shot(page, "receipt-print")
        pdf = await page.pdf(path=str(ARTIFACTS / "verify-receipt.pdf"), format="A4")
        assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1  # fits one A4 sheet

    async with page_of(browser, site, PHONE) as phone:  # a fresh context: nobody signed in
        response = await phone.goto(url)
        assert response is not None
        assert response.status == 200
        assert "回执真实有效" in await phone.locator("h1").inner_text()
        assert await phone.locator("#case-state").inner_text() == "已收件"
        assert await phone.locator(".site-nav").count() == 0
        assert await phone.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        body = await phone.locator("body").inner_text()
        for personal in PERSONAL:
            assert personal not in body, personal
        await shot(phone, "public-genuine")
        await phone.goto(f"/verify/{token_of(bytes(32))}")
        assert "不是本系统签发的回执" in await phone.locator("h1").inner_text()
        await shot(phone, "public-not-found")
