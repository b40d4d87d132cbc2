"""Who may call which route of the JSON API (``/api/...``).

Theory of operation
-------------------
There are two ways in, and nothing else opens the API (``GET /api/health``, the
liveness check, is the one public route):

* **The node's local token** (本机接口令牌), sent as ``Authorization: Bearer <token>``.
  It lives in the file ``[http] token_file`` (default ``<data_dir>/api-token``,
  mode 0600), written at the node's first start. Whoever can read the node's data
  dir already holds its keys and databases, so the token acts with every role of
  the node's own region: it is how the command line on the node's machine
  (``tongban submit``, ``catalog``, ``circle`` ..., given ``--token`` or
  ``TONGBAN_TOKEN``) and the operators' scripts call the node. The file holds the
  token itself; the node keeps only its SHA-256 and compares digests in constant time.
* **A signed-in staff session** (the pages' cookie), for the pages' own scripts. Its
  state changes carry the session's CSRF token in ``X-CSRF-Token`` and come from this
  node's origin; a bearer token needs neither, since no browser sends one by itself.

Either way the caller is an account: one of another region is refused (a clerk sees
only their own region's cases, architecture §9), and each route names the roles that
may call it in ``API_ROLES``. A route missing from that table is refused for
everyone (fail closed); a test checks that the table covers every ``/api`` route.

``GET /metrics`` (Prometheus, ``node.metrics``) is let in the same two ways, for the
local token or a session of 运维 or 管理员 (``metrics_account``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from aiohttp import web

from config import ConfigError
from node.api_errors import error
from node.store.accounts import ROLES, Account

__all__ = ["API_ROLES", "METRICS_ROLES", "PUBLIC", "api_account", "bearer_matches",
           "local_account", "local_token_digest", "metrics_account"]

STAFF = frozenset(ROLES)
CLERK = frozenset({"clerk"})
ADMIN = frozenset({"admin"})
OPERATOR = frozenset({"operator"})

#: Routes open without sign-in: (method, route as registered).
PUBLIC = frozenset({("GET", "/api/health")})

#: Roles that may call each route: (method, route as registered) -> roles.
API_ROLES: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/api/cases"): STAFF,
    ("POST", "/api/cases"): CLERK,  # 收件: the window collects and sends
    ("GET", "/api/cases/{case_id}"): STAFF,
    ("GET", "/api/cases/{case_id}/bundle"): STAFF,
    ("POST", "/api/cases/{case_id}/retry"): OPERATOR,  # 运维: forward a dead letter again
    ("POST", "/api/materials"): CLERK,
    ("GET", "/api/materials/{object}"): frozenset({"clerk", "reviewer", "department"}),
    ("POST", "/api/joints"): CLERK,
    ("GET", "/api/joints"): STAFF,
    ("GET", "/api/joints/{joint_id}"): STAFF,
    ("POST", "/api/catalog"): ADMIN,  # publishing the region's 事项清单
    ("GET", "/api/catalog/export"): STAFF,
    ("GET", "/api/catalog/search"): STAFF,
    ("GET", "/api/catalog/rejected"): STAFF,
    ("GET", "/api/catalog/stats"): STAFF,
    ("GET", "/api/catalog/{region}/{code}"): STAFF,
    ("GET", "/api/circle"): STAFF,
    ("POST", "/api/circle/join"): ADMIN,
    ("POST", "/api/circle/members/{region}/{action}"): ADMIN,  # suspend, revoke, reinstate
    ("POST", "/api/circle/requests/{region}/{decision}"): ADMIN,  # approve, refuse
}

#: The token file's first line is the token; shorter than this is refused.
MIN_TOKEN = 32


def local_token_digest(path: Path) -> bytes:
    """The SHA-256 of the node's local token, writing a new token to ``path`` (mode
    0600, never overwritten) when there is none yet. ``ConfigError`` for a file that
    holds no usable token or cannot be read or written."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        text = "tb_" + secrets.token_urlsafe(32)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="ascii") as file:
                file.write(text + "\n")
        except OSError as exc:
            raise ConfigError(f"无法写入接口令牌文件 / cannot write the API token file "
                              f"{path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        text = ""
    except OSError as exc:
        raise ConfigError(f"无法读取接口令牌文件 / cannot read the API token file {path}: "
                          f"{exc.strerror}") from exc
    token = text.strip()
    if len(token) < MIN_TOKEN or any(c.isspace() for c in token):
        raise ConfigError(f"接口令牌文件 {path} 中没有有效的令牌（一行、至少 {MIN_TOKEN} 个字符）；"
                          f"删除该文件，节点启动时会重新生成 / {path} holds no API token (one "
                          f"line of at least {MIN_TOKEN} characters); remove it and the node "
                          "writes a new one")
    return hashlib.sha256(token.encode()).digest()


def local_account(region: str, now: int) -> Account:
    """The account the local token acts as: every role, of the node's own region."""
    return Account(id=0, username="local", display_name="本机命令行", roles=STAFF,
                   region=region, password_hash="", disabled=False, must_change_password=False,
                   failed_attempts=0, locked_until=None, created_at=now, updated_at=now)


def bearer_matches(request: web.Request, digest: bytes) -> bool | None:
    """Whether the request's bearer token is the local one; ``None`` when it has none."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    given = hashlib.sha256(token.strip().encode(errors="replace")).digest()
    return hmac.compare_digest(given, digest)


#: Who may read ``GET /metrics`` besides the local token (Prometheus scrapes with it).
METRICS_ROLES = frozenset({"operator", "admin"})


def metrics_account(request: web.Request, account: Account | None, *,
                    region: str) -> web.Response | None:
    """The refusal for ``GET /metrics`` (node.metrics), as for an API route of 运维 and
    管理员: not in ``API_ROLES``, whose routes are all under ``/api``."""
    return api_account(request, account, region=region, roles=METRICS_ROLES)


def api_account(request: web.Request, account: Account | None, *,
                region: str, roles: frozenset[str] | None = None) -> web.Response | None:
    """The refusal for this API request by ``account`` (``None``: not signed in), or
    ``None`` when it may go on. ``roles``: the route's, instead of ``API_ROLES``'."""
    route = request.match_info.route
    resource = route.resource
    if resource is None:  # no such route: the 404 (or 405) says so, signed in or not
        return None
    key = (request.method if request.method != "HEAD" else "GET", resource.canonical)
    if key in PUBLIC:
        return None
    if account is None:
        return error(401, "sign_in", "请先登录本节点的页面，或用本机接口令牌调用"
                     "（请求头 Authorization: Bearer <令牌>；令牌在节点数据目录的 api-token 文件中）",
                     "sign in to the node's pages, or send the node's local token as "
                     "'Authorization: Bearer <token>' (the api-token file in its data dir)")
    if account.region != region:
        return error(403, "other_region", f"本节点只向地区 {region} 的工作人员开放；"
                     f"您的账户属于地区 {account.region}，请使用您所在地区的节点",
                     f"this node serves staff of region {region} only; the account belongs "
                     f"to {account.region}")
    if roles is None:
        roles = API_ROLES.get(key, frozenset())
    if not account.roles & roles:
        needed = "、".join(ROLES[r] for r in sorted(roles)) or "（无人）"
        return error(403, "role", f"此接口仅供{needed}使用；如工作需要，请联系本节点管理员添加角色",
                     f"this route is for the roles {sorted(roles)} only")
    return None
