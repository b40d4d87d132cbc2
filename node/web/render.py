"""Rendering pages: the base layout's context (region, the account, navigation by role,
the CSRF token) and the one error page, which always says what to do next."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

__all__ = ["NAVIGATION", "error_page", "render"]

#: The header's navigation: (path, label, roles that see it; ``None``: every account).
NAVIGATION: list[tuple[str, str, frozenset[str] | None]] = [
    ("/", "首页", None),
    ("/cases", "办件列表", frozenset({"clerk", "reviewer", "operator"})),
    ("/window/matters", "事项查询", frozenset({"clerk"})),
    ("/desk", "待办队列", frozenset({"reviewer"})),
    ("/dept", "部门办理", frozenset({"department"})),
    ("/video", "视频窗口", frozenset({"clerk", "reviewer"})),
    ("/ops", "运行监控", frozenset({"operator", "admin"})),
    ("/admin/accounts", "账户管理", frozenset({"admin"})),
    ("/password", "修改密码", None),
]


def _base(request: web.Request) -> dict[str, Any]:
    from node.web.auth import AUTH, SESSION  # auth renders its refusals with error_page

    auth = request.app[AUTH]
    session = request.get(SESSION)
    account = None if session is None else session.account
    nav = [] if account is None else [
        {"href": href, "label": label, "current": request.path == href}
        for href, label, roles in NAVIGATION if roles is None or roles & account.roles]
    return {"region": auth.region, "region_name": auth.name, "account": account, "nav": nav,
            "csrf_token": session.csrf_token if session is not None else ""}


def render(request: web.Request, template: str, context: dict[str, Any] | None = None,
           status: int = 200) -> web.Response:
    return aiohttp_jinja2.render_template(template, request, {**_base(request), **(context or {})},
                                          status=status)


def error_page(request: web.Request, status: int, title: str, problem: str,
               next_step: str) -> web.Response:
    """A refusal: what happened (``problem``) and what to do about it (``next_step``)."""
    return render(request, "error.html", {"title": title, "problem": problem,
                                          "next_step": next_step, "status": status}, status=status)
