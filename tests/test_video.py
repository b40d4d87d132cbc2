"""远程虚拟窗口: signed signals, sessions on both nodes, and a real call between two
headless Chromium pages with fake camera and microphone, each signed in to its own
node, the nodes connected through a real nats-server. ICE uses loopback only.
Screenshots are kept in test-artifacts/web/video-*.png."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, async_playwright

from config import parse_config
from node.app import Node
from node.natsd import EmbeddedNats
from node.store.accounts import FILENAME, AccountStore
from node.store.video import VideoSession
from node.web.auth import HASHER
from protocol import RemoteProtocolError, decode
from protocol.rtc import FRESH_MS, Signal
from protocol.wire import receipt_from_fields
from receipts import KeyRegistry, NodeKeys
from receipts.rtc import open_signal, seal_signal
from tests.api_token import HEADERS, HTTP
from tests.serving import serving, until
from tests.test_desk_pages import ARTIFACTS, CHROMIUM, signed_in

pytestmark = [pytest.mark.timeout(150)]

WINDOW, JINAN = "410100", "370100"
PASSWORD = "correct-horse-9"
T0 = 1_780_000_000_000
#: Lets the test reach the page's peer connections (to cut one, as a dropped network).
KEEP_PEER_CONNECTIONS = """
window.peerConnections = [];
const Original = window.RTCPeerConnection;
window.RTCPeerConnection = function (...args) {
  const made = new Original(...args);
  window.peerConnections.push(made);
  return made;
};
window.RTCPeerConnection.prototype = Original.prototype;
"""
BROWSER_ARGS = ["--no-sandbox", "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection"]


# ---------------------------------------------------------------- signals


def _signal(**fields: Any) -> Signal:
    return Signal(**{"session": f"vs-{WINDOW}-{'a' * 24}", "kind": "sdp", "sender": WINDOW,
                     "recipient": JINAN, "at": T0, "nonce": secrets.token_bytes(16),
                     "data": b'{"description":{}}', **fields})


def test_a_signal_is_opened_only_signed_fresh_and_addressed_to_us() -> None:
    sender, other = NodeKeys.generate(WINDOW), NodeKeys.generate(WINDOW)
    registry = KeyRegistry()
    registry.add_node(sender, valid_from=0)
    data = seal_signal(_signal(), sender.signing, sender.sign_key_id)
    assert open_signal(data, registry, JINAN, T0 + 5_000).kind == "sdp"
    with pytest.raises(RemoteProtocolError, match="wrong_recipient"):
        open_signal(data, registry, "510100", T0)
    with pytest.raises(RemoteProtocolError, match="not fresh"):
        open_signal(data, registry, JINAN, T0 + FRESH_MS + 1)
    forged = seal_signal(_signal(), other.signing, sender.sign_key_id)  # someone else's key
    with pytest.raises(RemoteProtocolError, match="bad_signature"):
        open_signal(forged, registry, JINAN, T0)
    unknown = seal_signal(_signal(), other.signing, other.sign_key_id)
    with pytest.raises(RemoteProtocolError, match="unknown_key"):
        open_signal(unknown, registry, JINAN, T0)
    with pytest.raises(RemoteProtocolError):
        open_signal(b"\x81\xa1x\x01", registry, JINAN, T0)


# ---------------------------------------------------------------- two nodes


def _config(base: Path, region: str, peer: str) -> Any:
    return parse_config({
        "region": region, "name": {WINDOW: "郑州市", JINAN: "济南市"}[region],
        "data_dir": str(base / region), "http": HTTP, "auto_review": False,
        "video": {"loopback_only": True},
        "peers": [{"region": peer, "name": peer, "public": str(base / peer / "keys" / "public.json")}],
    }, base=base, environ={})


def _prepare(base: Path) -> tuple[Any, Any]:
    for region in (WINDOW, JINAN):
        NodeKeys.generate(region).save(base / region / "keys", valid_from=0)
    configs = _config(base, WINDOW, JINAN), _config(base, JINAN, WINDOW)
    for config, (username, roles) in zip(configs, (("clerk", ("clerk",)),
                                                   ("reviewer", ("reviewer",))), strict=True):
        store = AccountStore(config.data_dir / FILENAME)
        store.create(username=username, display_name={"clerk": "李收件", "reviewer": "王审核"}[
            username], roles=roles, region=config.region, password_hash=HASHER.hash(PASSWORD),
            now=time.time_ns() // 1_000_000, actor="test")
        store.close()
    return configs


async def _submit(window: Node) -> str:
    async with aiohttp.ClientSession(headers=HEADERS) as http, http.post(
            f"{window.address}/api/cases", json={"handling": JINAN}) as response:  # type: ignore[attr-defined]
        assert response.status == 201, await response.text()
        return str((await response.json())["case_id"])


def _session(node: Node, session_id: str) -> VideoSession:
    session = node.video.store.get(session_id)
    assert session is not None
    return session


async def test_a_restart_ends_open_sessions_on_both_sides(tmp_path: Path) -> None:
    window_config, jinan_config = _prepare(tmp_path)
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, jinan_config) as jinan:
        async with serving(server.url, window_config) as window:
            opened = await window.video.open(JINAN, case_id=None, topic="医保政策咨询",
                                             label="郑州市通办专窗", by="clerk")
            await until(lambda: jinan.video.store.get(opened.id) is not None)
            callee = _session(jinan, opened.id)
            assert (callee.role, callee.state, callee.topic) == ("callee", "waiting", "医保政策咨询")
            await jinan.video.join(opened.id, label="济南市审核席位", by="reviewer")
            await until(lambda: _session(window, opened.id).state == "active")
            assert _session(window, opened.id).callee_label == "济南市审核席位"
        # The window's node stopped: its session ended, and the partner was told.
        await until(lambda: _session(jinan, opened.id).state == "ended")
        assert _session(jinan, opened.id).outcome == "interrupted"
        # A session a crash left open (no clean stop) ends when the node starts again.
        store = jinan.video.store
        left = VideoSession(id=f"vs-{WINDOW}-{'b' * 24}", role="callee", peer=WINDOW, case_id=None,
                            topic="", caller_label="", callee_label="", state="waiting",
                            outcome=None, created_at=T0, joined_at=None, ended_at=None,
                            started_by="", joined_by="", ended_by="")
        store.create(left, who="test")
        async with serving(server.url, window_config) as window:
            assert _session(window, opened.id).outcome == "interrupted"
    async with EmbeddedNats(tmp_path / "nats2") as server, \
            serving(server.url, jinan_config) as jinan:
        assert _session(jinan, left.id).outcome == "interrupted"


# ---------------------------------------------------------------- in the browser


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"video-{name}.png"), full_page=True)


async def _frames(page: Page) -> int:
    """Frames the remote video element has drawn, waiting for one more."""
    return int(await page.evaluate("""() => new Promise((resolve) => {
        const video = document.getElementById('remote-video');
        setTimeout(() => resolve(0), 10000);
        video.requestVideoFrameCallback(
            () => resolve(video.getVideoPlaybackQuality().totalVideoFrames));
    })"""))


async def _connected(page: Page) -> None:
    await page.locator("#video-page[data-call='connected']").wait_for(timeout=30_000)


def _chain(node: Node, case_id: str, actor: str) -> list[Any]:
    return [receipt_from_fields(decode(raw)) for raw in node.store.receipts(case_id)
            if receipt_from_fields(decode(raw)).actor == actor]


async def test_a_video_session_in_two_browsers(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    window_config, jinan_config = _prepare(tmp_path)
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, window_config) as window, \
            serving(server.url, jinan_config) as jinan, \
            async_playwright() as playwright:
        case_id = await _submit(window)
        await until(lambda: (jinan.store.case_row(case_id) or {}).get("state") == "received",
                    timeout=20)
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            desk_context, desk = await signed_in(browser, jinan, "reviewer")
            await desk_context.add_init_script(KEEP_PEER_CONNECTIONS)
            await desk.goto("/video")
            other = await desk_context.new_page()  # the reviewer's queue, in another tab
            await other.goto("/desk")
            _, clerk = await signed_in(browser, window, "clerk")

            # The clerk asks for a session from the case page and waits.
            await clerk.goto(f"/window/cases/{case_id}")
            await clerk.click("#video-button")
            await clerk.wait_for_url("**/video/vs-*")
            session_id = clerk.url.rsplit("/", 1)[-1]
            await clerk.locator("#video-page[data-call='waiting']").wait_for()

            # The request appears at the desk by itself, and on every page of the reviewer;
            # the reviewer takes it.
            await other.locator("#video-badge:has-text('1 个请求')").wait_for(timeout=20_000)
            request = desk.locator(f"#waiting li[data-session='{session_id}']")
            await request.wait_for(timeout=20_000)
            assert "郑州市通办专窗" in await request.inner_text()
            await shot(desk, "01-request")
            await request.locator("button.join-button").click()
            await desk.wait_for_url(f"**/video/{session_id}")

            # Both browsers connect, and each draws the other's video.
            await _connected(clerk)
            await _connected(desk)
            assert await _frames(clerk) > 0
            assert await _frames(desk) > 0
            assert await desk.evaluate("document.getElementById('remote-video').videoWidth") > 0
            assert await desk.locator("#application").count() == 1  # the case beside the video
            await shot(clerk, "02-clerk-connected")
            await shot(desk, "03-reviewer-connected")

            # The reviewer records the identity check: the page reloads, and the call
            # comes back by itself (the reloaded page says "ready", the window offers).
            await desk.fill("#identity-note", "本人与身份证照片一致")
            await desk.click("#identity-button")
            await desk.wait_for_url("**?done=identity")
            await _connected(desk)
            await _connected(clerk)
            assert await _frames(desk) > 0
            await until(lambda: any(r.kind == "video_checked" for r in _chain(window, case_id,
                                                                                WINDOW)))
            # In both chains: the reviewer's, and the window's acknowledging it (the
            # window node holds both; its own travels with its next message).
            for node, actor in ((jinan, JINAN), (window, JINAN), (window, WINDOW)):
                checked = [r for r in _chain(node, case_id, actor) if r.kind == "video_checked"]
                assert len(checked) == 1, (node.region, actor)
                assert checked[0].data["session"] == session_id
                assert checked[0].data["check"] == "identity"
            assert "远程视频核验" in await desk.locator("#video-checks").inner_text()

            # The network drops under the reviewer's side (its connection is gone): the
            # window sees it, restarts ICE, and both are connected again by themselves.
            await desk.evaluate("window.peerConnections.at(-1).close()")
            await clerk.locator("#video-page[data-call='reconnecting']").wait_for(timeout=30_000)
            await _connected(clerk)
            await _connected(desk)
            assert await _frames(desk) > 0
            await shot(clerk, "04-clerk-reconnected")

            # The reviewer accepts in the session: the acceptance names the session.
            await desk.fill("#doc_no", "济医保受〔2026〕0042号")
            await desk.click("#accept-button")
            await desk.wait_for_url("**?done=accept")
            accepted = [r for r in _chain(jinan, case_id, JINAN) if r.kind == "accepted"]
            assert accepted[0].data["session"] == session_id

            # The clerk hangs up: both sides end.
            await _connected(desk)
            await clerk.click("#hangup-button")
            await clerk.locator("#video-page[data-call='ended']").wait_for()
            await desk.locator("#video-page[data-call='ended']").wait_for(timeout=15_000)
            assert "已结束" in await desk.locator("#call-state").inner_text()
            await shot(desk, "05-ended")
            for node, role in ((window, "caller"), (jinan, "callee")):
                session = _session(node, session_id)
                assert (session.role, session.state, session.outcome) == (role, "ended", "completed")
                assert session.case_id == case_id
            events = [e.what for e in jinan.video.store.events(session_id)]
            assert events[:2] == ["created", "joined"]
            assert "check:identity" in events
            assert "decision:accept" in events
            assert [e.who for e in window.video.store.events(session_id)
                    if e.what.startswith("ended")] == ["clerk"]
        finally:
            await browser.close()


async def test_a_consultation_nobody_takes_is_cancelled_by_the_window(tmp_path: Path) -> None:
    window_config, jinan_config = _prepare(tmp_path)
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, window_config) as window, \
            serving(server.url, jinan_config) as jinan, \
            async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            _, clerk = await signed_in(browser, window, "clerk")
            await clerk.goto("/video")
            await clerk.click("#consult-form button[type=submit]")  # nothing chosen
            assert await clerk.locator("#field-peer .field-error").count() == 1
            await clerk.select_option("#peer", JINAN)
            await clerk.fill("#topic", "异地就医备案材料咨询")
            await clerk.click("#consult-form button[type=submit]")
            await clerk.wait_for_url("**/video/vs-*")
            session_id = clerk.url.rsplit("/", 1)[-1]
            await until(lambda: jinan.video.store.get(session_id) is not None)
            await clerk.click("#hangup-button")  # 取消请求
            await until(lambda: _session(jinan, session_id).state == "ended")
            assert _session(jinan, session_id).outcome == "cancelled"
            assert _session(window, session_id).outcome == "cancelled"
        finally:
            await browser.close()
    await asyncio.sleep(0)


def test_the_deploy_guides_video_settings_are_a_valid_configuration(tmp_path: Path) -> None:
    import re
    import tomllib

    guide = (Path(__file__).resolve().parent.parent / "docs" / "deploy.md").read_text(
        encoding="utf-8")
    section = guide[guide.index("## 10 The virtual window"):]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    settings = tomllib.loads(block.group(1))
    config = parse_config({"region": JINAN, "name": "济南市", "data_dir": "d", **settings},
                          base=tmp_path, environ={})
    assert [s.urls[0].split(":")[0] for s in config.video.ice_servers] == ["stun", "turn"]
    assert config.video.ice_servers[1].username == "tongban"


# ---------------------------------------------------------------- two windows, no NATS


class _Wire:
    """Two nodes' transports joined in memory: what one sends, the other takes."""

    def __init__(self) -> None:
        self.nodes: dict[str, Any] = {}
        self.sent: list[tuple[str, bytes]] = []

    def transport(self, region: str) -> Any:
        wire = self

        class Transport:
            async def listen_signals(self, handle: Any) -> None:
                wire.nodes[region] = handle

            async def send_signal(self, to: str, data: bytes) -> None:
                wire.sent.append((to, data))
                await wire.nodes[to](data)

        return Transport()


