"""Staff sign-in: passwords, sessions, CSRF, lock-out, roles.

Theory of operation
-------------------
**Passwords** are hashed with Argon2id (RFC 9106's low-memory profile: 64 MiB,
3 passes, 4 lanes; about 0.15 s here). Hashing runs on a worker thread, at most
``HASHING_AT_ONCE`` at a time, so a burst of sign-ins can neither stall the event
loop nor take the node's memory. An unknown username costs a hash all the same.

**Sessions** are server-side (``node.store.accounts``): the cookie carries a random
256-bit id, the database only its SHA-256. The cookie is ``HttpOnly`` and
``SameSite=Strict``, and with ``[web] secure_cookies`` also ``Secure`` under the
``__Host-`` prefix. Its name carries the region: cookies do not tell ports apart,
and the demo runs three nodes on one host. A session ends after ``[web]
session_idle_minutes`` unused, ``session_absolute_hours`` after sign-in, at
sign-out, and when its account is disabled or its password changes.

**CSRF**: every state-changing request (any method but GET/HEAD/OPTIONS) outside
the JSON API must carry the session's token, as the form field ``csrf_token`` or
the ``X-CSRF-Token`` header; before sign-in the token is a random value in a
cookie of its own (double submit), so the login form is covered too. A request
whose ``Origin`` is another site is refused before that. SameSite=Strict already
keeps the cookies off cross-site requests; the token does not rely on it.

**Lock-out**: ``[web] lockout_failures`` wrong passwords in a row lock the account
for ``lockout_minutes``; the page says how many tries are left and until when it
is locked. While locked the password is not even checked. An administrator can
unlock at once (audited).

**The JSON API** (``/api/...``) takes the node's local token or a signed-in session;
who may call which route is ``node.web.api_access``. A session's state changes there
carry its CSRF token in ``X-CSRF-Token``; a state change from another site's
``Origin`` is refused before anything else. ``GET /metrics`` (Prometheus) goes the
same way, for 运维 and 管理员 (``api_access.metrics_account``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlsplit

from aiohttp import web
from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError

from config.models import WebConfig
from node.api_errors import error
from node.store.accounts import ROLES, Account, AccountStore, SessionRow
from node.web.api_access import api_account, bearer_matches, local_account, metrics_account
from node.web.render import error_page
from protocol.fields import clock_text

__all__ = [
    "AUTH",
    "SESSION",
    "Auth",
    "Handler",
    "LoginOutcome",
    "account_of",
    "auth_middleware",
    "can_see_cases",
    "password_problem",
    "refuse_other_region",
    "require",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Argon2id with RFC 9106's second recommended option (memory-constrained).
HASHER = PasswordHasher.from_parameters(profiles.RFC_9106_LOW_MEMORY)
#: Hashes computed at once: each takes 64 MiB and a core for 0.15 s.
HASHING_AT_ONCE = 2
#: A session's last use is written at most this often (not at every page).
TOUCH_MS = 60_000
MIN_PASSWORD = 10
MAX_PASSWORD = 256
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def password_problem(username: str, password: str) -> str | None:
    """What is wrong with a new password, in Chinese, or ``None``: the node's policy."""
    if len(password) < MIN_PASSWORD:
        return f"密码至少需要 {MIN_PASSWORD} 个字符，请设置更长的密码"
    if len(password) > MAX_PASSWORD:
        return f"密码不能超过 {MAX_PASSWORD} 个字符，请缩短后再试"
    if username and username.lower() in password.lower():
        return "密码不能包含用户名，请换一个密码"
    if len(set(password)) < 4:
        return "密码过于简单（重复字符过多），请换一个密码"
    return None




@dataclasses.dataclass(frozen=True)
class LoginOutcome:
    account: Account | None = None
    session_id: str | None = None  # for the cookie; only its hash is stored
    error: str | None = None  # what went wrong and what to do next, in Chinese


