"""``tongban bench video``: what the virtual window's signaling costs.

Two nodes in this process on one embedded nats-server, a session opened by the
window (郑州) and taken by the reviewer (济南); then the caller's browser "says"
ICE candidates as fast as the page would hand them in, and the callee's socket
receives them. Figures (JSON):

* ``seal_open_us``: signing one signal and checking it (canonical bytes, Ed25519
  sign, decode, registry lookup, verify), in one process;
* ``hop_ms`` p50 / p99: browser socket in at one node → browser socket out at the
  other (sign, NATS, check, pass on), one signal at a time;
* ``signals_per_s``: the same, many in flight;
* ``setup_ms``: open (invite) → the callee's row exists, and join → the caller's
  row is active.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config import parse_config
from node import loop
from node.app import Node
from node.natsd import EmbeddedNats
from protocol.rtc import Signal
from receipts import KeyRegistry, NodeKeys
from receipts.rtc import open_signal, seal_signal

__all__ = ["run"]

C, H = "410100", "370100"
CANDIDATE = {"candidate": "candidate:3165865479 1 udp 2122194687 127.0.0.1 53349 typ host "
                          "generation 0 ufrag tEuq network-id 3 network-cost 50",
             "sdpMid": "0", "sdpMLineIndex": 0}


def _seal_open_us(count: int = 2000) -> float:
    keys = NodeKeys.generate(C)
    registry = KeyRegistry()
    registry.add_node(keys, valid_from=0)
    now = int(time.time() * 1000)
    start = time.perf_counter()
    for _ in range(count):
        signal = Signal(session=f"vs-{C}-{'a' * 24}", kind="ice", sender=C, recipient=H, at=now,
                        nonce=secrets.token_bytes(16), data=b'{"gen":"x","candidate":{}}')
        open_signal(seal_signal(signal, keys.signing, keys.sign_key_id), registry, H, now)
    return (time.perf_counter() - start) / count * 1e6


async def _measure(base: Path, count: int, tell: Callable[[str, float], None]) -> dict[str, Any]:
    for region in (C, H):
        NodeKeys.generate(region).save(base / region / "keys", valid_from=0)

    def config(region: str, peer: str) -> Any:
        return parse_config({"region": region, "name": region, "data_dir": str(base / region),
                             "peers": [{"region": peer, "name": peer,
                                        "public": str(base / peer / "keys" / "public.json")}]},
                            base=base, environ={})

    async with EmbeddedNats(base / "nats") as server:
        stop = asyncio.Event()
        window, jinan = Node(config(C, H), urls=[server.url]), Node(config(H, C), urls=[server.url])
        runs = [asyncio.create_task(n.run(stop)) for n in (window, jinan)]
        try:
            await asyncio.gather(window.ready.wait(), jinan.ready.wait())
            tell("session", 0.1)
            changed = asyncio.Event()  # a session changed on either node
            window.video.changed.add(changed)
            jinan.video.changed.add(changed)

            async def until(condition: Callable[[], bool]) -> float:
                while not condition():
                    await asyncio.wait_for(changed.wait(), 5)
                    changed.clear()
                return (time.perf_counter() - start) * 1000

            start = time.perf_counter()
            session = await window.video.open(H, case_id=None, topic="bench", label="bench",
                                              by="bench")
            invite_ms = await until(lambda: jinan.video.store.get(session.id) is not None)
            start = time.perf_counter()
            await jinan.video.join(session.id, label="bench", by="bench")
            join_ms = await until(lambda: getattr(window.video.store.get(session.id), "state",
                                                  "") == "active")
            arrived: asyncio.Queue[float] = asyncio.Queue()

            async def receive(message: dict[str, Any]) -> None:
                if message.get("type") == "ice":
                    arrived.put_nowait(time.perf_counter())

            jinan.video.attach(session.id, receive)
            tell("one at a time", 0.3)
            hops = []
            for _ in range(count):
                sent = time.perf_counter()
                await window.video.from_browser(session.id, {"type": "ice", "gen": "g",
                                                             "candidate": CANDIDATE}, by="bench")
                hops.append(await asyncio.wait_for(arrived.get(), 5) - sent)
            tell("many in flight", 0.7)
            start = time.perf_counter()
            for _ in range(count * 5):
                await window.video.from_browser(session.id, {"type": "ice", "gen": "g",
                                                             "candidate": CANDIDATE}, by="bench")
            for _ in range(count * 5):
                await asyncio.wait_for(arrived.get(), 10)
            rate = count * 5 / (time.perf_counter() - start)
        finally:
            stop.set()
            await asyncio.gather(*runs, return_exceptions=True)
    hops.sort()
    return {"hop_ms": {"p50": round(statistics.median(hops) * 1000, 2),
                       "p99": round(hops[int(len(hops) * 0.99) - 1] * 1000, 2)},
            "signals_per_s": round(rate), "setup_ms": {"invite": round(invite_ms, 1),
                                                      "join": round(join_ms, 1)},
            "samples": count}


def run(count: int = 1000, progress: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    tell = progress or (lambda phase, fraction: None)
    tell("seal and open", 0.0)
    result = {"seal_open_us": round(_seal_open_us(), 1)}
    with tempfile.TemporaryDirectory(prefix="tongban-bench-video-") as base:
        result |= loop.run(_measure(Path(base), count, tell))
    tell("done", 1.0)
    return result
