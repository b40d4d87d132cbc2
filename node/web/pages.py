"""The staff pages: 登录, 首页, 办件列表, 账户管理, 修改密码, 退出.

Every page is server-rendered (Jinja2); scripts only add comfort (the larger-text
toggle), so every page works with the keyboard alone and without them. A change is
a POST that redirects back (post/redirect/get), so reloading never repeats it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from node.app import Node
from node.store.accounts import FILENAME, ROLES, Account, AccountError, AccountStore
from node.web.api_access import local_token_digest
from node.web.auth import (
    AUTH,
    SESSION,
    Auth,
    account_of,
    auth_middleware,
    password_problem,
    require,
)
from node.web.desk import add_desk_routes
from node.web.notices import add_notice_routes
from node.web.ops import add_ops_routes
from node.web.render import error_page, render
from node.web.verify import add_verify_routes
from node.web.video import add_video_routes
from node.web.window import add_window_routes
from protocol.fields import clock_text
from protocol.states import STATE_NAMES_ZH

__all__ = ["add_web_routes"]

HERE = Path(__file__).resolve().parent
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._\-]{2,31}$")
REGION = re.compile(r"^[0-9]{6}([0-9]{3}|[0-9]{6})?$")  # GB/T 2260

#: What each role does, for its landing page: (path or None while still to come, name, what).
TASKS: dict[str, list[tuple[str | None, str, str]]] = {
    "clerk": [
        ("/cases", "办件列表", "查看本地区收件的办件及其流转进度"),
        ("/window/matters", "收件登记", "选择事项后登记申请人和材料，推送到办理地"),
        ("/window/matters", "事项查询", "查询通办圈各地的通办事项、受理条件和所需材料"),
        ("/cases", "回执打印", "在办件列表中打印收件回执"),
    ],
    "reviewer": [
        ("/cases", "办件列表", "查看本地区的办件及其状态"),
        ("/desk", "待初审", "审核异地代收的申请：受理、不予受理或要求补正"),
    ],
    "department": [
        ("/dept", "部门办理", "办理已受理的办件并录入办理结果"),
    ],
    "operator": [
        ("/cases", "办件列表", "查看本节点的全部办件"),
        ("/ops", "运行监控", "节点、消息服务与流转积压情况"),
        ("/ops/dead-letters", "流转重试", "处理流转失败（死信）的办件"),
        ("/ops/deadlines", "时限预警", "即将到期或已逾期的办件，按预警级别"),
    ],
    "admin": [
        ("/admin/accounts", "账户管理", "新建账户、重置密码、停用与启用、解锁，查看审计记录"),
    ],
}

#: What an administrative action did, for the message after it (``?done=``).
DONE = {
    "created": "已新建账户 {who}。请把初始密码当面告知本人，首次登录时须修改密码。",
    "reset": "已重置 {who} 的密码，其已登录的会话均已退出；首次登录时须修改密码。",
    "disabled": "已停用账户 {who}，其已登录的会话均已退出。",
    "enabled": "已启用账户 {who}。",
    "unlocked": "已解锁账户 {who}，可以立即重新登录。",
    "roles": "已更新 {who} 的角色。",
}
AUDIT_ACTIONS = {"create": "新建账户", "reset_password": "重置密码", "change_password": "本人修改密码",
                 "disable": "停用", "enable": "启用", "unlock": "解锁", "set_roles": "调整角色",
                 "lock": "连续输错密码，自动锁定",
                 "retry_forward": "死信重试流转", "discard_rejection": "忽略拒收报文"}


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def _text(form: Any, name: str, limit: int = 200) -> str:
    value = form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


def _secret(form: Any, name: str) -> str:
    """A password as typed (spaces are part of it); the policy refuses an overlong one."""
    value = form.get(name, "")
    return value[:1000] if isinstance(value, str) else ""


# ---------------------------------------------------------------- sign-in


async def login_page(request: web.Request) -> web.StreamResponse:
    if account_of(request) is not None:
        raise web.HTTPSeeOther(_safe_next(request.query.get("next")))
    notice = "密码已修改，请用新密码登录。" if request.query.get("changed") else None
    return _login_form(request, notice=notice)


def _login_form(request: web.Request, *, error: str | None = None, notice: str | None = None,
                username: str = "", status: int = 200) -> web.Response:
    auth = request.app[AUTH]
    token = auth.login_token(request, None)
    response = render(request, "login.html", {
        "error": error, "notice": notice, "username": username, "csrf_token": token,
        "next": _safe_next(request.query.get("next"))}, status=status)
    if request.cookies.get(auth.login_cookie_name) != token:
        response.set_cookie(auth.login_cookie_name, token, path="/", httponly=True,
                            samesite="Strict", secure=auth.config.secure_cookies)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH]
    form = await request.post()
    username = _text(form, "username", 64).lower()
    password = form.get("password", "")
    if not isinstance(password, str) or not username or not password:
        return _login_form(request, username=username, status=400,
                           error="请填写用户名和密码后再登录。")
    outcome = await auth.login(username, password)
    if outcome.session_id is None:
        return _login_form(request, username=username, status=401, error=outcome.error)
    response = web.HTTPSeeOther(_safe_next(request.query.get("next")))
    auth.set_session_cookie(response, outcome.session_id)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH]
    cookie = request.cookies.get(auth.cookie_name)
    if cookie:
        await auth.logout(cookie)
    response = web.HTTPSeeOther("/login")
    auth.clear_session_cookie(response)
    raise response


# ---------------------------------------------------------------- pages


@require()
async def home(request: web.Request) -> web.StreamResponse:
    account = account_of(request)
    assert account is not None
    sections = [{"role": ROLES[role], "tasks": [{"href": href, "name": name, "what": what}
                                                for href, name, what in TASKS[role]]}
                for role in ROLES if role in account.roles]
    return render(request, "home.html", {"sections": sections})


# ---------------------------------------------------------------- own password


@require()
async def password_page(request: web.Request) -> web.StreamResponse:
    return render(request, "password.html", {})


@require()
async def change_password(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH]
    account = account_of(request)
    assert account is not None
    form = await request.post()
    current, new, again = (_secret(form, name) for name in ("current", "new", "again"))
    problem = None
    if not await auth.check_password(account, current):
        problem = "当前密码不正确，请重新输入当前密码；忘记密码请联系管理员重置。"
    elif new != again:
        problem = "两次输入的新密码不一致，请重新输入。"
    elif new == current:
        problem = "新密码不能与当前密码相同，请换一个密码。"
    else:
        problem = password_problem(account.username, new)
    if problem is not None:
        return render(request, "password.html", {"error": problem}, status=400)
    await _change(auth, account.username, new, actor=account.username, must_change=False)
    raise web.HTTPSeeOther("/login?changed=1")


async def _change(auth: Auth, username: str, password: str, *, actor: str,
                  must_change: bool) -> None:
    password_hash = await auth.hash_password(password)
    await asyncio.to_thread(auth.store.set_password, username, password_hash, auth.clock(),
                            actor=actor, must_change=must_change)


# ---------------------------------------------------------------- administration


@require("admin")
async def accounts_page(request: web.Request) -> web.StreamResponse:
    done = DONE.get(request.query.get("done", ""))
    notice = done.format(who=request.query.get("who", "")[:32]) if done else None
    return _accounts(request, notice=notice)


def _accounts(request: web.Request, *, notice: str | None = None, error: str | None = None,
              form: dict[str, Any] | None = None, status: int = 200) -> web.Response:
    auth = request.app[AUTH]
    now = auth.clock()
    accounts = [{"username": a.username, "display_name": a.display_name, "region": a.region,
                 "roles": a.roles, "role_names": "、".join(a.role_names), "disabled": a.disabled,
                 "locked": a.locked(now),
                 "locked_until": clock_text(a.locked_until) if a.locked_until else "",
                 "must_change": a.must_change_password} for a in auth.store.accounts()]
    audit = [{"at": clock_text(row.at), "actor": "系统" if row.actor == "-" else row.actor,
              "action": AUDIT_ACTIONS.get(row.action, row.action), "target": row.target or ""}
             for row in auth.store.audit(50)]
    return render(request, "accounts.html", {
        "accounts": accounts, "audit": audit, "roles": ROLES, "notice": notice, "error": error,
        "form": form or {"username": "", "display_name": "", "region": auth.region, "roles": []},
    }, status=status)


@require("admin")
async def create_account(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH]
    actor = _actor(request)
    form = await request.post()
    username = _text(form, "username", 64).lower()
    display_name = _text(form, "display_name", 50)
    region = _text(form, "region", 12) or auth.region
    roles = [r for r in form.getall("roles", []) if isinstance(r, str)]
    password = _secret(form, "password")
    problem = None
    if not USERNAME.match(username):
        problem = "用户名须为 3 至 32 位小写字母、数字或 . _ -，并以字母或数字开头，请修改后再提交。"
    elif not display_name:
        problem = "请填写姓名。"
    elif not REGION.match(region):
        problem = "所属地区须为 6、9 或 12 位行政区划代码（GB/T 2260），例如 370100。"
    elif not roles:
        problem = "请至少选择一个角色。"
    else:
        problem = password_problem(username, password)
    if problem is None:
        password_hash = await auth.hash_password(password)
        try:
            await asyncio.to_thread(
                lambda: auth.store.create(username=username, display_name=display_name,
                                          roles=roles, region=region, password_hash=password_hash,
                                          now=auth.clock(), actor=actor,
                                          must_change_password=True))
        except AccountError as exc:
            problem = exc.zh
    if problem is not None:
        form_values = {"username": username, "display_name": display_name, "region": region,
                       "roles": roles}
        return _accounts(request, error=problem, form=form_values, status=400)
    raise web.HTTPSeeOther(f"/admin/accounts?done=created&who={username}")


@require("admin")
async def account_action(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH]
    actor = _actor(request)
    username, action = request.match_info["username"], request.match_info["action"]
    form = await request.post()
    now = auth.clock()
    store: AccountStore = auth.store
    try:
        if action == "reset":
            password = _secret(form, "password")
            problem = password_problem(username, password)
            if problem is not None:
                return _accounts(request, error=f"{username}：{problem}", status=400)
            await _change(auth, username, password, actor=actor, must_change=True)
            done = "reset"
        elif action in ("disable", "enable"):
            await asyncio.to_thread(store.set_disabled, username, action == "disable", now,
                                    actor=actor)
            done = f"{action}d"
        elif action == "unlock":
            await asyncio.to_thread(store.unlock, username, now, actor=actor)
            done = "unlocked"
        elif action == "roles":
            roles = [r for r in form.getall("roles", []) if isinstance(r, str)]
            await asyncio.to_thread(store.set_roles, username, roles, now, actor=actor)
            done = "roles"
        else:
            return error_page(request, 404, "没有这个操作", f"账户管理没有“{action}”这一操作。",
                              "请返回账户管理页面，使用页面上的按钮操作。")
    except AccountError as exc:
        return _accounts(request, error=f"{username}：{exc.zh}", status=409)
    raise web.HTTPSeeOther(f"/admin/accounts?done={done}&who={username}")


def _actor(request: web.Request) -> str:
    account: Account = request[SESSION].account
    return account.username


# ---------------------------------------------------------------- wiring


def add_web_routes(app: web.Application, node_key: web.AppKey[Node]) -> None:
    """The staff pages, their templates and static files, and the account store's
    lifetime (opened at start-up, closed at clean-up)."""

    async def accounts_lifetime(app: web.Application) -> AsyncIterator[None]:
        node = app[node_key]
        store = await asyncio.to_thread(AccountStore, node.config.data_dir / FILENAME)
        app[AUTH] = Auth(store, node.config.web, region=node.region, name=node.config.name,
                         clock=node.clock,
                         local_token=await asyncio.to_thread(local_token_digest,
                                                             node.config.token_path))
        try:
            yield
        finally:
            store.close()

    @require("clerk", "reviewer", "operator", own_region=True)
    async def case_list(request: web.Request) -> web.StreamResponse:
        """办件列表: this node's cases, for its own region's staff only."""
        state = request.query.get("state") or None
        if state is not None and state not in STATE_NAMES_ZH:
            state = None
        rows = request.app[node_key].store.cases(state=state, limit=200)
        cases = [{**row, "state_zh": STATE_NAMES_ZH.get(row["state"], row["state"]),
                  "role_zh": "收件" if row["role"] == "collecting" else "办理",
                  "updated": clock_text(row["updated_at"])} for row in rows]
        return render(request, "cases.html", {"cases": cases, "states": STATE_NAMES_ZH,
                                              "state": state})

    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"),
                         autoescape=True, undefined=jinja2.StrictUndefined)
    app.cleanup_ctx.append(accounts_lifetime)
    app.middlewares.append(auth_middleware)
    app.router.add_static("/static/", HERE / "static")
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", home)
    app.router.add_get("/cases", case_list)
    app.router.add_get("/password", password_page)
    app.router.add_post("/password", change_password)
    app.router.add_get("/admin/accounts", accounts_page)
    app.router.add_post("/admin/accounts", create_account)
    app.router.add_post("/admin/accounts/{username}/{action}", account_action)
    add_window_routes(app, node_key)  # 通办专窗: 事项查询, 收件登记, 办件详情
    add_verify_routes(app, node_key)  # /verify/{token} (public), /cases/{case_id}/receipt
    add_desk_routes(app, node_key)  # 待办队列, 办件审核, 部门办理 (/desk, /dept)
    add_video_routes(app, node_key)  # 远程虚拟窗口 (/video)
    add_notice_routes(app, node_key)  # /cases/{case_id}/notice/acceptance|supplement (printed)
    add_ops_routes(app, node_key)  # 运维: /ops 运行监控, 时限预警, 办件追踪, 死信处理
