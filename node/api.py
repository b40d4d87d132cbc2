"""The node's JSON API (aiohttp): health, cases, receipts and evidence bundles.

The web pages of the clerk, reviewer and operators build on these routes. Every
error is JSON ``{"error": code, "zh": ..., "en": ...}`` with a 4xx status.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from node.app import Node
from node.engine import Command
from node.evidence import bundle_for
from protocol import Receipt, decode
from protocol import examples as ex
from protocol.states import STATE_NAMES_ZH
from protocol.wire import receipt_from_fields

__all__ = ["NODE", "make_app"]

NODE = web.AppKey("node", Node)


def _error(status: int, code: str, zh: str, en: str) -> web.Response:
    return web.json_response({"error": code, "zh": zh, "en": en}, status=status)


async def health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return web.json_response({"region": node.region, "name": node.config.name,
                              "stats": node.stats(), "states": node.store.count_states(),
                              "outbox_backlog": node.store.outbox_backlog()})


async def list_cases(request: web.Request) -> web.Response:
    node = request.app[NODE]
    state = request.query.get("state")
    try:
        limit = min(int(request.query.get("limit", "100")), 1000)
    except ValueError:
        return _error(400, "bad_limit", "limit 必须是整数", "limit must be an integer")
    rows = node.store.cases(state=state, limit=limit)
    return web.json_response([{**row, "state_zh": STATE_NAMES_ZH.get(row["state"], row["state"])}
                              for row in rows])


async def create_case(request: web.Request) -> web.Response:
    """Collect and send a sample application (the clerk's form comes with the web app)."""
    node = request.app[NODE]
    try:
        payload = await request.json()
    except ValueError:
        return _error(400, "bad_json", "请求体不是有效的 JSON", "the request body is not JSON")
    handling = payload.get("handling") if isinstance(payload, dict) else None
    if not isinstance(handling, str) or not any(p.region == handling for p in node.config.peers):
        return _error(400, "unknown_region", "办理地不是本节点的通办伙伴",
                      "the handling region is not a partner of this node")
    now = node.clock()
    window_no = f"{node.region}-{time.strftime('%Y%m%d')}-{now % 10**9:09d}"
    result = await node.command(Command(None, "collect", ex.application(now, window_no=window_no),
                                        peer=handling))
    if result.outcome != "applied" or result.case_id is None:
        return _error(422, result.reason.code if result.reason else "refused",
                      "收件失败", result.detail or "collect refused")
    sent = await node.command(Command(result.case_id, "submit"))
    receipt = result.step.receipt if result.step else None
    return web.json_response({
        "case_id": result.case_id, "window_no": window_no, "state": sent.step.new_state
        if sent.step else None,
        "receipt": _receipt_json(receipt) if receipt else None}, status=201)


async def get_case(request: web.Request) -> web.Response:
    node = request.app[NODE]
    case_id = request.match_info["case_id"]
    row = node.store.case_row(case_id)
    if row is None:
        return _error(404, "no_case", "没有这个办件", f"no case {case_id}")
    receipts = [_receipt_json(receipt_from_fields(decode(raw)))
                for raw in node.store.receipts(case_id)]
    return web.json_response({**row, "state_zh": STATE_NAMES_ZH.get(row["state"], row["state"]),
                              "receipts": receipts})


async def get_bundle(request: web.Request) -> web.Response:
    node = request.app[NODE]
    case_id = request.match_info["case_id"]
    if node.store.case_row(case_id) is None:
        return _error(404, "no_case", "没有这个办件", f"no case {case_id}")
    data = bundle_for(node.store, node.registry, node.region, case_id, node.clock())
    return web.Response(body=data, content_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{case_id}.tbb"'})


async def retry_forward(request: web.Request) -> web.Response:
    """Operator: forward a dead-lettered case again (运维人员手动重试)."""
    node = request.app[NODE]
    case_id = request.match_info["case_id"]
    result = await node.command(Command(case_id, "operator_retry"))
    if result.outcome != "applied":
        return _error(409, result.reason.code if result.reason else "refused",
                      "该办件当前不能重试流转", result.detail or "the case cannot be retried now")
    return web.json_response({"case_id": case_id, "state": result.step.new_state
                              if result.step else None})


def _receipt_json(receipt: Receipt) -> dict[str, Any]:
    return {"case": receipt.case, "actor": receipt.actor, "index": receipt.index,
            "kind": receipt.kind, "at": receipt.at, "key": receipt.key,
            "digest": receipt.digest.hex(), "data": receipt.data}


def make_app(node: Node) -> web.Application:
    app = web.Application(client_max_size=node.config.limits.max_message_bytes)
    app[NODE] = node
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/cases", list_cases)
    app.router.add_post("/api/cases", create_case)
    app.router.add_get("/api/cases/{case_id}", get_case)
    app.router.add_get("/api/cases/{case_id}/bundle", get_bundle)
    app.router.add_post("/api/cases/{case_id}/retry", retry_forward)
    return app
