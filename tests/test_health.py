"""Heartbeats and alerts: partners flagged silent and healthy again, the alerts that
fire and resolve, and the webhook that hears of both."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from config import parse_config
from config.models import AlertsConfig
from node.alerts import Alerts
from node.app import Node
from node.health import PartnerState
from node.natsd import EmbeddedNats
from protocol import RemoteProtocolError
from protocol.health import Heartbeat
from receipts import KeyRegistry, NodeKeys
from receipts.rtc import open_heartbeat, seal_heartbeat
from tests.api_token import HTTP
from tests.serving import serving, until

WINDOW, JINAN = "410100", "370100"
T0 = 1_780_000_000_000


def test_a_heartbeat_opens_only_fresh_and_signed_by_its_region() -> None:
    keys, other = NodeKeys.generate(JINAN), NodeKeys.generate(WINDOW)
    registry = KeyRegistry()
    registry.add_node(keys, valid_from=0)
    registry.add_node(other, valid_from=0)
    beat = Heartbeat(region=JINAN, at=T0, nonce=secrets.token_bytes(16), started_at=T0 - 5,
                     interval_s=10, outbox=3)
    assert open_heartbeat(seal_heartbeat(beat, keys.signing, keys.sign_key_id), registry,
                          T0 + 1000).outbox == 3
    with pytest.raises(RemoteProtocolError, match="not fresh"):
        open_heartbeat(seal_heartbeat(beat, keys.signing, keys.sign_key_id), registry, T0 + 61_000)
    with pytest.raises(RemoteProtocolError, match="unknown_key"):  # another region's key
        open_heartbeat(seal_heartbeat(beat, other.signing, other.sign_key_id), registry, T0)


class Webhook:
    """A webhook receiver on a loopback port: what it was sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Webhook:
        async def take(request: web.Request) -> web.Response:
            assert request.headers.get("Authorization") == "Bearer hook-secret"
            self.received.append(await request.json())
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", take)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    def events(self, kind: str) -> list[str]:
        return [r["event"] for r in self.received if r["alert"]["kind"] == kind]


def _config(base: Path, region: str, peer: str, **extra: Any) -> Any:
    return parse_config({
        "region": region, "name": {WINDOW: "郑州市", JINAN: "济南市"}[region],
        "data_dir": str(base / region), "http": HTTP,
        "health": {"heartbeat_seconds": 1, "silent_after_seconds": 3},
        "peers": [{"region": peer, "name": peer, "public": str(base / peer / "keys" / "public.json")}],
        **extra}, base=base, environ={})


def _state(node: Node, region: str) -> PartnerState:
    [state] = [p for p in node.health.partners() if p.region == region]
    return state


async def test_a_stopped_partner_turns_silent_then_healthy_and_the_webhook_hears(
        tmp_path: Path) -> None:
    (tmp_path / "hook-token").write_text("hook-secret\n")
    for region in (WINDOW, JINAN):
        NodeKeys.generate(region).save(tmp_path / region / "keys", valid_from=0)
    async with Webhook() as hook, EmbeddedNats(tmp_path / "nats") as server:
        window_config = _config(tmp_path, WINDOW, JINAN, alerts={
            "webhook": hook.url, "webhook_token_file": "hook-token", "check_seconds": 1})
        jinan_config = _config(tmp_path, JINAN, WINDOW)
        async with serving(server.url, window_config) as window:
            async with serving(server.url, jinan_config) as jinan:
                await until(lambda: _state(window, JINAN).last_seen is not None)
                await until(lambda: _state(jinan, WINDOW).last_seen is not None)
                heard = _state(window, JINAN)
                assert not heard.silent
                assert heard.name == "济南市"
                assert heard.started_at is not None
                assert heard.threshold_s == 3
                assert not [a for a in window.alerts.active() if a.kind == "partner_silent"]
            # 济南 stops: after its threshold it is silent, and the alert fires.
            await until(lambda: _state(window, JINAN).silent, timeout=8)
            await until(lambda: f"partner_silent:{JINAN}" in {a.key for a in window.alerts.active()},
                        timeout=5)
            [alert] = [a for a in window.alerts.active() if a.kind == "partner_silent"]
            assert "济南市" in alert.title
            assert alert.level == "critical"
            await until(lambda: hook.events("partner_silent") == ["firing"], timeout=10)
            assert hook.received[0]["region"] == WINDOW
            # It comes back: healthy again, the alert resolves, the webhook hears that too.
            async with serving(server.url, jinan_config):
                await until(lambda: not _state(window, JINAN).silent, timeout=8)
                await until(lambda: not [a for a in window.alerts.active()
                                         if a.kind == "partner_silent"], timeout=5)
                await until(lambda: hook.events("partner_silent") == ["firing", "resolved"],
                            timeout=10)
                assert [event for _, event, a in window.alerts.history()
                        if a.kind == "partner_silent"] == ["resolved", "firing"]


class _Store:
    def __init__(self, timers: list[tuple[str, bool, int]], dead: dict[str, int]) -> None:
        self.timers, self.dead = timers, dead

    def timers_due_by(self, soon: int, now: int) -> list[tuple[str, bool, int]]:
        return self.timers

    def overdue_promises(self) -> int:
        return 0

    def count_in_state_by_peer(self, state: str) -> dict[str, int]:
        return self.dead if state == "dead_letter" else {}


