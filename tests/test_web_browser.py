"""The staff pages in a real browser: Playwright drives Debian's chromium against a real
node (embedded nats-server) started here. A screenshot of each step is kept in
test-artifacts/web/."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

from config import parse_config
from node.app import Node
from node.engine import Command
from node.natsd import EmbeddedNats
from node.store.accounts import FILENAME, AccountStore
from node.web.auth import HASHER
from receipts import NodeKeys
from tests.api_token import HTTP
from tests.serving import serving

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
REGION = "410100"
PASSWORD = "correct-horse-9"
DESKTOP = {"width": 1366, "height": 768}
TABLET = {"width": 768, "height": 1024}
#: username → (name, roles, region)
ACCOUNTS = {
    "clerk": ("李收件", ("clerk",), REGION),
    "admin": ("王管理", ("admin",), REGION),
    "careless": ("赵粗心", ("clerk",), REGION),
    "keyboard": ("钱键盘", ("clerk",), REGION),
    "outsider": ("孙济南", ("clerk",), "370100"),
}


@dataclasses.dataclass
class Site:
    node: Node
    address: str
    browser: Browser


def prepare(base: Path) -> Any:
    """The node's keys, configuration and accounts, made before it starts."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run 'make chromium' (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    NodeKeys.generate(REGION).save(base / REGION / "keys", valid_from=0)
    config = parse_config({"region": REGION, "name": "郑州市", "data_dir": str(base / REGION),
                           "http": HTTP}, base=base, environ={})
    store = AccountStore(config.data_dir / FILENAME)
    password_hash = HASHER.hash(PASSWORD)  # the same password for all: hashed once
    for username, (name, roles, region) in ACCOUNTS.items():
        store.create(username=username, display_name=name, roles=roles, region=region,
                     password_hash=password_hash, now=time.time_ns() // 1_000_000,
                     actor="test")
    store.close()
    return config


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    base = tmp_path_factory.mktemp("web")
    config = prepare(base)
    async with EmbeddedNats(base / "nats") as server, serving(server.url, config) as node, \
            async_playwright() as playwright:
        now = node.clock()
        application = node.catalog.sample_application("370100", now, f"{REGION}-W-0001")
        await node.command(Command(None, "collect", application, peer="370100"))
        browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                   args=["--no-sandbox"])
        try:
            yield Site(node, node.address, browser)  # type: ignore[attr-defined]
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def page_of(site: Site, viewport: dict[str, int] = DESKTOP) -> AsyncIterator[Page]:
    context = await site.browser.new_context(viewport=viewport, base_url=site.address,  # type: ignore[arg-type]
                                             locale="zh-CN")
    context.set_default_timeout(5_000)  # fail fast: every step here takes well under a second
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, username: str, password: str = PASSWORD) -> None:
    await page.goto("/login")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("button[type=submit]:has-text('登录')")
    await page.wait_for_load_state()


