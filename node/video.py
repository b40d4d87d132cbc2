"""The node's side of remote virtual-window sessions (远程虚拟窗口).

Theory of operation
-------------------
A session joins two browsers: a 通办专窗 clerk's at the collecting region (the
*caller*) and a reviewer's at the handling region (the *callee*). Audio and video go
from browser to browser (WebRTC, through the STUN/TURN servers of ``[video]``); the
signaling that sets them up goes browser ⇄ web socket ⇄ node ⇄ NATS ⇄ node ⇄ web
socket ⇄ browser. ``VirtualWindow`` is the node's part:

* **Sessions** live in ``node.store.video`` on both nodes, each with its own role.
  The clerk opens one (``open``): the caller's row is ``waiting`` and an ``invite``
  goes to the partner, whose node makes its callee row. A reviewer there takes it
  (``join``): both rows become ``active``. Either side ends it (``end``): both rows
  become ``ended`` with the outcome. Who did what when is each row's event log.
* **Signals** (``protocol.rtc``) go out signed with the node's key and come in
  checked (signature, addressee, freshness, no replay, a member of the circle, the
  session's own peer). ``sdp``, ``ice`` and ``ready`` are passed between the
  browsers of an active session and nothing else; the node reads none of them.
* **Browsers** attach with a ``send`` callable (``attach``) and hand in what they say
  (``from_browser``); every change of a session is sent to its browsers as a
  ``session`` message, and ``changed`` wakes pages that list sessions (the desk).
* **Ends**: a request nobody joins within ``ring_minutes`` ends as ``no_answer``; an
  active session whose page no browser of ours has open for ``ALONE_MINUTES`` ends as
  ``interrupted``.
  When the node stops, or starts again after dying, every session still open ends as
  ``interrupted`` and the partner is told, so neither side waits for a call that is
  gone. A dropped network is the browsers' business: they restart ICE, or come back
  with ``ready`` after a reload.

Nothing of the media passes through or is stored here. What the reviewer confirms
in a session (identity, materials, the decision) is a case step (``video_check``,
a decision naming the session) signed into both chains by the engine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from config.models import VideoConfig
from node.store.video import VideoSession, VideoStore
from node.transport import Transport
from protocol import ProtocolError
from protocol.rtc import FRESH_MS, MAX_DATA, OUTCOMES, Signal
from receipts.keys import KeyRing
from receipts.registry import KeyRegistry
from receipts.rtc import open_signal, seal_signal
from routing.router import Router

__all__ = ["Send", "VideoError", "VirtualWindow", "new_session_id"]

log = logging.getLogger("tongban.video")

#: Sends one JSON message to one browser.
Send = Callable[[dict[str, Any]], Awaitable[None]]
#: What a browser may hand in, and what is passed on to the other browser.
_PASSED_ON = frozenset({"ready", "sdp", "ice"})
#: How often open sessions are looked at (无人接听, pages left).
_RING_CHECK_S = 5.0
#: An active session with no browser of ours on its page for this long has ended.
ALONE_MINUTES = 2


class VideoError(Exception):
    """A session action that cannot be done; ``zh`` says what to do instead."""

    def __init__(self, code: str, zh: str) -> None:
        super().__init__(f"{code}: {zh}")
        self.code = code
        self.zh = zh


def new_session_id(region: str) -> str:
    return f"vs-{region}-{secrets.token_urlsafe(18)}"  # 144 bits, 24 characters


class VirtualWindow:
    def __init__(self, region: str, label: str, store: VideoStore, transport: Transport,
                 keys: KeyRing, registry: KeyRegistry, router: Router, config: VideoConfig,
                 clock: Callable[[], int]) -> None:
        self.region = region
        self.label = label  # e.g. 郑州市: the window or desk's name is added per session
        self.store = store
        self.transport = transport
        self.keys = keys
        self.registry = registry
        self.router = router
        self.config = config
        self.clock = clock
        self.browsers: dict[str, set[Send]] = {}
        #: Set at every change of any session (pages listing sessions wait on their own).
        self.changed: set[asyncio.Event] = set()
        self._nonces: collections.OrderedDict[bytes, int] = collections.OrderedDict()
        #: Active sessions with no browser of ours on their page, and since when.
        self._alone: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<VirtualWindow {self.region} browsers={sum(map(len, self.browsers.values()))}>"

    # ---------------------------------------------------------------- lifetime

    async def start(self) -> None:
        """End what a crash left open, then listen (the transport is connected)."""
        for session in self.store.open_sessions():
            await self._finish(session, "interrupted", who="node", tell_peer=True)
        await self.transport.listen_signals(self._on_signal)

    async def stop(self) -> None:
        """The node is stopping: every open session ends, and its partner is told."""
        for session in self.store.open_sessions():
            await self._finish(session, "interrupted", who="node", tell_peer=True)

    def close(self) -> None:
        self.store.close()

    # ---------------------------------------------------------------- staff actions

    async def open(self, peer: str, *, case_id: str | None, topic: str, label: str,
                   by: str) -> VideoSession:
        """The clerk asks ``peer``'s reviewers for a session (about ``case_id``, or a
        stand-alone consultation)."""
        if not self.router.reaches(peer):
            raise VideoError("not_a_partner", "对方地区不是本通办圈的有效成员，无法发起视频会话。")
        now = self.clock()
        session = VideoSession(
            id=new_session_id(self.region), role="caller", peer=peer, case_id=case_id,
            topic=topic, caller_label=label, callee_label="", state="waiting", outcome=None,
            created_at=now, joined_at=None, ended_at=None, started_by=by, joined_by="",
            ended_by="")
        self.store.create(session, who=by)
        try:
            await self._signal(session, "invite", case=case_id, topic=topic, label=label)
        except ConnectionError:
            await self._finish(session, "failed", who="node", tell_peer=False)
            raise VideoError("offline", "本节点与通办圈的连接中断，视频请求未能发出；"
                                        "请稍后再试，或联系本节点运维人员。") from None
        self._changed()
        return session

    async def join(self, session_id: str, *, label: str, by: str) -> VideoSession:
        """A reviewer takes a waiting request."""
        session = self._own(session_id, "callee")
        if session.state != "waiting":
            raise VideoError("not_waiting", "该视频请求已被接入或已结束，请返回待办队列。")
        now = self.clock()
        if not self.store.join(session_id, now, who=by, joined_by=by, callee_label=label):
            raise VideoError("not_waiting", "该视频请求已被接入或已结束，请返回待办队列。")
        try:
            await self._signal(session, "join", label=label)
        except ConnectionError:
            await self._finish(self._get(session_id), "failed", who="node", tell_peer=False)
            raise VideoError("offline", "本节点与通办圈的连接中断，未能接入；请稍后再试。") from None
        await self._tell_browsers(session_id)
        return self._get(session_id)

    async def end(self, session_id: str, *, by: str, outcome: str | None = None) -> None:
        """Either side hangs up (or the caller cancels, or the callee declines)."""
        session = self._get(session_id)
        if session.state == "ended":
            return
        if outcome is None:
            outcome = "completed" if session.state == "active" else (
                "cancelled" if session.role == "caller" else "declined")
        await self._finish(session, outcome, who=by, tell_peer=True)

    def note(self, session_id: str, *, by: str, what: str) -> None:
        """A check recorded in the session, a reconnect: the session's event log."""
        self.store.note(session_id, self.clock(), who=by, what=what)

    # ---------------------------------------------------------------- browsers

    def attach(self, session_id: str, send: Send) -> Callable[[], None]:
        """A browser on the session's page; returns what detaches it."""
        self.browsers.setdefault(session_id, set()).add(send)

        def detach() -> None:
            sends = self.browsers.get(session_id)
            if sends is not None:
                sends.discard(send)
                if not sends:
                    del self.browsers[session_id]

        return detach

    async def from_browser(self, session_id: str, message: Any, *, by: str) -> None:
        """What a browser on the session's page said: passed on to the other browser
        (``ready``, ``sdp``, ``ice``), or ``hangup``. Anything else is ignored."""
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "hangup":
            await self.end(session_id, by=by)
            return
        if kind == "media" and message.get("state") in ("connected", "reconnecting"):
            self.note(session_id, by=by, what=f"media:{message['state']}")
            return
        session = self.store.get(session_id)
        if kind not in _PASSED_ON or session is None or session.state != "active":
            return
        data = json.dumps({k: v for k, v in message.items() if k != "type"},
                          ensure_ascii=False, separators=(",", ":")).encode()
        if len(data) > MAX_DATA:
            return
        with contextlib.suppress(ConnectionError):  # the browsers try again (ICE restart)
            await self._signal(session, kind, data=data)

    def state_message(self, session: VideoSession) -> dict[str, Any]:
        """What a browser is told about its session."""
        return {"type": "session", "state": session.state, "outcome": session.outcome,
                "outcome_zh": OUTCOMES.get(session.outcome or "", ""), "role": session.role,
                "ice_servers": [s.model_dump(exclude_none=True) for s in self.config.ice_servers],
                "loopback_only": self.config.loopback_only,
                "caller_label": session.caller_label, "callee_label": session.callee_label}

    # ---------------------------------------------------------------- signals

    async def _signal(self, session: VideoSession, kind: str, **fields: Any) -> None:
        signal = Signal(session=session.id, kind=kind, sender=self.region,  # type: ignore[arg-type]
                        recipient=session.peer, at=self.clock(), nonce=secrets.token_bytes(16),
                        **fields)
        current = self.keys.current
        await self.transport.send_signal(
            session.peer, seal_signal(signal, current.signing, current.sign_key_id))

    async def _on_signal(self, data: bytes) -> None:
        now = self.clock()
        try:
            signal = open_signal(data, self.registry, self.region, now)
        except ProtocolError as exc:
            log.warning("signal refused: %s", exc)
            return
        if not self._fresh_nonce(signal.nonce, now) or not self.router.reaches(signal.sender):
            log.warning("signal from %s refused (replayed, or not a member)", signal.sender)
            return
        try:
            await self._take(signal)
        except Exception:  # one bad signal never stops the subscription
            log.exception("signal %s of session %s", signal.kind, signal.session)

    async def _take(self, signal: Signal) -> None:
        session = self.store.get(signal.session)
        if signal.kind == "invite":
            if session is not None:
                return  # a repeat
            if not signal.session.startswith(f"vs-{signal.sender}-"):
                log.warning("invite from %s names another region's session", signal.sender)
                return
            self.store.create(VideoSession(
                id=signal.session, role="callee", peer=signal.sender, case_id=signal.case,
                topic=signal.topic, caller_label=signal.label or signal.sender, callee_label="",
                state="waiting", outcome=None, created_at=self.clock(), joined_at=None,
                ended_at=None, started_by="", joined_by="", ended_by=""),
                who=f"peer:{signal.sender}")
            self._changed()
            return
        if session is None or session.peer != signal.sender:
            return  # not a session with this partner
        match signal.kind:
            case "join" if session.role == "caller":
                if self.store.join(session.id, self.clock(), who=f"peer:{signal.sender}",
                                   joined_by="", callee_label=signal.label or signal.sender):
                    await self._tell_browsers(session.id)
            case "end":
                await self._finish(session, signal.outcome or "completed",
                                   who=f"peer:{signal.sender}", tell_peer=False)
            case "ready" | "sdp" | "ice" if session.state == "active":
                message: dict[str, Any] = {"type": signal.kind}
                if signal.data:
                    try:
                        passed = json.loads(signal.data)
                    except ValueError:
                        return
                    if not isinstance(passed, dict):
                        return
                    message = {**passed, "type": signal.kind}  # the kind is ours to say
                await self._to_browsers(session.id, message)

    def _fresh_nonce(self, nonce: bytes, now: int) -> bool:
        """False for a nonce seen within the freshness window (a replay)."""
        while self._nonces:
            oldest, at = next(iter(self._nonces.items()))
            if now - at <= 2 * FRESH_MS:
                break
            del self._nonces[oldest]
        if nonce in self._nonces:
            return False
        self._nonces[nonce] = now
        return True

    # ---------------------------------------------------------------- internals

    def _get(self, session_id: str) -> VideoSession:
        session = self.store.get(session_id)
        if session is None:
            raise VideoError("no_session", "没有这个视频会话，请返回上一页。")
        return session

    def _own(self, session_id: str, role: str) -> VideoSession:
        session = self._get(session_id)
        if session.role != role:
            raise VideoError("wrong_side",
                             "该操作只能由会话的另一方进行；请返回视频窗口列表，打开本方的会话。")
        return session

    async def _finish(self, session: VideoSession, outcome: str, *, who: str,
                      tell_peer: bool) -> None:
        if not self.store.end(session.id, self.clock(), outcome, who=who):
            return
        if tell_peer:
            try:
                await self._signal(session, "end", outcome=outcome)
            except ConnectionError:
                log.warning("session %s ended (%s); the partner %s could not be told",
                            session.id, outcome, session.peer)
        await self._tell_browsers(session.id)
        self._changed()

    async def _tell_browsers(self, session_id: str) -> None:
        session = self.store.get(session_id)
        if session is not None:
            await self._to_browsers(session_id, self.state_message(session))
        self._changed()

    async def _to_browsers(self, session_id: str, message: dict[str, Any]) -> None:
        for send in list(self.browsers.get(session_id, ())):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await send(message)

    def _changed(self) -> None:
        for event in self.changed:
            event.set()

    async def watch(self) -> None:
        """Until cancelled (a task of the node's): a request nobody takes within
        ``ring_minutes`` ends as 无人接听; an active session whose page no browser of ours
        has had open for ``ALONE_MINUTES`` ends as interrupted (the tab was closed, the
        hall's network is gone), and the partner is told."""
        while True:
            await asyncio.sleep(_RING_CHECK_S)
            await self.sweep()

    async def sweep(self) -> None:
        """One look at the open sessions (``watch`` makes one every few seconds)."""
        now = self.clock()
        for session in self.store.open_sessions():
            if session.state == "waiting":
                ended = session.created_at < now - self.config.ring_minutes * 60_000
                outcome = "no_answer"
            elif session.id in self.browsers:
                self._alone.pop(session.id, None)
                continue
            else:
                alone = self._alone.setdefault(session.id, now)
                ended, outcome = alone < now - ALONE_MINUTES * 60_000, "interrupted"
            if ended:
                self._alone.pop(session.id, None)
                try:
                    await self._finish(session, outcome, who="node",
                                       tell_peer=session.role == "caller" or outcome != "no_answer")
                except Exception:
                    log.exception("ending session %s (%s)", session.id, outcome)
