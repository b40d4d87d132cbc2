"""In-process nodes for tests: one with its web API, and waiting for a condition."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

from node.app import Node
from node.serve import serve

__all__ = ["serving", "stopped", "until"]


@contextlib.asynccontextmanager
async def serving(url: str, config: Any, **node_options: Any) -> AsyncIterator[Node]:
    """``node.address`` is where its API listens; a start-up error is raised here.
    ``node_options`` go to ``Node`` (e.g. ``clock``)."""
    stop = asyncio.Event()
    started: asyncio.Future[Node] = asyncio.get_running_loop().create_future()

    async def ready(node: Node, address: str) -> None:
        node.address = address  # type: ignore[attr-defined]
        started.set_result(node)

    task = asyncio.create_task(serve(config, stop, urls=[url], on_ready=ready, **node_options))
    await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        await task
    try:
        yield started.result()
    finally:
        stop.set()
        await stopped(task)


async def stopped(running: Any, timeout: float = 30.0) -> None:
    """Await what is stopping; after ``timeout``, print every task that is stuck and fail,
    instead of hanging the suite."""
    try:
        await asyncio.wait_for(asyncio.shield(running), timeout)
    except TimeoutError:
        for stuck in asyncio.all_tasks():
            stuck.print_stack(file=sys.stderr)
        raise


async def until(condition: Any, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
