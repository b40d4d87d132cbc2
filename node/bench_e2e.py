"""``tongban bench e2e``: applications per second end to end, and what NATS alone does.

Set-up on this machine: one nats-server; the handling node (370100) as its own
process (``tongban node``, automatic first review, a department desk that decides
at once); the collecting node (410100) in this process, where the load is made.
Every application is collected, submitted, signed for, accepted, forwarded,
concluded, and its outcome acknowledged with a signed receipt: full signing,
encryption and durable (fsync'd) commits on both sides.

Figures (JSON):

* ``apps_per_s``: sustained rate, submit → outcome acknowledged, with up to
  ``window`` applications in flight, measured after a warm-up;
* ``p50_ms`` / ``p99_ms``: latency of each application at half that rate (open loop);
* ``rss_mb``: resident memory of each node at the end (and, with ``--soak``, every
  ``soak/10`` seconds at half load: the soak shows whether memory stays flat);
* ``metrics_scrape_ms``: building ``GET /metrics`` of the collecting node with all the
  run's cases on disk (its gauges read the store at every scrape);
* ``raw_floor_per_s``: the same number and size of JetStream messages per
  application (6), published, consumed and acked by plain nats-py with no
  protocol, in the same run; ``ratio`` = apps_per_s / raw_floor_per_s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config import parse_config
from node import loop
from node.app import Node
from node.children import die_with_parent
from node.engine import Command, Result
from node.natsd import EmbeddedNats
from protocol import examples as ex
from protocol.wire import decode_envelope
from receipts import NodeKeys

__all__ = ["run"]

C, H = ex.COLLECTING, ex.HANDLING

#: ``progress(phase, fraction done)``: what the CLI draws its progress bar from.
Progress = Callable[[str, float], None]


def _rss_mb(pid: int | None = None) -> float:
    """Resident memory now (VmRSS) of a process, this one by default."""
    with open(f"/proc/{pid or os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class _Load:
    """Submits applications at the collecting node and times each one."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.started: dict[str, float] = {}
        self.latencies: list[float] = []
        self.done = 0
        self.submitting = 0
        self.changed = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()  # held: unreferenced tasks may be collected
        node.observers.append(self._observe)

    def _observe(self, result: Result) -> None:
        step = result.step
        if step is not None and step.new_state == "outcome_received" and result.case_id:
            start = self.started.pop(result.case_id, None)
            if start is not None:
                self.latencies.append(time.perf_counter() - start)
                self.done += 1
                self.changed.set()

    def _spawn(self, index: int) -> None:
        task = asyncio.get_running_loop().create_task(self.submit(index))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def submit(self, index: int) -> None:
        now = self.node.clock()
        start = time.perf_counter()
        self.submitting += 1
        try:
            collected = await self.node.command(Command(
                None, "collect", ex.application(now, window_no=f"B-{index:09d}", scans=False), peer=H))
            assert collected.case_id is not None
            self.started[collected.case_id] = start
            await self.node.command(Command(collected.case_id, "submit"))
        finally:
            self.submitting -= 1

    async def closed_loop(self, seconds: float, window: int) -> float:
        """Keep ``window`` applications in flight for ``seconds``; return completions/s."""
        index = 0
        first_done, t0 = self.done, time.perf_counter()
        deadline = t0 + seconds
        while time.perf_counter() < deadline:
            while len(self.started) + self.submitting < window:
                index += 1
                self._spawn(index)
                await asyncio.sleep(0)
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1.0)
        return (self.done - first_done) / (time.perf_counter() - t0)

    async def drain(self, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while (self.started or self.submitting) and time.perf_counter() < deadline:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 0.05)
        if self.started:
            raise RuntimeError(f"{len(self.started)} applications did not finish in {timeout:g} s: "
                               f"{self.node.store.count_states()}")

    async def open_loop(self, rate: float, seconds: float) -> list[float]:
        """Arrivals at ``rate``/s for ``seconds``; latencies of those applications."""
        self.latencies = []
        t0 = time.perf_counter()
        index = 10**8
        sent = 0
        while (elapsed := time.perf_counter() - t0) < seconds:
            due = int(elapsed * rate) - sent
            for _ in range(due):
                index += 1
                self._spawn(index)
            sent += due
            await asyncio.sleep(0.002)
        await self.drain(60.0)
        return list(self.latencies)


