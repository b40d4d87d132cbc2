"""Staff accounts: the store, Argon2id hashing, lock-out, session expiry, CSRF, the audit
log and ``tongban accounts``. The pages themselves are driven in a real browser in
test_web_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner

from config import parse_config
from config.models import WebConfig
from node.cli import main
from node.natsd import EmbeddedNats
from node.store.accounts import FILENAME, AccountError, AccountStore
from node.web.auth import HASHER, Auth, can_see_cases, password_problem
from receipts import NodeKeys
from tests.api_token import HTTP
from tests.serving import serving

T0 = 1_780_000_000_000  # ms
MINUTE = 60_000
#: Cheap parameters for the tests that are not about hashing.
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "correct-horse-9"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AccountStore]:
    accounts = AccountStore(tmp_path / FILENAME)
    yield accounts
    accounts.close()


def add(store: AccountStore, username: str, *roles: str, region: str = "410100",
        password: str = PASSWORD, hasher: PasswordHasher = FAST) -> None:
    store.create(username=username, display_name=f"姓名{username}", roles=roles or ("clerk",),
                 region=region, password_hash=hasher.hash(password), now=T0, actor="root")


def auth_for(store: AccountStore, clock: Clock, **web: Any) -> Auth:
    return Auth(store, WebConfig(**web), region="410100", name="郑州市", clock=clock,
                local_token=bytes(32), hasher=FAST)


# ---------------------------------------------------------------- store and hashing


def test_accounts_roles_and_every_administrative_action_are_audited(store: AccountStore) -> None:
    add(store, "admin", "admin")
    add(store, "Li.Ming", "clerk", "reviewer")
    account = store.account("li.ming")
    assert account is not None
    assert account.username == "li.ming"
    assert account.roles == {"clerk", "reviewer"}
    assert account.role_names == ["窗口收件员", "审核员"]
    store.set_roles("li.ming", ["reviewer"], T0 + 1, actor="admin")
    store.set_disabled("li.ming", True, T0 + 2, actor="admin")
    store.set_disabled("li.ming", False, T0 + 3, actor="admin")
    store.unlock("li.ming", T0 + 4, actor="admin")
    store.set_password("li.ming", FAST.hash("another-password-1"), T0 + 5, actor="admin",
                       must_change=True)
    store.set_password("li.ming", FAST.hash("my-own-password-2"), T0 + 6, actor="li.ming",
                       must_change=False)
    rows = [(row.actor, row.action, row.target) for row in reversed(store.audit())]
    assert rows == [("root", "create", "admin"), ("root", "create", "li.ming"),
                    ("admin", "set_roles", "li.ming"), ("admin", "disable", "li.ming"),
                    ("admin", "enable", "li.ming"), ("admin", "unlock", "li.ming"),
                    ("admin", "reset_password", "li.ming"), ("li.ming", "change_password", "li.ming")]
    assert store.audit()[5].detail == {"from": ["clerk", "reviewer"], "to": ["reviewer"]}
    assert [a.username for a in store.accounts()] == ["admin", "li.ming"]
    with pytest.raises(AccountError, match="已被使用"):
        add(store, "LI.MING")
    with pytest.raises(AccountError, match="未知角色"):
        store.set_roles("li.ming", ["boss"], T0, actor="admin")
    with pytest.raises(AccountError, match="没有用户名为 nobody"):
        store.unlock("nobody", T0, actor="admin")


def test_the_last_administrator_stays_and_none_takes_away_their_own(store: AccountStore) -> None:
    add(store, "admin", "admin")
    with pytest.raises(AccountError) as own:
        store.set_disabled("admin", True, T0, actor="admin")
    assert own.value.code == "own_admin"
    with pytest.raises(AccountError) as last:
        store.set_roles("admin", ["operator"], T0, actor="cli:root")
    assert last.value.code == "last_admin"
    add(store, "second", "admin")
    with pytest.raises(AccountError, match="另一位管理员"):
        store.set_roles("second", ["operator"], T0, actor="second")
    store.set_roles("second", ["operator"], T0, actor="admin")  # another administrator may
    assert store.admins() == 1
    assert [row.action for row in store.audit()][:1] == ["set_roles"]


def test_passwords_are_argon2id_and_neither_they_nor_session_ids_are_stored(
        tmp_path: Path) -> None:
    assert HASHER.time_cost == 3
    assert HASHER.memory_cost == 64 * 1024  # KiB: memory-hard
    encoded = HASHER.hash(PASSWORD)
    assert encoded.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert HASHER.verify(encoded, PASSWORD)
    assert encoded != HASHER.hash(PASSWORD)  # salted


async def test_a_session_id_is_kept_only_as_its_hash(store: AccountStore) -> None:
    add(store, "clerk")
    outcome = await auth_for(store, Clock()).login("clerk", PASSWORD)
    assert outcome.session_id is not None
    assert len(outcome.session_id) >= 43  # 256 bits, base64
    data = b"".join(p.read_bytes() for p in store.path.parent.glob(f"{FILENAME}*"))
    assert outcome.session_id.encode() not in data
    assert PASSWORD.encode() not in data


def test_the_password_policy() -> None:
    assert password_problem("li.ming", "short-9") == "密码至少需要 10 个字符，请设置更长的密码"
    assert "用户名" in (password_problem("li.ming", "xxLI.MINGxx2026") or "")
    assert "过于简单" in (password_problem("li.ming", "aaaaaaaaaaaa") or "")
    assert password_problem("li.ming", "correct-horse-9") is None


# ---------------------------------------------------------------- sign-in


async def test_wrong_passwords_count_down_then_lock_the_account(store: AccountStore) -> None:
    add(store, "clerk")
    clock = Clock()
    auth = auth_for(store, clock)
    for left in (4, 3, 2, 1):
        outcome = await auth.login("clerk", "wrong-password-0")
        assert outcome.session_id is None
        assert f"还可以再试 {left} 次" in (outcome.error or "")
    locked = await auth.login("clerk", "wrong-password-0")
    assert "已锁定至 2026-05-29 04:41" in (locked.error or ""), locked.error
    assert "联系本节点管理员解锁" in (locked.error or "")
    # While locked, not even the right password opens it.
    assert "已锁定" in ((await auth.login("clerk", PASSWORD)).error or "")
    assert store.audit()[0].action == "lock"
    assert store.audit()[0].actor == "-"
    clock.now += 15 * MINUTE
    assert (await auth.login("clerk", PASSWORD)).session_id is not None
    account = store.account("clerk")
    assert account is not None
    assert (account.failed_attempts, account.locked_until) == (0, None)


async def test_an_administrator_unlocks_at_once(store: AccountStore) -> None:
    add(store, "clerk")
    auth = auth_for(store, Clock(), lockout_failures=2, lockout_minutes=60)
    await auth.login("clerk", "wrong-password-0")
    assert "已锁定" in ((await auth.login("clerk", "wrong-password-0")).error or "")
    store.unlock("clerk", T0, actor="admin")
    assert (await auth.login("clerk", PASSWORD)).session_id is not None


async def test_unknown_and_disabled_accounts_are_told_what_to_do(store: AccountStore) -> None:
    add(store, "admin", "admin")
    add(store, "clerk")
    store.set_disabled("clerk", True, T0, actor="admin")
    auth = auth_for(store, Clock())
    assert "联系本节点管理员启用账户" in ((await auth.login("clerk", PASSWORD)).error or "")
    assert "用户名或密码不正确" in ((await auth.login("nobody", PASSWORD)).error or "")


async def test_sessions_end_when_idle_at_their_limit_and_with_their_account(
        store: AccountStore) -> None:
    add(store, "admin", "admin")
    add(store, "clerk")
    clock = Clock()
    auth = auth_for(store, clock, session_idle_minutes=30, session_absolute_hours=2)
    first = (await auth.login("clerk", PASSWORD)).session_id
    assert first is not None
    for _ in range(4):  # used every 25 minutes: alive until the absolute limit
        clock.now += 25 * MINUTE
        assert await auth.session(first) is not None
    clock.now = T0 + 120 * MINUTE
    assert await auth.session(first) is None  # two hours after sign-in
    assert store.sessions_of("clerk") == 0

    idle = (await auth.login("clerk", PASSWORD)).session_id
    assert idle is not None
    clock.now += 30 * MINUTE
    assert await auth.session(idle) is None  # unused for the idle limit

    for end in ("disable", "password", "logout"):
        session_id = (await auth.login("clerk", PASSWORD)).session_id
        assert session_id is not None
        assert await auth.session(session_id) is not None
        if end == "disable":
            store.set_disabled("clerk", True, clock(), actor="admin")
            store.set_disabled("clerk", False, clock(), actor="admin")
        elif end == "password":
            store.set_password("clerk", FAST.hash(PASSWORD), clock(), actor="admin",
                               must_change=False)
        else:
            await auth.logout(session_id)
        assert await auth.session(session_id) is None, end


async def test_a_changed_hashing_parameter_rehashes_at_sign_in(store: AccountStore) -> None:
    add(store, "clerk", hasher=PasswordHasher(time_cost=1, memory_cost=512, parallelism=1))
    assert (await auth_for(store, Clock()).login("clerk", PASSWORD)).session_id is not None
    account = store.account("clerk")
    assert account is not None
    assert "m=1024,t=1,p=1" in account.password_hash


def test_only_the_nodes_own_region_sees_its_cases(store: AccountStore) -> None:
    add(store, "here")
    add(store, "there", region="370100")
    here, there = store.account("here"), store.account("there")
    assert here is not None
    assert there is not None
    assert can_see_cases(here, "410100")
    assert not can_see_cases(there, "410100")


# ---------------------------------------------------------------- over HTTP


def _config(base: Path) -> Any:
    NodeKeys.generate("410100").save(base / "410100" / "keys", valid_from=0)
    return parse_config({"region": "410100", "name": "郑州市", "data_dir": str(base / "410100"),
                         "http": HTTP}, base=base, environ={})


async def test_csrf_is_checked_on_every_change(
        tmp_path: Path) -> None:
    config = _config(tmp_path)
    accounts = AccountStore(config.data_dir / FILENAME)
    add(accounts, "clerk", hasher=HASHER)
    accounts.close()
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    async with EmbeddedNats(tmp_path / "nats") as server, serving(server.url, config) as node, \
            aiohttp.ClientSession(cookie_jar=jar) as http:
        base = node.address  # type: ignore[attr-defined]

        async def post(path: str, data: dict[str, str], **headers: str) -> aiohttp.ClientResponse:
            async with http.post(base + path, data=data, headers=headers,
                                 allow_redirects=False) as response:
                await response.read()
                return response

        async with http.get(f"{base}/api/health") as health:  # the one public API route
            assert health.status == 200
            assert "Content-Security-Policy" not in health.headers
        async with http.get(f"{base}/", allow_redirects=False) as home:
            assert home.status == 303
            assert home.headers["Location"].startswith("/login?next=")

        refused = await post("/login", {"username": "clerk", "password": PASSWORD})
        assert refused.status == 403  # no token: not even a sign-in
        async with http.get(f"{base}/login") as page:
            text = await page.text()
            assert page.headers["X-Frame-Options"] == "DENY"
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        token = re.search(r'name="csrf_token" value="([^"]+)"', text)
        assert token is not None
        signed_in = await post("/login", {"username": "clerk", "password": PASSWORD,
                                          "csrf_token": token.group(1)})
        assert (signed_in.status, signed_in.headers["Location"]) == (303, "/")
        cookie = signed_in.headers["Set-Cookie"]
        assert cookie.startswith("tongban-410100=")
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Secure" not in cookie  # plain HTTP here; [web] secure_cookies behind HTTPS
        assert "Max-Age" not in cookie

        async with http.get(f"{base}/password") as page:
            session_token = re.search(r'name="csrf-token" content="([^"]+)"', await page.text())
        assert session_token is not None
        change = {"current": "not-my-password", "new": "new-password-77", "again": "new-password-77"}
        assert (await post("/password", change)).status == 403
        assert (await post("/password", {**change, "csrf_token": "x" * 43})).status == 403
        assert (await post("/password", change, **{"X-CSRF-Token": token.group(1)})).status == 403
        assert (await post("/password", change, **{"X-CSRF-Token": session_token.group(1),
                                                   "Origin": "http://evil.example"})).status == 403
        # With the session's token the request is heard (and refused for its content).
        assert (await post("/password", change, **{"X-CSRF-Token": session_token.group(1)})).status == 400
        assert (await post("/logout", {"csrf_token": session_token.group(1)})).status == 303
        async with http.get(f"{base}/", allow_redirects=False) as after:
            assert after.status == 303


# ---------------------------------------------------------------- tongban accounts


def test_the_accounts_command(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text('region = "410100"\nname = "郑州市"\ndata_dir = "data"\n', encoding="utf-8")
    runner = CliRunner()

    def run(*args: str, stdin: str | None = None) -> Any:
        return runner.invoke(main, ["accounts", *args], input=stdin)

    config = ["--config", str(toml)]
    created = run("add", *config, "Wang.Fang", "--name", "王芳", "--role", "admin",
                  "--role", "operator", "--password-stdin", stdin="a-good-password-1\n")
    assert created.exit_code == 0, created.output
    assert "已新建账户" in created.output
    short = run("add", *config, "zhao", "--name", "赵", "--role", "clerk", "--password-stdin",
                stdin="short\n")
    assert short.exit_code == 2
    assert "至少需要 10 个字符" in short.output
    bad = run("add", *config, "x", "--name", "赵", "--role", "clerk", "--password-stdin",
              stdin="a-good-password-1\n")
    assert bad.exit_code == 2
    assert run("add", *config, "zhao", "--name", "赵", "--role", "clerk", "--region", "370100",
               "--password-stdin", stdin="another-password-2\n").exit_code == 0
    listed = run("list", *config)
    assert listed.exit_code == 0
    assert re.search(r"wang\.fang\s+410100\s+admin,operator\s+王芳", listed.output), listed.output
    assert re.search(r"zhao\s+370100\s+clerk", listed.output)
    assert run("passwd", *config, "zhao", "--must-change", "--password-stdin",
               stdin="third-password-3\n").exit_code == 0
    assert "must-change-password" in run("list", *config).output
    assert run("disable", *config, "zhao").exit_code == 0
    assert "disabled" in run("list", *config).output
    assert run("enable", *config, "zhao").exit_code == 0
    last = run("disable", *config, "wang.fang")
    assert last.exit_code == 2
    assert "最后一个可用的管理员" in last.output
    assert run("unlock", *config, "nobody").exit_code == 2
    assert run("unlock", *config, "zhao").exit_code == 0

    store = AccountStore(tmp_path / "data" / FILENAME)
    try:
        account = store.account("zhao")
        assert account is not None
        assert HASHER.verify(account.password_hash, "third-password-3")
        actions = [(row.action, row.target) for row in reversed(store.audit())]
        assert actions == [("create", "wang.fang"), ("create", "zhao"),
                           ("reset_password", "zhao"), ("disable", "zhao"), ("enable", "zhao"),
                           ("unlock", "zhao")]
        assert all(row.actor.startswith("cli") for row in store.audit())
    finally:
        store.close()
