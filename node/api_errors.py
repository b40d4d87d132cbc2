"""The JSON API's one error shape: ``{"error": code, "zh": ..., "en": ...}`` with a 4xx status."""

from __future__ import annotations

from aiohttp import web

__all__ = ["error"]


def error(status: int, code: str, zh: str, en: str) -> web.Response:
    return web.json_response({"error": code, "zh": zh, "en": en}, status=status)
