"""Running the node's event loop: uvloop where installed (it is a dependency on Linux).

uvloop makes NATS and socket work about a third cheaper on this kind of machine
(../shared/reference/nats-notes.md §0); the code does not depend on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
