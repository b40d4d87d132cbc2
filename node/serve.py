"""Run one node with its web API, and the embedded nats-server when none is configured."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from config.models import NodeConfig
from node.api import make_app
from node.app import Node
from node.natsd import EmbeddedNats

__all__ = ["serve", "stop_on_signals"]

log = logging.getLogger("tongban.serve")


async def serve(config: NodeConfig, stop: asyncio.Event, *, urls: list[str] | None = None,
                on_ready: Callable[[Node, str], Awaitable[None]] | None = None,
                **node_options: Any) -> None:
    """Run until ``stop`` is set; the embedded server and the web site stop with it."""
    async with contextlib.AsyncExitStack() as stack:
        urls = urls or list(config.nats.urls)
        if not urls:
            embedded = EmbeddedNats(config.data_dir / "nats")
            urls = [await embedded.start()]
            stack.push_async_callback(embedded.stop)
        node = Node(config, urls=urls, **node_options)
        runner = web.AppRunner(make_app(node), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, config.http.host, config.http.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else config.http.port
        address = f"http://{config.http.host}:{port}"
        running = asyncio.create_task(node.run(stop))
        ready = asyncio.create_task(node.ready.wait())
        await asyncio.wait([running, ready], return_when=asyncio.FIRST_COMPLETED)
        if ready.done() and on_ready is not None:
            await on_ready(node, address)
        ready.cancel()
        await running


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