def _fake_node(tmp_path: Path, store: _Store) -> Any:
    from protocol.calendar import WeekdayCalendar

    return SimpleNamespace(
        region=WINDOW, store=store, engine=SimpleNamespace(calendar=WeekdayCalendar()),
        health=SimpleNamespace(partners=list),
        config=SimpleNamespace(data_dir=tmp_path, name="郑州市"))


async def test_overdue_cases_dead_letters_and_low_storage_are_alerts(tmp_path: Path) -> None:
    store = _Store([("notice", False, 2)], {})
    clock = SimpleNamespace(now=T0)
    alerts = Alerts(_fake_node(tmp_path, store), AlertsConfig(min_free_mb=0, min_free_percent=0),
                    lambda: clock.now)
    alerts.check()
    [soon] = alerts.active()
    assert (soon.kind, soon.level, soon.title) == ("overdue_cases", "warning", "2 件办件即将到期")
    clock.now += 1000
    store.timers = [("notice", True, 1), ("promise", True, 2)]
    store.dead = {JINAN: 1}
    alerts.check()
    overdue, dead = alerts.active()
    assert (overdue.level, overdue.title, overdue.since) == ("critical", "3 件办件已超期", T0)
    assert "补正告知期限超期 1 件" in overdue.detail
    assert dead.kind == "retries_exhausted"
    alerts.config = AlertsConfig(min_free_percent=100)  # no disk is that empty
    store.timers, store.dead = [], {}
    alerts.check()
    [low] = alerts.active()
    assert low.kind == "storage_low"
    assert "MB" in low.detail
    assert [(event, a.kind) for _, event, a in alerts.history()][:3] == [
        ("firing", "storage_low"), ("resolved", "retries_exhausted"),
        ("resolved", "overdue_cases")]
    await asyncio.sleep(0)


async def test_a_replayed_or_misrouted_heartbeat_keeps_nobody_alive(tmp_path: Path) -> None:
    from config.models import HealthConfig
    from node.health import PartnerHealth
    from receipts.keys import KeyRing

    keys = NodeKeys.generate(JINAN)
    registry = KeyRegistry()
    registry.add_node(keys, valid_from=0)
    clock = SimpleNamespace(now=T0)
    handlers: list[Any] = []

    class Transport:
        async def listen_heartbeats(self, handle: Any) -> None:
            handlers.append(handle)

    router = SimpleNamespace(reaches=lambda r: r == JINAN, partners=lambda: [JINAN])
    store = SimpleNamespace(outbox_pending_by_subject=lambda: [(f"tb.{JINAN}.in.decision", 2, T0)])
    health = PartnerHealth(WINDOW, HealthConfig(silent_after_seconds=30), Transport(),  # type: ignore[arg-type]
                           KeyRing.of(NodeKeys.generate(WINDOW)), registry, router,  # type: ignore[arg-type]
                           store, lambda: clock.now)  # type: ignore[arg-type]
    await health.listen()
    beat = seal_heartbeat(Heartbeat(region=JINAN, at=T0, nonce=secrets.token_bytes(16),
                                    started_at=T0, interval_s=10, outbox=0),
                          keys.signing, keys.sign_key_id)
    await handlers[0](f"tb.{WINDOW}.health", beat)  # on another region's subject: ignored
    assert health.last_seen == {}
    await handlers[0](f"tb.{JINAN}.health", beat)
    assert health.last_seen == {JINAN: T0}
    clock.now += 40_000
    await handlers[0](f"tb.{JINAN}.health", beat)  # the same heartbeat again: not newer
    [state] = health.partners()
    assert state.silent
    assert (state.queued, state.oldest_queued, state.last_seen) == (2, T0, T0)


def test_a_missing_webhook_token_is_a_configuration_error(tmp_path: Path) -> None:
    from config import ConfigError

    with pytest.raises(ConfigError, match="webhook_token_file"):
        Alerts(SimpleNamespace(region=WINDOW), AlertsConfig(  # type: ignore[arg-type]
            webhook="https://hooks.example/x", webhook_token_file=tmp_path / "none"), lambda: T0)


async def test_the_deadline_alert_reads_the_case_database(tmp_path: Path) -> None:
    """Timers and overdue promises as the store holds them, not a stand-in."""
    from node.store import Changes, Store
    from protocol.calendar import WeekdayCalendar

    day = 86_400_000
    store = Store(tmp_path / "node.db")
    store.start()
    try:
        def case(case_id: str, state: str) -> dict[str, Any]:
            return {"case_id": case_id, "role": "handling", "peer": WINDOW, "state": state,
                    "matter": None, "window_no": None, "snapshot": {}, "at": T0}

        await store.commit(Changes(
            cases=[case("late-notice", "received"), case("late-promise", "processing")],
            timers_set=[("late-notice", "notice", T0 - day)],
            receipts=[{"case_id": "late-promise", "actor": JINAN, "idx": 3, "kind": "overdue",
                       "at": T0 - day, "digest": bytes(32), "receipt": b"r"}]))
        node = SimpleNamespace(region=JINAN, store=store,
                               engine=SimpleNamespace(calendar=WeekdayCalendar()),
                               health=SimpleNamespace(partners=list),
                               config=SimpleNamespace(data_dir=tmp_path, name="济南市"))
        alerts = Alerts(node, AlertsConfig(min_free_mb=0, min_free_percent=0),  # type: ignore[arg-type]
                        lambda: T0)
        alerts.check()
        [overdue] = alerts.active()
        assert overdue.title == "2 件办件已超期"
        assert "补正告知期限超期 1 件，承诺办结时限超期 1 件" in overdue.detail
    finally:
        await store.close()