class Auth:
    """Sign-in for one node: its account store, its [web] settings and its clock."""

    def __init__(self, store: AccountStore, config: WebConfig, *, region: str, name: str,
                 clock: Callable[[], int], local_token: bytes, hasher: PasswordHasher = HASHER
                 ) -> None:
        self.store = store
        self.local_token = local_token  # the SHA-256 of the node's local API token
        self.config = config
        self.region = region
        self.name = name  # the region's name, e.g. 济南市
        self.clock = clock
        self.hasher = hasher
        prefix = "__Host-" if config.secure_cookies else ""
        self.cookie_name = f"{prefix}tongban-{region}"
        self.login_cookie_name = f"{prefix}tongban-{region}-login"
        self._hashing = asyncio.Semaphore(HASHING_AT_ONCE)
        self._dummy_hash: str | None = None

    def __repr__(self) -> str:
        return f"<Auth {self.region} {self.store!r}>"

    @property
    def idle_ms(self) -> int:
        return self.config.session_idle_minutes * 60_000

    # ---------------------------------------------------------------- passwords

    async def hash_password(self, password: str) -> str:
        async with self._hashing:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def check_password(self, account: Account, password: str) -> bool:
        return await self._verify(account.password_hash, password[:MAX_PASSWORD])

    async def _verify(self, password_hash: str, password: str) -> bool:
        async with self._hashing:
            return await asyncio.to_thread(self._verify_now, password_hash, password)

    def _verify_now(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    # ---------------------------------------------------------------- sign-in

    async def login(self, username: str, password: str) -> LoginOutcome:
        now = self.clock()
        limit, minutes = self.config.lockout_failures, self.config.lockout_minutes
        account = self.store.account(username) if username else None
        if account is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self.hash_password(secrets.token_hex(16))
            await self._verify(self._dummy_hash, password)  # the same time as a real check
            return LoginOutcome(error="用户名或密码不正确。请核对后重新输入；"
                                      "如不知道自己的用户名，请联系本节点管理员。")
        if account.locked(now):
            assert account.locked_until is not None
            return LoginOutcome(error=_locked(account.locked_until))
        if not await self._verify(account.password_hash, password[:MAX_PASSWORD]):
            failures, until = await asyncio.to_thread(
                self.store.record_failure, account.id, now, limit=limit, lock_ms=minutes * 60_000)
            if until is not None:
                return LoginOutcome(error=_locked(until))
            return LoginOutcome(error=f"密码不正确，还可以再试 {limit - failures} 次；连续输错 {limit} "
                                      f"次，账户将锁定 {minutes} 分钟。忘记密码请联系管理员重置。")
        if account.disabled:
            return LoginOutcome(error="该账户已停用，不能登录。如需继续使用，请联系本节点管理员启用账户。")
        await asyncio.to_thread(self.store.record_success, account.id)
        if self.hasher.check_needs_rehash(account.password_hash):
            await asyncio.to_thread(self.store.rehash, account.id,
                                    await self.hash_password(password))
        session_id = secrets.token_urlsafe(32)  # 256 bits
        expires = now + self.config.session_absolute_hours * 3_600_000
        await asyncio.to_thread(self.store.create_session, _digest(session_id), account.id,
                                secrets.token_urlsafe(32), now, expires)
        return LoginOutcome(account=account, session_id=session_id)

    async def logout(self, session_id: str) -> None:
        await asyncio.to_thread(self.store.end_session, _digest(session_id))

    async def session(self, session_id: str) -> SessionRow | None:
        """The live session of this cookie value, or ``None`` (ending it if it expired)."""
        id_hash = _digest(session_id)
        row = self.store.session(id_hash)
        if row is None:
            return None
        now = self.clock()
        if now >= row.expires_at or now - row.last_seen >= self.idle_ms or row.account.disabled:
            await asyncio.to_thread(self.store.end_session, id_hash)
            return None
        if now - row.last_seen >= TOUCH_MS:
            await asyncio.to_thread(self.store.touch_session, id_hash, now)
        return row

    # ---------------------------------------------------------------- cookies

    def set_session_cookie(self, response: web.StreamResponse, session_id: str) -> None:
        # No Max-Age: the cookie goes with the browser; the server ends the session anyway.
        response.set_cookie(self.cookie_name, session_id, path="/", httponly=True,
                            samesite="Strict", secure=self.config.secure_cookies)

    def clear_session_cookie(self, response: web.StreamResponse) -> None:
        response.del_cookie(self.cookie_name, path="/", secure=self.config.secure_cookies,
                            httponly=True, samesite="Strict")

    def login_token(self, request: web.Request, response: web.StreamResponse | None) -> str:
        """The pre-sign-in CSRF token (double submit): the cookie's, or a new one set on
        ``response``."""
        token = request.cookies.get(self.login_cookie_name)
        if token and len(token) >= 32:
            return token
        token = secrets.token_urlsafe(32)
        if response is not None:
            response.set_cookie(self.login_cookie_name, token, path="/", httponly=True,
                                samesite="Strict", secure=self.config.secure_cookies)
        return token


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def _locked(until: int) -> str:
    return (f"连续输错密码次数过多，账户已锁定至 {clock_text(until)}（北京时间）。"
            "请到时再试，或联系本节点管理员解锁。")


AUTH = web.AppKey("auth", Auth)
SESSION = web.RequestKey("session", SessionRow)


def account_of(request: web.Request) -> Account | None:
    session = request.get(SESSION)
    return None if session is None else session.account


# ---------------------------------------------------------------- middleware


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.host


async def _csrf_ok(request: web.Request, auth: Auth, session: SessionRow | None) -> bool:
    expected = session.csrf_token if session is not None else \
        request.cookies.get(auth.login_cookie_name)
    if not expected:
        return False
    given = request.headers.get("X-CSRF-Token")
    if given is None and request.content_type in ("application/x-www-form-urlencoded",
                                                  "multipart/form-data"):
        form = await request.post()
        field = form.get("csrf_token")
        given = field if isinstance(field, str) else None
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Put the signed-in account on the request; refuse state changes without the CSRF
    token; send an account whose password an administrator set to change it first
    (nothing else is open to it until then)."""
    if request.path == "/api" or request.path.startswith("/api/"):
        return await _api(request, handler)
    if request.path == "/metrics":  # Prometheus (node.metrics): as an API route of its own
        return await _api(request, handler, metrics_account)
    auth = request.app[AUTH]
    cookie = request.cookies.get(auth.cookie_name)
    session = await auth.session(cookie) if cookie else None
    if session is not None:
        request[SESSION] = session
    if request.method not in SAFE_METHODS and (
            not _same_origin(request) or not await _csrf_ok(request, auth, session)):
        response: web.StreamResponse = error_page(
            request, 403, "请求未通过安全校验",
            "页面可能已过期，或登录已超时，或请求来自其他网站（缺少有效的 CSRF 校验码），本次操作未执行。",
            "请返回上一页，刷新后重新提交；如仍出现此提示，请重新登录。")
    elif (session is not None and session.account.must_change_password
          and not request.path.startswith("/static/")
          and request.path not in ("/password", "/logout")):
        raise web.HTTPSeeOther("/password")  # a password an administrator set: change it first
    else:
        response = await handler(request)
    if not request.path.startswith("/static/"):
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _api(request: web.Request, handler: Handler,
               refusal: Callable[..., web.Response | None] = api_account) -> web.StreamResponse:
    """The JSON API: the local token or a session, then the route's roles (api_access)."""
    if request.method not in SAFE_METHODS and not _same_origin(request):
        # A browser on another site (a form can post text/plain or multipart here).
        return error(403, "cross_site", "不接受来自其他网站的请求，请在本节点的页面中操作",
                     "a state-changing request from another site is refused")
    auth = request.app[AUTH]
    bearer = bearer_matches(request, auth.local_token)
    if bearer is False:
        return error(401, "bad_token", "接口令牌不正确：请使用节点数据目录中 api-token 文件里的令牌",
                     "the API token is wrong: use the one in the api-token file of the node's "
                     "data dir")
    account: Account | None = None
    if bearer:
        account = local_account(auth.region, auth.clock())
    elif cookie := request.cookies.get(auth.cookie_name):
        session = await auth.session(cookie)
        if session is not None:
            if request.method not in SAFE_METHODS and not await _csrf_ok(request, auth, session):
                return error(403, "csrf", "缺少有效的 CSRF 校验码（请求头 X-CSRF-Token），本次操作未执行；"
                             "请刷新页面后重试", "a signed-in session's state change needs its "
                             "CSRF token in the X-CSRF-Token header")
            request[SESSION] = session
            account = session.account
    refused = refusal(request, account, region=auth.region)
    return refused if refused is not None else await handler(request)


# ---------------------------------------------------------------- roles and regions


def can_see_cases(account: Account, region: str) -> bool:
    """Whether the account may see the cases of the node of ``region``: only staff of
    that region (a clerk sees only their own region's cases, architecture §9)."""
    return account.region == region


def refuse_other_region(request: web.Request, account: Account) -> web.Response | None:
    """The 403 page for an account of another region, or ``None`` when it may look."""
    auth = request.app[AUTH]
    if can_see_cases(account, auth.region):
        return None
    return error_page(
        request, 403, "无权查看本地区办件",
        f"本节点只向{auth.name}（{auth.region}）的工作人员显示办件；"
        f"您的账户属于地区 {account.region}。",
        "请登录您所在地区的节点查看办件；如账户所属地区有误，请联系本节点管理员更正。")


def require(*roles: str, own_region: bool = False) -> Callable[[Handler], Handler]:
    """A handler only for signed-in accounts holding one of ``roles`` (any role if none
    are named), and with ``own_region`` only for accounts of the node's region."""
    unknown = set(roles) - ROLES.keys()
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            account = account_of(request)
            if account is None:
                if request.method in SAFE_METHODS:
                    raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
                return error_page(request, 401, "请先登录", "登录已超时或尚未登录，本次操作未执行。",
                                  "请重新登录后再操作。")
            if roles and not account.roles & set(roles):
                needed = "、".join(ROLES[r] for r in roles)
                return error_page(request, 403, "无权使用此页面",
                                  f"此页面仅供{needed}使用，您的账户角色是"
                                  f"{'、'.join(account.role_names) or '（无）'}。",
                                  "如工作需要，请联系本节点管理员为您的账户添加相应角色。")
            if own_region:
                refused = refuse_other_region(request, account)
                if refused is not None:
                    return refused
            return await handler(request)

        return checked

    return wrap
