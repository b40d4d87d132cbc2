"""The JSON API's one error shape: ``{"error": code, "zh": ..., "en": ...}`` with a 4xx status."""

from __future__ import annotations

import base64
import re
from typing import Any

from aiohttp import web

from protocol.fields import MATTER_PATTERN, REGION_PATTERN
from protocol.routes import SignedRouteRefusal

__all__ = ["MATTER", "REGION", "error", "json_object", "no_route"]

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
