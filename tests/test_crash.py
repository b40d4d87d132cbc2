"""Crash safety with real processes: nothing is lost, nothing happens twice.

Each scenario floods a collecting node (410100) with applications for a handling
node (370100, automatic first review, its desk decides at once), breaks something
in the middle with SIGKILL, and then checks at the collecting node that every
application has exactly one outcome, that no receipt kind appears twice where
it may appear once, and that every case's evidence bundle verifies.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

from tests.cluster import Cluster, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

C, H = "410100", "370100"
AUTO_DESK = [{"kind": "desk", "name": "办理窗口", "auto_conclude": True}]


async def _pair(cluster: Cluster, departments: list[dict[str, object]] = AUTO_DESK,
                **handling: object) -> None:
    cluster.configure(C, [H])
    cluster.configure(H, [C], auto_review=True, departments=departments, **handling)
    await cluster.start(C)
    await cluster.start(H)


async def _flood(cluster: Cluster, count: int, rate: float) -> list[str]:
    cases = []
    for _ in range(count):
        cases.append(await cluster.submit(C, H))
        await asyncio.sleep(1 / rate)
    return cases


async def _check_exactly_once(cluster: Cluster, cases: list[str], final: str = "outcome_received",
                              timeout: float = 120) -> None:
    await cluster.wait_for(C, final, len(cases), timeout)
    handling_states = await cluster.states(H)
    assert sum(handling_states.values()) == len(cases), handling_states
    for case_id in cases:
        kinds = Counter(await cluster.receipt_kinds(C, case_id))
        for once in ((C, "collected"), (C, "submitted"), (H, "received"), (H, "accepted"),
                     (H, "forwarded"), (H, "concluded"), (C, "outcome_received")):
            if final == "outcome_received" or once[1] not in ("concluded", "outcome_received"):
                assert kinds[once] == 1, (case_id, once, kinds)
        await cluster.verify(C, case_id)
    for case_id in cases[:: max(1, len(cases) // 10)]:
        await cluster.verify(H, case_id)


async def test_handling_node_killed_mid_flood(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        await _pair(cluster)
        flood = asyncio.create_task(_flood(cluster, 150, rate=60))
        await asyncio.sleep(1.0)
        await cluster.kill(H)  # kill -9 while messages are in flight and half-processed
        await asyncio.sleep(1.0)
        await cluster.start(H)
        cases = await flood
        await _check_exactly_once(cluster, cases)


async def test_nats_server_killed_mid_flood(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        await _pair(cluster)
        flood = asyncio.create_task(_flood(cluster, 150, rate=60))
        await asyncio.sleep(1.0)
        cluster.nats.kill()
        await asyncio.sleep(1.5)
        await cluster.nats.start()  # same port, same store directory
        cases = await flood
        await _check_exactly_once(cluster, cases)


async def test_handling_node_offline_then_back(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        await _pair(cluster)
        await cluster.stop(H)
        cases = await _flood(cluster, 80, rate=200)  # store-and-forward in JetStream
        await asyncio.sleep(1.0)
        assert (await cluster.states(C)).get("sent") == 80
        await cluster.start(H)
        await _check_exactly_once(cluster, cases)


class _Department:
    """A department's own system: fails ``failures`` times, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()

    async def intake(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        self.calls[key] += 1
        if self.calls[key] <= self.failures:
            if self.calls[key] % 2:
                return web.Response(status=500)
            await asyncio.sleep(1.0)  # longer than the adapter's timeout
            return web.Response(status=503)
        self.accepted[key] += 1
        return web.json_response({"ok": True})


async def _department_server(department: _Department) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/intake", department.intake)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


RETRY = {"attempts": 4, "initial_s": 0.05, "max_s": 0.2, "jitter_s": 0.05, "deadline_s": 30.0,
         "timeout_s": 0.5}


@pytest.mark.parametrize("failures", [3, 100], ids=["recovers", "never-recovers"])
async def test_department_webhook_failing(tmp_path: Path, failures: int) -> None:
    department = _Department(failures)
    runner, port = await _department_server(department)
    try:
        async with Cluster(tmp_path) as cluster:
            webhook = [{"kind": "webhook", "name": "部门系统", "url": f"http://127.0.0.1:{port}/intake"}]
            await _pair(cluster, webhook, retry=RETRY)
            cases = await _flood(cluster, 20, rate=100)
            if failures < RETRY["attempts"]:
                await cluster.wait_for(C, "processing", len(cases), 60)
                assert all(department.accepted[c] == 1 for c in cases), department.accepted
                for case_id in cases:
                    kinds = Counter(await cluster.receipt_kinds(H, case_id))
                    assert kinds[(H, "forwarded")] == 1
                    await cluster.verify(H, case_id)
            else:
                await cluster.wait_for(H, "dead_letter", len(cases), 60)
                assert all(department.calls[c] == RETRY["attempts"] for c in cases)
                # The operator retries one dead letter after the department recovered.
                department.failures = 0
                await cluster.post(H, f"/api/cases/{cases[0]}/retry", {})
                await cluster.wait_for(H, "processing", 1, 30)
                assert department.accepted[cases[0]] == 1
                await cluster.verify(H, cases[0])
    finally:
        await runner.cleanup()


async def test_a_node_stops_promptly_with_work_in_flight(tmp_path: Path) -> None:
    """SIGTERM while forwards are retrying: every task stops, the process exits cleanly."""
    department = _Department(failures=10**6)  # fails every time, half of them slowly
    runner, port = await _department_server(department)
    try:
        async with Cluster(tmp_path) as cluster:
            webhook = [{"kind": "webhook", "name": "部门系统", "url": f"http://127.0.0.1:{port}/intake"}]
            await _pair(cluster, webhook, retry={**RETRY, "attempts": 50, "deadline_s": 600.0})
            await _flood(cluster, 20, rate=100)
            await cluster.wait_for(H, "forwarding", 20, 30)
            process = cluster.processes[H]
            started = asyncio.get_running_loop().time()
            await cluster.stop(H)
            assert asyncio.get_running_loop().time() - started < 5
            assert process.returncode == 0  # stopped by itself, not killed
    finally:
        await runner.cleanup()


async def test_reviews_pending_at_a_restart_are_done_after_it(tmp_path: Path) -> None:
    """A case left in 'received' (its automatic review was only queued in memory when
    the node died) is reviewed when the node starts again."""
    async with Cluster(tmp_path) as cluster:
        cluster.configure(C, [H])
        cluster.configure(H, [C], auto_review=False, departments=AUTO_DESK)
        await cluster.start(C)
        await cluster.start(H)
        cases = [await cluster.submit(C, H) for _ in range(5)]
        await cluster.wait_for(H, "received", 5, 30)
        await cluster.kill(H)
        cluster.configure(H, [C], auto_review=True, departments=AUTO_DESK)
        await cluster.start(H)
        await _check_exactly_once(cluster, cases, timeout=60)
