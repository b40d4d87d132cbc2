"""多地联办 in the JSON API: open a joint case, follow its parts.

``POST /api/joints`` ``{"matter": 基本编码, "locations": [行政区划代码, ...]}`` routes
each location (routing.router.route_all), collects and submits one part per handling
region in one batch; ``GET /api/joints`` and ``GET /api/joints/{id}`` show the
joint case with each part's state and outcome (protocol.joint).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api_errors import MATTER, error, json_object, no_route
from node.app import Node
from node.joint_intake import collect_joint, joint_view, places_ok
from protocol.routes import SignedRouteRefusal

__all__ = ["add_joint_routes"]


def add_joint_routes(app: web.Application, node_key: web.AppKey[Node]) -> None:
    async def create(request: web.Request) -> web.Response:
        node = request.app[node_key]
        payload = await json_object(request)
        if isinstance(payload, web.Response):
            return payload
        matter, locations = payload.get("matter"), payload.get("locations")
        if not isinstance(matter, str) or not MATTER.match(matter):
            return error(400, "bad_matter", "请填写事项的基本编码", "give the matter's basic code")
        if not places_ok(locations):
            return error(400, "bad_locations", "多地联办需要 2 至 20 个行政区划代码（6、9 或 12 位）",
                          "a joint application needs 2 to 20 GB/T 2260 location codes")
        routes = node.route(matter, locations, mode="joint")
        if isinstance(routes, SignedRouteRefusal):
            return no_route(routes)
        now = node.clock()
        window_no = node.window_no(now)
        collected = await collect_joint(node, matter, routes, lambda r: (
            node.catalog.sample_application(r.handling, now, window_no, r.code, r.version)))
        if collected.outcome != "applied" or collected.case_id is None:
            return error(422, collected.reason.code if collected.reason else "refused",
                          "联办件收件失败", collected.detail or "collect refused")
        return web.json_response(_joint_json(node, collected.case_id), status=201)

    async def listing(request: web.Request) -> web.Response:
        node = request.app[node_key]
        return web.json_response([_joint_json(node, j["joint_id"])
                                  for j in node.store.joints(limit=100)])

    async def detail(request: web.Request) -> web.Response:
        node = request.app[node_key]
        joint_id = request.match_info["joint_id"]
        if node.store.joint(joint_id) is None:
            return error(404, "no_joint", "没有这个联办件", f"no joint case {joint_id}")
        return web.json_response(_joint_json(node, joint_id))

    app.router.add_post("/api/joints", create)
    app.router.add_get("/api/joints", listing)
    app.router.add_get("/api/joints/{joint_id}", detail)


def _joint_json(node: Node, joint_id: str) -> dict[str, Any]:
    view = joint_view(node, joint_id)
    assert view is not None
    return view