def _windows(tmp_path: Path, clock: Any) -> tuple[Any, Any, _Wire]:
    from config.models import VideoConfig
    from node.store.video import VideoStore
    from node.video import VirtualWindow
    from receipts.keys import KeyRing

    keys = {r: NodeKeys.generate(r) for r in (WINDOW, JINAN, "510100")}
    registry = KeyRegistry()
    for pair in keys.values():
        registry.add_node(pair, valid_from=0)
    router = SimpleNamespace(reaches=lambda r: r in keys, partners=lambda: sorted(keys))
    wire = _Wire()
    made = [VirtualWindow(r, r, VideoStore(tmp_path / r / "video.db"), wire.transport(r),
                          KeyRing.of(keys[r]), registry, router, VideoConfig(ring_minutes=1),
                          clock) for r in (WINDOW, JINAN)]
    return made[0], made[1], wire


async def test_sessions_refuse_replays_and_strangers_and_end_by_themselves(tmp_path: Path) -> None:
    clock = SimpleNamespace(now=T0)
    window, jinan, wire = _windows(tmp_path, lambda: clock.now)
    for side in (window, jinan):
        await side.start()
    opened = await window.open(JINAN, case_id=None, topic="咨询", label="郑州市通办专窗", by="clerk")
    assert jinan.store.get(opened.id) is not None
    # A member that is not the session's peer cannot end it.
    stranger = NodeKeys.generate("510100")
    forged = Signal(session=opened.id, kind="end", sender="510100", recipient=WINDOW, at=clock.now,
                    nonce=secrets.token_bytes(16), outcome="completed")
    await wire.nodes[WINDOW](seal_signal(forged, stranger.signing, stranger.sign_key_id))
    assert window.store.get(opened.id).state == "waiting"  # type: ignore[union-attr]
    # Nobody takes it within ring_minutes: 无人接听, on both sides.
    clock.now += 61_000
    await window.sweep()
    assert window.store.get(opened.id).outcome == "no_answer"  # type: ignore[union-attr]
    # A session taken, then left by both pages, ends as interrupted after ALONE_MINUTES.
    second = await window.open(JINAN, case_id=None, topic="咨询", label="窗口", by="clerk")
    await jinan.join(second.id, label="审核席位", by="reviewer")
    # Signals pass between the pages; the same bytes again (a replay) do not.
    heard: list[dict[str, Any]] = []

    async def page(message: dict[str, Any]) -> None:
        heard.append(message)

    detach_jinan = jinan.attach(second.id, page)
    await window.from_browser(second.id, {"type": "ice", "gen": "g", "candidate": {"c": 1},
                                          "session": "forged"}, by="clerk")
    await wire.nodes[JINAN](wire.sent[-1][1])
    assert heard == [{"gen": "g", "candidate": {"c": 1}, "session": "forged", "type": "ice"}]
    detach_jinan()
    detach = window.attach(second.id, _ignore)
    await window.sweep()
    await jinan.sweep()  # no browser at 济南 yet: the clock starts
    clock.now += 3 * 60_000
    await window.sweep()
    assert window.store.get(second.id).state == "active"  # type: ignore[union-attr]
    await jinan.sweep()
    assert jinan.store.get(second.id).outcome == "interrupted"  # type: ignore[union-attr]
    assert window.store.get(second.id).outcome == "interrupted"  # type: ignore[union-attr]
    detach()
    for side in (window, jinan):
        side.close()


async def _ignore(message: dict[str, Any]) -> None:
    pass