async def no_horizontal_scroll(page: Page) -> bool:
    return bool(await page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


# ---------------------------------------------------------------- tests


async def test_a_clerk_signs_in_and_sees_the_landing_page(site: Site) -> None:
    async with page_of(site) as page:
        await page.goto("/")
        assert page.url.startswith(f"{site.address}/login?next=")
        assert await page.locator("h1").inner_text() == "工作人员登录"
        await shot(page, "01-login")
        await sign_in(page, "clerk")
        assert page.url == f"{site.address}/"
        assert await page.locator("h1").inner_text() == "您好，李收件"
        header = await page.locator("header").inner_text()
        assert "郑州市" in header
        assert "李收件（窗口收件员）" in header
        assert await page.locator("nav a").all_inner_texts() == ["首页", "办件列表", "事项查询", "视频窗口",
                                                                  "修改密码"]
        assert await page.locator(".task-coming").count() == 0  # every clerk's task is built
        await shot(page, "02-clerk-home")
        await page.click("nav a:has-text('办件列表')")
        assert await page.locator("#cases tbody tr").count() == 1
        assert "已收件" in await page.locator("#cases tbody").inner_text()
        await shot(page, "03-clerk-cases")


async def test_wrong_passwords_show_the_tries_left_then_the_lock_out(site: Site) -> None:
    async with page_of(site) as page:
        for left in (4, 3, 2, 1):
            await sign_in(page, "careless", "not-the-password")
            assert f"还可以再试 {left} 次" in await page.locator("#login-error").inner_text()
            if left == 4:
                await shot(page, "04-wrong-password")
        await sign_in(page, "careless", "not-the-password")
        message = await page.locator("#login-error").inner_text()
        assert "账户已锁定至" in message
        assert "联系本节点管理员解锁" in message
        await sign_in(page, "careless")  # the right password, but locked
        assert "账户已锁定至" in await page.locator("#login-error").inner_text()
        await shot(page, "05-locked-out")


async def test_an_administrator_creates_an_account_that_can_sign_in(site: Site) -> None:
    async with page_of(site) as page:
        await sign_in(page, "admin")
        await page.click("nav a:has-text('账户管理')")
        await page.fill("#new-username", "zhou.xin")
        await page.fill("#new-display-name", "周新")
        await page.check("input[name=roles][value=reviewer]")
        await page.fill("#new-password", "first-password-1")
        await page.click("#create-account button[type=submit]")
        assert "已新建账户 zhou.xin" in await page.locator("#admin-notice").inner_text()
        row = page.locator("#accounts tr[data-username='zhou.xin']")
        assert "审核员" in await row.inner_text()
        assert "新建账户" in await page.locator("#audit").inner_text()
        await shot(page, "06-admin-created-account")
        await page.fill("#new-username", "Bad Name")
        await page.fill("#new-display-name", "错名")
        await page.check("input[name=roles][value=clerk]")
        await page.fill("#new-password", "first-password-1")
        await page.click("#create-account button[type=submit]")
        assert "请修改后再提交" in await page.locator("#admin-error").inner_text()
    async with page_of(site) as page:
        await sign_in(page, "zhou.xin", "first-password-1")
        assert page.url == f"{site.address}/password"  # set by an administrator: change it first
        await shot(page, "07-must-change-password")
        await page.fill("#current", "first-password-1")
        await page.fill("#new", "zhou.xin-password")
        await page.fill("#again", "zhou.xin-password")
        await page.click("button:has-text('修改密码')")
        assert "不能包含用户名" in await page.locator("#password-error").inner_text()
        await page.fill("#current", "first-password-1")
        await page.fill("#new", "my-own-password-2")
        await page.fill("#again", "my-own-password-2")
        await page.click("button:has-text('修改密码')")
        assert "密码已修改" in await page.locator(".notice").inner_text()
        await sign_in(page, "zhou.xin", "my-own-password-2")
        assert await page.locator("h1").inner_text() == "您好，周新"
        await shot(page, "08-new-account-home")


async def test_a_post_without_the_csrf_token_is_refused(site: Site) -> None:
    async with page_of(site) as page:
        await sign_in(page, "clerk")
        status = await page.evaluate("""async () => {
            const body = new URLSearchParams({current: "x", new: "y-password-1", again: "y-password-1"});
            return (await fetch("/password", {method: "POST", body})).status;
        }""")
        assert status == 403
        heard = await page.evaluate("""async () => {
            const token = document.querySelector('meta[name="csrf-token"]').content;
            const body = new URLSearchParams({current: "x", new: "y-password-1", again: "y-password-1"});
            const headers = {"X-CSRF-Token": token};
            return (await fetch("/password", {method: "POST", body, headers})).status;
        }""")
        assert heard == 400  # with the token: heard, and refused for the wrong current password
        await page.evaluate("document.querySelector('form[action=\"/logout\"] input[name=csrf_token]')"
                            ".remove()")
        await page.click("button:has-text('退出')")
        assert await page.locator("h1").inner_text() == "请求未通过安全校验"
        assert "请返回上一页，刷新后重新提交" in await page.locator(".next-step").inner_text()
        await shot(page, "09-csrf-refused")
        await page.goto("/")
        assert await page.locator("h1").inner_text() == "您好，李收件"  # still signed in


async def test_an_account_of_another_region_is_refused_the_case_list(site: Site) -> None:
    async with page_of(site) as page:
        await sign_in(page, "outsider")
        response = await page.goto("/cases")
        assert response is not None
        assert response.status == 403
        assert await page.locator("h1").inner_text() == "无权查看本地区办件"
        assert "请登录您所在地区的节点查看办件" in await page.locator(".next-step").inner_text()
        await shot(page, "10-other-region-refused")
        response = await page.goto("/admin/accounts")
        assert response is not None
        assert response.status == 403
        assert "仅供管理员使用" in await page.locator(".error").inner_text()


async def test_signing_in_with_the_keyboard_only(site: Site) -> None:
    async with page_of(site) as page:
        await page.goto("/login")
        assert await page.evaluate("document.activeElement.id") == "username"  # autofocus
        await page.keyboard.type("keyboard")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "password"
        await page.keyboard.type(PASSWORD)
        await shot(page, "11-keyboard-login")
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{site.address}/")
        assert await page.locator("h1").inner_text() == "您好，钱键盘"
        await page.keyboard.press("Tab")  # the first stop: the skip link, shown when focused
        assert await page.evaluate("document.activeElement.className") == "skip-link"
        box = await page.locator(".skip-link").bounding_box()
        assert box is not None
        assert box["y"] >= 0
        outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none"  # focus is visible
        await shot(page, "12-keyboard-skip-link")
        await page.keyboard.press("Enter")
        assert await page.evaluate("document.activeElement.id") == "main"
        for _ in range(12):  # Tab on to the case list link and open it with Enter
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.textContent.includes('办件列表')"):
                break
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{site.address}/cases")


async def test_the_larger_text_option_is_remembered(site: Site) -> None:
    async with page_of(site) as page:
        await sign_in(page, "clerk")
        size = "getComputedStyle(document.documentElement).fontSize"
        assert await page.evaluate(size) == "16px"
        toggle = page.locator("#large-text")
        assert await toggle.get_attribute("aria-pressed") == "false"
        await toggle.click()
        assert await page.evaluate(size) == "20px"
        assert await toggle.get_attribute("aria-pressed") == "true"
        await page.goto("/cases")
        await page.wait_for_function("document.documentElement.classList.contains('large-text')")
        assert await page.evaluate(size) == "20px"
        assert await no_horizontal_scroll(page)
        await shot(page, "13-larger-text")
        await page.locator("#large-text").click()
        assert await page.evaluate(size) == "16px"


@pytest.mark.parametrize(("viewport", "label"), [(DESKTOP, "1366x768"), (TABLET, "tablet")])
async def test_no_horizontal_scroll_at_window_and_tablet_sizes(site: Site, viewport: Any,
                                                               label: str) -> None:
    async with page_of(site, viewport) as page:
        await page.goto("/login")
        assert await no_horizontal_scroll(page)
        await shot(page, f"14-{label}-login")
        await sign_in(page, "admin")
        for path, name in (("/", "home"), ("/admin/accounts", "accounts")):
            await page.goto(path)
            assert await no_horizontal_scroll(page), path
            await shot(page, f"14-{label}-{name}")
    async with page_of(site, viewport) as page:
        await sign_in(page, "clerk")
        await page.goto("/cases")
        assert await no_horizontal_scroll(page)
        await shot(page, f"14-{label}-cases")
