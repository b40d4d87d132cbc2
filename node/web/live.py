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

__all__ = [
    "ERRORS_SUMMARY",
    "Live",
    "OpenSockets",
    "attach",
    "file_size",
    "foreign",
    "push",
    "region_name",
    "serve_socket",
    "watching",
]

#: The summary above a form that was refused, field by field.
ERRORS_SUMMARY = "有 {n} 处需要修改，已在对应位置标出。请逐项修改后再点“{button}”。"


class OpenSockets:
    """The open web sockets of some pages, closed when the app shuts down (``closing``)."""

    def __init__(self) -> None:
        self.sockets: set[web.WebSocketResponse] = set()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} sockets={len(self.sockets)}>"

    def closing(self, app: web.Application) -> None:
        async def close(app: web.Application) -> None:
            await self.close_all()

        app.on_shutdown.append(close)

    async def close_all(self) -> None:
        for ws in list(self.sockets):
            await ws.close(code=1001, message="节点正在停止".encode())


class Live(OpenSockets):
    """Which sockets follow which case; woken by the node's observer."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: dict[str, set[asyncio.Event]] = {}

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

    app.cleanup_ctx.append(lifetime)
    live.closing(app)


async def push(request: web.Request, live: Live, case_ids: tuple[str, ...],
               snapshot: Callable[[], dict[str, Any] | None]) -> web.StreamResponse:
    """A web socket sent ``snapshot()`` now and whenever it changes after one of
    ``case_ids`` moved; the page says nothing. Another site's page is refused."""
    last: list[dict[str, Any] | None] = [None]

    def follow(woken: asyncio.Event) -> Callable[[], None]:
        for case_id in case_ids:
            live.follow(case_id, woken)

        def leave() -> None:
            for case_id in case_ids:
                live.leave(case_id, woken)

        return leave

    def changed() -> dict[str, Any] | None:
        state = snapshot()
        if state is None or state == last[0]:
            return None
        last[0] = state
        return state

    return await serve_socket(request, live, follow, changed)


def foreign(request: web.Request) -> bool:
    """Whether a socket is opened by another site's page (its ``Origin``)."""
    origin = request.headers.get("Origin")
    return origin is not None and urlsplit(origin).netloc != request.host


def watching(*listeners: set[asyncio.Event]) -> Callable[[asyncio.Event], Callable[[], None]]:
    """For ``serve_socket``: wake the socket whenever one of these sets' events is set."""

    def follow(woken: asyncio.Event) -> Callable[[], None]:
        for events in listeners:
            events.add(woken)

        def leave() -> None:
            for events in listeners:
                events.discard(woken)

        return leave

    return follow


async def serve_socket(request: web.Request, sockets: OpenSockets,
                       follow: Callable[[asyncio.Event], Callable[[], None]],
                       message: Callable[[], dict[str, Any] | None]) -> web.StreamResponse:
    """A web socket of a live page: sent ``message()`` now and each time the event that
    ``follow`` registered (it returns the undo) is set; ``None`` sends nothing. The page
    says nothing; another site's page is refused."""
    if foreign(request):
        return web.json_response({"error": "不接受来自其他网站的连接。"}, status=403)
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    woken = asyncio.Event()
    leave = follow(woken)
    sockets.sockets.add(ws)
    receiving = asyncio.ensure_future(ws.receive())
    waking: asyncio.Future[Any] | None = None
    try:
        while not ws.closed:
            news = message()
            if news is not None:
                await ws.send_str(json.dumps(news, ensure_ascii=False))
            waking = asyncio.ensure_future(woken.wait())
            await asyncio.wait({receiving, waking}, return_when=asyncio.FIRST_COMPLETED)
            if receiving.done():
                if receiving.result().type in (WSMsgType.CLOSE, WSMsgType.CLOSING,
                                               WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                receiving = asyncio.ensure_future(ws.receive())  # the page says nothing
            woken.clear()
    finally:
        for task in (receiving, waking):
            if task is not None and not task.done():
                task.cancel()
        leave()
        sockets.sockets.discard(ws)
        await ws.close()
    return ws


def region_name(code: str) -> str:
    return official_name(code) or code


def file_size(size: int) -> str:
    if size >= 1 << 20:
        return f"{size / (1 << 20):.1f} MB"
    return f"{max(1, size // 1024)} KB"
