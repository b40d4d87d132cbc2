"""The circle routes of the JSON API.

``GET /api/circle``                             the registry this node trusts, waiting join
                                                requests (convener), refused registries;
``POST /api/circle/join``                       this node asks to join (``{"contact_name",
                                                "contact_phone", "contact_email",
                                                "nats_account", "relay"}``);
``POST /api/circle/requests/{region}/approve``  the convener admits a region;
``POST /api/circle/requests/{region}/refuse``   … or refuses it (``{"reason"}``);
``POST /api/circle/members/{region}/{suspend|revoke|reinstate}``
                                                the convener changes a member's status.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from node.api_errors import error, json_object
from node.app import Node
from node.circle import Circle, RelayError
from protocol.circle import Contact, NatsAccount
from protocol.errors import ProtocolError
from protocol.fields import REGION_PATTERN

__all__ = ["add_circle_routes"]

_REGION = re.compile(REGION_PATTERN)


def add_circle_routes(app: web.Application, node_key: web.AppKey[Node]) -> None:
    def circle_of(request: web.Request) -> Circle | web.Response:
        circle = request.app[node_key].circle
        if circle is None:
            return error(404, "no_circle", "本节点未加入通办圈（配置中没有 [circle]）",
                         "this node is not configured with a circle")
        return circle

    async def body(request: web.Request) -> dict[str, Any] | web.Response:
        if request.content_type != "application/json":  # a form post from another site cannot
            return error(415, "json_only", "请求体须为 JSON（Content-Type: application/json）",
                         "send a JSON body (Content-Type: application/json)")
        return await json_object(request)

    async def show(request: web.Request) -> web.Response:
        circle = circle_of(request)
        if isinstance(circle, web.Response):
            return circle
        registry = circle.current
        return web.json_response({
            "circle": circle.config.id, "convener": circle.config.convener,
            "version": registry.version if registry else None,
            "members": [{"region": m.region, "name": m.name, "status": m.status,
                         "status_at": m.status_at, "sign_keys": [k.key for k in m.sign_keys],
                         "relay": m.relay}
                        for m in (registry.members if registry else ())],
            "requests": [{"region": r.region, "name": r.name, "contact": r.contact.model_dump(),
                          "requested_at": r.requested_at, "sign_key": r.sign_key.key,
                          "nats_account": r.nats_account, "relay": r.relay}
                         for r in circle.requests.values()],
            "decisions": [{"region": r, "decision": d, "reason": why, "at": at}
                          for r, d, why, at in circle.decisions],
            "refused": circle.refused})

    async def join(request: web.Request) -> web.Response:
        circle = circle_of(request)
        payload = await body(request)
        if isinstance(circle, web.Response):
            return circle
        if isinstance(payload, web.Response):
            return payload
        fields = ("contact_name", "contact_phone", "contact_email", "nats_account", "relay")
        if any(not isinstance(payload.get(f), str | None) for f in fields):
            return error(400, "bad_join", "加入申请的各项应为文字（未填可省略）",
                         f"{', '.join(fields)} must be strings (or left out)")
        try:
            contact = Contact(name=payload.get("contact_name", ""),
                              phone=payload.get("contact_phone") or None,
                              email=payload.get("contact_email") or None)
        except ValidationError as exc:
            return error(400, "bad_contact", "联系人信息有误：姓名必填，电话、邮箱格式要正确",
                         f"contact: {exc.errors()[0]['loc'][0]} {exc.errors()[0]['msg']}")
        account = payload.get("nats_account") or None
        try:
            if account is not None:
                TypeAdapter(NatsAccount).validate_python(account)
        except ValidationError:  # its error has no field name ('loc' is empty)
            return error(400, "bad_account", "NATS 账户应为以 A 开头的 56 位公钥",
                         "nats_account must be a NATS account public key (A and 55 characters)")
        relay = payload.get("relay") or None
        if relay is not None and not _REGION.match(relay):
            return error(400, "bad_relay", "经由地区应为 6、9 或 12 位行政区划代码（GB/T 2260）",
                         "relay must be a GB/T 2260 region code (6, 9 or 12 digits)")
        try:
            sent = await circle.request_join(contact, account, relay)
        except RelayError as exc:  # this region itself, or not a member that may relay
            return error(422, "bad_relay", exc.zh, exc.en)
        except ConnectionError as exc:
            return error(503, "nats_unavailable", "消息服务暂不可用，请稍后重试", str(exc))
        return web.json_response({"region": sent.region, "name": sent.name,
                                  "sign_key": sent.sign_key.key}, status=202)

    async def decide(request: web.Request) -> web.Response:
        circle = circle_of(request)
        if isinstance(circle, web.Response):
            return circle
        region, decision = request.match_info["region"], request.match_info["decision"]
        payload = await body(request)
        if isinstance(payload, web.Response):
            return payload
        try:
            if decision == "approve":
                key = payload.get("key")
                if not isinstance(key, str) or not key:
                    return error(400, "no_key", "请写明与申请地区核对过的签名密钥（key）",
                                 "give the signing key id you confirmed with the region (key)")
                registry = await circle.approve(region, key)
                return web.json_response({"region": region, "version": registry.version})
            reason = payload.get("reason")
            reason = reason.strip() if isinstance(reason, str) else ""
            if not reason:
                return error(400, "no_reason", "请写明不予同意的理由", "give the reason for refusing")
            await circle.refuse(region, reason[:500])
            return web.json_response({"region": region, "refused": True})
        except (PermissionError, LookupError, ProtocolError, ValueError, ConnectionError) as exc:
            return _refusal(exc, "只有牵头单位可以审批加入申请", "no_request",
                            "没有该地区待审批的加入申请")

    async def member_status(request: web.Request) -> web.Response:
        circle = circle_of(request)
        if isinstance(circle, web.Response):
            return circle
        payload = await body(request)
        if isinstance(payload, web.Response):
            return payload
        region = request.match_info["region"]
        status = {"suspend": "suspended", "revoke": "revoked",
                  "reinstate": "joined"}[request.match_info["action"]]
        try:
            registry = await circle.set_status(region, status)
        except (PermissionError, LookupError, ProtocolError, ValueError, ConnectionError) as exc:
            return _refusal(exc, "只有牵头单位可以变更成员状态", "no_member", "该地区不是通办圈成员")
        return web.json_response({"region": region, "status": status, "version": registry.version})

    app.router.add_get("/api/circle", show)
    app.router.add_post(r"/api/circle/members/{region}/{action:suspend|revoke|reinstate}",
                        member_status)
    app.router.add_post("/api/circle/join", join)
    app.router.add_post(r"/api/circle/requests/{region}/{decision:approve|refuse}", decide)


def _refusal(exc: Exception, not_convener_zh: str, missing: str, missing_zh: str) -> web.Response:
    """The answer to a convener action that could not be done."""
    if isinstance(exc, PermissionError):
        return error(403, "not_convener", not_convener_zh, str(exc))
    if isinstance(exc, LookupError):
        return error(404, missing, missing_zh, str(exc))
    if isinstance(exc, ConnectionError):
        return error(503, "nats_unavailable", "消息服务暂不可用，请稍后重试", str(exc))
    return error(422, "bad_registry", "名册未能发布", str(exc)[:500])
