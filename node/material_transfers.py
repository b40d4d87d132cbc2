"""Scans on the move: into partners' object stores, out of ours, and swept when unused.

``MaterialTransfers.move`` puts every scan waiting to be sent (``to_send``) into the
recipient's object store and fetches every scan sent to us (``to_fetch``), checking
it against its reference (``MaterialShelf.check``) before it counts as fetched; the
node wakes it (``wake``) when a step leaves new ones. ``sweep`` deletes scans that
were uploaded but never used in an application. Both run until cancelled, as tasks
of the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from node.materials import MaterialShelf
from node.store import Changes, Store
from node.transport import Transport
from protocol import ProtocolError

__all__ = ["MaterialTransfers"]

log = logging.getLogger("tongban.materials")


class MaterialTransfers:
    def __init__(self, store: Store, shelf: MaterialShelf, transport: Transport,
                 clock: Callable[[], int], unused_days: float) -> None:
        self.store = store
        self.shelf = shelf
        self.transport = transport
        self.clock = clock
        self.unused_days = unused_days
        #: Set when a step left scans to send or to fetch.
        self.wake = asyncio.Event()

    def __repr__(self) -> str:
        return f"<MaterialTransfers {self.shelf!r}>"

    async def sweep(self) -> None:
        """Scans uploaded but never used in an application go after
        ``limits.unused_material_days``: the row first, then the file (a crash between
        leaves an unreferenced file, never a row without its file)."""
        age_ms = int(self.unused_days * 86_400_000)
        while True:
            unused = self.store.unused_materials(self.clock() - age_ms)
            if unused:
                await self.store.commit(Changes(materials_forget=unused))
                for obj in unused:
                    if self.store.material(obj) is None:
                        self.shelf.path(obj).unlink(missing_ok=True)
                log.info("%d unused scans deleted", len(unused))
            await asyncio.sleep(3600 if len(unused) < 1000 else 1)

    async def move(self) -> None:
        """Put materials into partners' object stores; fetch those sent to us.

        A transfer that fails is tried again later, each time waiting twice as long
        (up to ten minutes): a partner that is away is not polled every second."""
        retry_at: dict[str, tuple[float, float]] = {}  # object -> (next try, wait)

        def later(obj: str) -> None:
            wait = min(600.0, retry_at.get(obj, (0.0, 0.5))[1] * 2)
            retry_at[obj] = (time.monotonic() + wait, wait)

        while True:
            moved = []
            now = time.monotonic()
            for row in self.store.materials_in("to_send"):
                if retry_at.get(row["object"], (0.0, 0.0))[0] > now:
                    continue
                try:
                    await self.transport.put_material(row["peer"], row["object"],
                                                      self.shelf.path(row["object"]))
                except (ConnectionError, OSError) as exc:
                    log.warning("material %s not sent yet: %s", row["object"], exc)
                    later(row["object"])
                    continue
                retry_at.pop(row["object"], None)
                moved.append({"object": row["object"], "state": "sent", "at": self.clock()})
            for row in self.store.materials_in("to_fetch"):
                if retry_at.get(row["object"], (0.0, 0.0))[0] > now:
                    continue
                try:
                    await self.transport.get_material(row["object"],
                                                      self.shelf.path(row["object"]))
                    await self.shelf.check(row)
                except FileNotFoundError:
                    later(row["object"])  # not uploaded yet: the sender's relay is on its way
                    continue
                except (ConnectionError, OSError, ProtocolError) as exc:
                    log.warning("material %s not fetched: %s", row["object"], exc)
                    self.shelf.path(row["object"]).unlink(missing_ok=True)
                    later(row["object"])
                    continue
                retry_at.pop(row["object"], None)
                moved.append({"object": row["object"], "state": "fetched", "at": self.clock()})
            if moved:
                await self.store.commit(Changes(materials=moved))
            pending = self.store.materials_in("to_send", 1) or self.store.materials_in("to_fetch", 1)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 1.0 if pending else 30.0)
