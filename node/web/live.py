"""Live pages: web sockets that follow cases, woken when a case moves.

``Live`` keeps, per case, the events of the sockets that follow it; the node calls
``wake`` with every result once it is on disk (``Node.observers``), and each socket
then sends what changed. ``attach`` ties one hub to an app's lifetime: it starts
listening with the app, closes every socket at shutdown and stops listening after.
Shared by the window's and the desk's pages.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from node.app import Node
from node.engine import Result
from routing.regions import official_name

__all__ = ["ERRORS_SUMMARY", "Live", "attach", "file_size", "push", "region_name"]

#: The summary above a form that was refused, field by field.
ERRORS_SUMMARY = "有 {n} 处需要修改，已在对应位置标出。请逐项修改后再点“{button}”。"


class Live:
    """Which sockets follow which case; woken by the node's observer."""

    def __init__(self) -> None:
        self.waiting: dict[str, set[asyncio.Event]] = {}
        self.sockets: set[web.WebSocketResponse] = set()

    def __repr__(self) -> str:
        return f"<Live sockets={len(self.sockets)} cases={len(self.waiting)}>"

    def wake(self, result: Result) -> None:
        for event in self.waiting.get(result.case_id or "", ()):
            event.set()

    def follow(self, case_id: str, event: asyncio.Event) -> None:
        self.waiting.setdefault(case_id, set()).add(event)

    def leave(self, case_id: str, event: asyncio.Event) -> None:
        events = self.waiting.get(case_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self.waiting[case_id]

    async def close_all(self) -> None:
        for ws in list(self.sockets):
            await ws.close(code=1001, message="节点正在停止".encode())


L = TypeVar("L", bound=Live)


def attach(app: web.Application, node_key: web.AppKey[Node], key: web.AppKey[L], live: L) -> None:
    """Put ``live`` in ``app`` under ``key`` for the app's lifetime, woken by the node."""

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        node = app[node_key]
        app[key] = live
        node.observers.append(live.wake)
        try:
            yield
        finally:
            if live.wake in node.observers:
                node.observers.remove(live.wake)

    async def close_sockets(app: web.Application) -> None:
        await live.close_all()

    app.cleanup_ctx.append(lifetime)
    app.on_shutdown.append(close_sockets)


async def push(request: web.Request, live: Live, case_ids: tuple[str, ...],
               snapshot: Callable[[], dict[str, Any] | None]) -> web.StreamResponse:
    """A web socket sent ``snapshot()`` now and whenever it changes after one of
    ``case_ids`` moved; the page says nothing. Another site's page is refused."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        return web.json_response({"error": "不接受来自其他网站的连接。"}, status=403)
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    woken = asyncio.Event()
    live.sockets.add(ws)
    for case_id in case_ids:
        live.follow(case_id, woken)
    receiving = asyncio.ensure_future(ws.receive())
    waking: asyncio.Future[Any] | None = None
    last: dict[str, Any] | None = None
    try:
        while not ws.closed:
            state = snapshot()
            if state is not None and state != last:
                await ws.send_str(json.dumps(state, ensure_ascii=False))
                last = state
            waking = asyncio.ensure_future(woken.wait())
            await asyncio.wait({receiving, waking}, return_when=asyncio.FIRST_COMPLETED)
            if receiving.done():
                message = receiving.result()
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                                    WSMsgType.ERROR):
                    break
                receiving = asyncio.ensure_future(ws.receive())  # the page says nothing
            woken.clear()
    finally:
        for task in (receiving, waking):
            if task is not None and not task.done():
                task.cancel()
        for case_id in case_ids:
            live.leave(case_id, woken)
        live.sockets.discard(ws)
        await ws.close()
    return ws


def region_name(code: str) -> str:
    return official_name(code) or code


def file_size(size: int) -> str:
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f} MB"
    return f"{max(1, size // 1024)} KB"
