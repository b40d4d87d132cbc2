"""The node's JSON API (aiohttp): health, cases, receipts and evidence bundles.

The web pages of the clerk, reviewer and operators build on these routes. Every
error is JSON ``{"error": code, "zh": ..., "en": ...}`` with a 4xx status.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api_catalog import add_catalog_routes
from node.api_circle import add_circle_routes
from node.api_errors import MATTER, REGION, error, json_errors, json_object, no_route
from node.api_joint import add_joint_routes
from node.app import Node
from node.engine import Command
from node.evidence import bundle_for
from node.materials import MaterialTooLarge, material_ref
from node.metrics import add_metrics_route
from node.store import Changes
from node.web import add_web_routes
from protocol import Receipt, decode
from protocol import bodies as b
from protocol.routes import SignedRouteRefusal
from protocol.states import STATE_NAMES_ZH
from protocol.wire import receipt_from_fields

__all__ = ["NODE", "make_app"]

NODE = web.AppKey("node", Node)


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
        limit = 0
    if limit < 1:  # SQLite reads a negative LIMIT as none, and a huge one overflows
        return error(400, "bad_limit", "limit 应为正整数（最多 1000）",
                     "limit must be a whole number from 1 (at most 1000 are listed)")
    rows = node.store.cases(state=state, limit=limit)
    return web.json_response([{**row, "state_zh": STATE_NAMES_ZH.get(row["state"], row["state"])}
                              for row in rows])


async def create_case(request: web.Request) -> web.Response:
    """Collect and send a sample application (the clerk's form comes with the web app)."""
    node = request.app[NODE]
    payload = await json_object(request)
    if isinstance(payload, web.Response):
        return payload
    code = version = None
    if "matter" in payload:  # route it: 基本编码 and the applicant's location
        matter, location = payload.get("matter"), payload.get("location")
        if not isinstance(matter, str) or not MATTER.match(matter):
            return error(400, "bad_matter", "请填写事项的基本编码", "give the matter's basic code")
        if not isinstance(location, str) or not REGION.match(location):
            return error(400, "bad_location", "请填写申请人所在地的行政区划代码（6、9 或 12 位）",
                          "give the applicant's GB/T 2260 location code (6, 9 or 12 digits)")
        routes = node.route(matter, [location])
        if isinstance(routes, SignedRouteRefusal):
            return no_route(routes)
        [route] = routes
        handling, code, version = route.handling, route.code, route.version
    else:
        asked = payload.get("handling")
        if not isinstance(asked, str) or not REGION.match(asked):
            return error(400, "bad_handling", "请填写办理地的行政区划代码（6、9 或 12 位）",
                          "give the handling region's GB/T 2260 code (6, 9 or 12 digits)")
        if not node.router.reaches(asked):
            return error(400, "unknown_region", "办理地不是本节点的通办伙伴",
                          "the handling region is not a partner of this node")
        handling = asked
    now = node.clock()
    window_no = node.window_no(now)
    application = node.catalog.sample_application(handling, now, window_no, code, version)
    objects = payload.get("materials", [])
    if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
        return error(400, "bad_materials", "materials 应为材料编号（文字）的列表",
                      "materials must be a list of material object ids (strings)")
    if objects:
        rows = [node.store.material(o) for o in objects]
        if any(row is None or row["state"] != "local" or row["case_id"] for row in rows):
            return error(400, "unknown_material", "材料不存在或已用于其他办件",
                          "a material does not exist or belongs to another case")
        fields = application.model_dump()
        fields["materials"] = (*application.materials, *(material_ref(r) for r in rows if r))
        application = b.Application.model_validate(fields)
    result = await node.command(Command(None, "collect", application, peer=handling))
    if result.outcome != "applied" or result.case_id is None:
        return error(422, result.reason.code if result.reason else "refused",
                      "收件失败", result.detail or "collect refused")
    sent = await node.command(Command(result.case_id, "submit"))
    receipt = result.step.receipt if result.step else None
    return web.json_response({
        "case_id": result.case_id, "window_no": window_no, "handling": handling,
        "matter": application.matter.code, "state": sent.step.new_state if sent.step else None,
        "receipt": _receipt_json(receipt) if receipt else None}, status=201)


async def get_case(request: web.Request) -> web.Response:
    node = request.app[NODE]
    case_id = request.match_info["case_id"]
    row = node.store.case_row(case_id)
    if row is None:
        return error(404, "no_case", "没有这个办件", f"no case {case_id}")
    receipts = [_receipt_json(receipt_from_fields(decode(raw)))
                for raw in node.store.receipts(case_id)]
    return web.json_response({**row, "state_zh": STATE_NAMES_ZH.get(row["state"], row["state"]),
                              "receipts": receipts})


async def get_bundle(request: web.Request) -> web.Response:
    node = request.app[NODE]
    case_id = request.match_info["case_id"]
    if node.store.case_row(case_id) is None:
        return error(404, "no_case", "没有这个办件", f"no case {case_id}")
    data = bundle_for(node.store, node.registry, node.region, case_id, node.clock())
    return web.Response(body=data, content_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{case_id}.tbb"'})


async def retry_forward(request: web.Request) -> web.Response:
    """Operator: forward a dead-lettered case again (运维人员手动重试)."""
    node = request.app[NODE]
    case_id = request.match_info["case_id"]
    result = await node.command(Command(case_id, "operator_retry"))
    if result.outcome != "applied":
        return error(409, result.reason.code if result.reason else "refused",
                      "该办件当前不能重试流转", result.detail or "the case cannot be retried now")
    return web.json_response({"case_id": case_id, "state": result.step.new_state
                              if result.step else None})


async def upload_material(request: web.Request) -> web.Response:
    """Stream a scan in; it is encrypted on arrival. ``?name=`` names it (材料名称)."""
    node = request.app[NODE]
    name = request.query.get("name", "").strip()
    if not 1 <= len(name) <= 200:
        return error(400, "bad_name", "请填写材料名称（1 至 200 字）",
                      "give the material's name (1 to 200 characters) as ?name=")
    media_type = request.content_type or "application/octet-stream"
    if media_type not in ALLOWED_MEDIA:
        return error(415, "bad_media_type", "只接受 PDF、JPEG、PNG 或 OFD 文件",
                      "only PDF, JPEG, PNG or OFD files are accepted")
    try:
        row = await node.materials.intake(request.content.iter_chunked(1 << 16), name, media_type)
    except MaterialTooLarge:
        return error(413, "too_large", "文件超过大小上限", "the file exceeds the size limit")
    await node.store.commit(Changes(materials=[{**row, "at": node.clock()}]))
    return web.json_response({"object": row["object"], "name": name, "media_type": media_type,
                              "size": row["size"], "sha256": row["sha256"].hex()}, status=201)


async def download_material(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    row = node.store.material(request.match_info["object"])
    if row is None:
        return error(404, "no_material", "没有这个材料", "no such material")
    if row["state"] == "to_fetch":
        return error(409, "not_yet", "材料尚未从收件地传到，请稍后再试",
                      "the material has not arrived from the collecting region yet; try again")
    response = web.StreamResponse(headers={"Content-Type": row["media_type"]})
    response.content_length = row["size"]
    await response.prepare(request)
    async for chunk in node.materials.plaintext(row):
        await response.write(chunk)
    await response.write_eof()
    return response


ALLOWED_MEDIA = {"application/pdf", "image/jpeg", "image/png", "application/ofd"}


def _receipt_json(receipt: Receipt) -> dict[str, Any]:
    return {"case": receipt.case, "actor": receipt.actor, "index": receipt.index,
            "kind": receipt.kind, "at": receipt.at, "key": receipt.key,
            "digest": receipt.digest.hex(), "data": receipt.data}


def make_app(node: Node) -> web.Application:
    app = web.Application(client_max_size=node.config.limits.max_message_bytes,
                          middlewares=[json_errors])
    app[NODE] = node
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/cases", list_cases)
    app.router.add_post("/api/cases", create_case)
    app.router.add_get("/api/cases/{case_id}", get_case)
    app.router.add_get("/api/cases/{case_id}/bundle", get_bundle)
    app.router.add_post("/api/cases/{case_id}/retry", retry_forward)
    app.router.add_post("/api/materials", upload_material)
    app.router.add_get("/api/materials/{object}", download_material)
    add_catalog_routes(app, NODE)
    add_joint_routes(app, NODE)
    add_circle_routes(app, NODE)
    add_metrics_route(app, NODE)  # GET /metrics (Prometheus); access: node.web.auth
    add_web_routes(app, NODE)
    return app
