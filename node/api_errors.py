"""The JSON API's one error shape: ``{"error": code, "zh": ..., "en": ...}`` with a 4xx status.

``json_errors`` gives the same shape to what aiohttp answers by itself under ``/api``
(no such route, a method the route does not take, a body over the size limit), and to
a handler's unforeseen exception: a client of the API never has to parse a text page.
"""

from __future__ import annotations

import base64
import logging
import re
from typing import Any

from aiohttp import web

from protocol.fields import MATTER_PATTERN, REGION_PATTERN
from protocol.routes import SignedRouteRefusal

__all__ = ["MATTER", "REGION", "error", "json_errors", "json_object", "no_route"]

log = logging.getLogger("tongban.api")

MATTER = re.compile(MATTER_PATTERN)  # 基本编码 / 实施编码
REGION = re.compile(REGION_PATTERN)  # GB/T 2260


def error(status: int, code: str, zh: str, en: str) -> web.Response:
    return web.json_response({"error": code, "zh": zh, "en": en}, status=status)


async def json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object, or the 400 answer to send instead."""
    try:
        payload = await request.json()
    except ValueError:
        return error(400, "bad_json", "请求体不是有效的 JSON", "the request body is not JSON")
    if not isinstance(payload, dict):
        return error(400, "bad_json", "请求体应为 JSON 对象", "the request body is not a JSON object")
    return payload


def no_route(signed: SignedRouteRefusal) -> web.Response:
    """422 with the node's signed refusal: the window hands it to the applicant."""
    refusal = signed.refusal
    return web.json_response({
        "error": "no_route", "zh": refusal.zh, "en": refusal.en,
        "refusal": {**refusal.model_dump(mode="json"), "signed": base64.b64encode(
            signed.canonical_bytes).decode()}}, status=422)


#: What aiohttp raises by itself, in the API's words.
_HTTP_ERRORS = {
    404: ("no_such_route", "没有这个接口", "no such API route"),
    405: ("method_not_allowed", "该接口不支持此请求方法", "the route does not take this method"),
    413: ("too_large", "请求体超过大小上限", "the request body exceeds the size limit"),
}


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Under ``/api``, an HTTP error aiohttp raises (or a bug) is answered as JSON too."""
    if not (request.path == "/api" or request.path.startswith("/api/")):
        return await handler(request)  # type: ignore[no-any-return]
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, zh, en = _HTTP_ERRORS.get(exc.status, ("http_error", exc.reason, exc.reason))
        response = error(exc.status, code, zh, en)
        if "Allow" in exc.headers:  # 405 names the methods the route takes
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": "internal", "zh": "节点内部错误，已记录日志",
                                  "en": "internal error; it has been logged"}, status=500)