async def _raw_floor(url: str, sizes: list[tuple[str, int]], apps: int) -> float:
    """Applications/s if each were only its 6 JetStream messages, with no protocol."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=2000)
    for region in (C, H):
        with contextlib.suppress(Exception):
            await js.delete_stream(f"RAW_{region}")
        await js.add_stream(StreamConfig(name=f"RAW_{region}", subjects=[f"raw.{region}.>"],
                                         duplicate_window=120.0))
        await js.add_consumer(f"RAW_{region}", ConsumerConfig(durable_name="raw",
                                                              ack_policy=AckPolicy.EXPLICIT))
    subs = {r: await js.pull_subscribe_bind("raw", stream=f"RAW_{r}") for r in (C, H)}
    payloads = [(to, os.urandom(size)) for to, size in sizes]
    total = apps * len(payloads)

    async def consume(region: str, expected: int) -> None:
        got = 0
        while got < expected:
            with contextlib.suppress(nats.errors.TimeoutError):
                messages = await subs[region].fetch(500, timeout=1)
                await asyncio.gather(*(m.ack() for m in messages))
                got += len(messages)

    per_region = {r: apps * sum(1 for to, _ in payloads if to == r) for r in (C, H)}
    start = time.perf_counter()
    consumers = [asyncio.create_task(consume(r, n)) for r, n in per_region.items()]
    futures = []
    for i in range(apps):
        for j, (to, data) in enumerate(payloads):
            futures.append(await js.publish_async(
                f"raw.{to}.m", data, headers={"Nats-Msg-Id": f"raw-{i}-{j}"}))
        if len(futures) >= 1000:
            await asyncio.gather(*futures)
            futures = []
    await asyncio.gather(*futures)
    await asyncio.gather(*consumers)
    elapsed = time.perf_counter() - start
    await nc.close()
    return total / elapsed / len(payloads)


class _Phases:
    """Tells ``progress(phase, fraction)`` where the run is, twice a second."""

    def __init__(self, progress: Progress | None, planned_s: float) -> None:
        self.progress = progress
        self.planned_s = planned_s
        self.phase = "starting"
        self.started = time.perf_counter()

    async def report(self) -> None:
        while self.progress is not None:
            elapsed = time.perf_counter() - self.started
            self.progress(self.phase, min(0.99, elapsed / self.planned_s))
            await asyncio.sleep(0.5)


async def _run(seconds: float, window: int, soak: float, base: Path,
               phases: _Phases) -> dict[str, Any]:
    for region in (C, H):
        NodeKeys.generate(region).save(base / region / "keys", valid_from=0)
    async with EmbeddedNats(base / "nats") as server:
        handling_config = base / "handling.toml"
        handling_config.write_text(
            f'region = "{H}"\nname = "济南市"\ndata_dir = "{base / H}"\nauto_review = true\n'
            f'[http]\nport = 0\n[nats]\nurls = ["{server.url}"]\n'
            f'[[departments]]\nkind = "desk"\nname = "自动办理"\nauto_conclude = true\n'
            f'[[peers]]\nregion = "{C}"\nname = "郑州市"\npublic = "{base / C / "keys" / "public.json"}"\n',
            encoding="utf-8")
        handling = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "node.cli", "node", "--config", str(handling_config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent)
        try:
            config = parse_config({
                "region": C, "name": "郑州市", "data_dir": str(base / C),
                "peers": [{"region": H, "name": "济南市",
                           "public": str(base / H / "keys" / "public.json")}]}, base=base, environ={})
            stop = asyncio.Event()
            node = Node(config, urls=[server.url])
            running = asyncio.create_task(node.run(stop))
            await node.ready.wait()
            load = _Load(node)
            phases.phase = "warm-up"
            await load.closed_loop(min(5.0, seconds / 3), window)
            phases.phase = "full load"
            apps_per_s = await load.closed_loop(seconds, window)
            await load.drain(60.0)
            phases.phase = "half load"
            latencies = await load.open_loop(apps_per_s / 2, seconds)
            soak_rss: list[dict[str, float]] = []
            if soak:
                phases.phase = "soak"
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < soak:
                    await load.open_loop(apps_per_s / 2, soak / 10)
                    soak_rss.append({C: _rss_mb(), H: _rss_mb(handling.pid)})
            rss = {C: _rss_mb(), H: _rss_mb(handling.pid)}
            sizes = _message_sizes(node)
            scrape_ms = _scrape_ms(node)
            stop.set()
            await running
        finally:
            handling.terminate()
            try:
                await asyncio.wait_for(handling.wait(), 15.0)
            except TimeoutError:
                handling.kill()
                await handling.wait()
        phases.phase = "raw NATS floor"
        raw = await _raw_floor(server.url, sizes, apps=5000)
    latencies.sort()
    result: dict[str, Any] = {
        "apps_per_s": round(apps_per_s, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1) if latencies else None,
        "latency_load_per_s": round(apps_per_s / 2, 1),
        "latency_samples": len(latencies),
        "rss_mb": rss,
        "raw_floor_per_s": round(raw, 1),
        "ratio": round(apps_per_s / raw, 3),
        "messages_per_app": len(sizes),
        "message_bytes": [size for _, size in sizes],
        "window": window,
        "seconds": seconds,
        "metrics_scrape_ms": scrape_ms,
    }
    if soak:
        result["soak_s"] = soak
        result["soak_rss_mb"] = soak_rss
    return result


def _scrape_ms(node: Node) -> dict[str, float]:
    """How long ``GET /metrics`` takes to build with the cases of the run on disk
    (median of 5), and how many cases that is."""
    from prometheus_client.exposition import generate_latest

    timings = []
    for _ in range(5):
        start = time.perf_counter()
        generate_latest(node.metrics.registry)
        timings.append(time.perf_counter() - start)
    return {"median": round(statistics.median(timings) * 1000, 2),
            "cases": sum(node.store.count_states().values())}


def _message_sizes(node: Node) -> list[tuple[str, int]]:
    """The recipients and sizes of one application's messages, from a finished case."""
    rows = node.store.cases(state="outcome_received", limit=1)
    if not rows:
        return [(H, 4000), (C, 1500), (C, 1500), (C, 1500), (C, 1500), (H, 1500)]
    case_id = rows[0]["case_id"]
    sizes = []
    for wire, _, _ in node.store.envelopes(case_id):
        envelope = decode_envelope(wire)
        sizes.append((envelope.recipient, len(wire)))
    return sizes


def run(seconds: float = 20.0, window: int = 2000, soak: float = 0.0,
        progress: Progress | None = None) -> dict[str, Any]:
    """The figures; ``progress(phase, fraction done)`` is told twice a second."""
    phases = _Phases(progress, planned_s=min(5.0, seconds / 3) + 2 * seconds + soak + 8)

    async def measured() -> dict[str, Any]:
        reporter = asyncio.create_task(phases.report())
        try:
            return await _run(seconds, window, soak, Path(base), phases)
        finally:
            reporter.cancel()
            if progress is not None:
                progress("done", 1.0)

    with tempfile.TemporaryDirectory(prefix="tongban-bench-") as base:
        return loop.run(measured())
