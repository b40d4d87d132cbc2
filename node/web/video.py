"""远程虚拟窗口 pages: the clerk calls, the handling region's reviewer takes the call.

Theory of operation
-------------------
``/video`` lists the sessions of this node: for a reviewer the requests waiting to be
taken (live: the page refreshes when one arrives), for a clerk the ones they can
follow, with a form to start a stand-alone consultation (咨询) with a partner. A
clerk starts a session about a case from the case page (``POST /video``, ``case_id``
set). Both browsers then open ``/video/{id}``:

* the page (``static/video.js``) takes the camera and microphone, opens the
  signaling socket ``/video/{id}/ws`` and runs WebRTC: the caller offers whenever
  the other browser says ``ready`` (it came to the page, or back after a reload);
  when ICE drops, the caller restarts it and the callee asks for a new offer; the
  states shown are 等待对方接入, 正在连接, 已接通, 正在重新连接 and 已结束;
* the reviewer's page (callee) shows the case's application and scans beside the
  video, and records what was confirmed: 身份核验 and 材料核验 (``/video/{id}/check``,
  a ``video_check`` step signed into both chains), and the 受理 decision itself
  (the desk's form, naming the session);
* 挂断 on either side ends the session on both (``/video/{id}/end``, or a ``hangup``
  over the socket).

Who may: clerks start and follow the sessions of their window's node, reviewers
take and hold the handling side's; both only of their own region.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import WSMsgType, web

from node.app import Node
from node.engine import Command
from node.store.accounts import Account
from node.store.video import VideoSession
from node.video import VideoError
from node.web.auth import Handler, account_of, require
from node.web.live import OpenSockets, foreign, region_name, serve_socket, watching
from node.web.render import error_page, render
from protocol import bodies as b
from protocol.fields import SESSION_PATTERN, clock_text
from protocol.rtc import OUTCOMES
from protocol.states import STATE_NAMES_ZH

__all__ = ["add_video_routes", "session_for_decision"]

SESSION = re.compile(SESSION_PATTERN)
SessionHandler = Callable[[web.Request, Node, VideoSession, Account],
                          Awaitable[web.StreamResponse]]
STATES_ZH = {"waiting": "等待对方接入", "active": "会话中", "ended": "已结束"}
CHECKS = {"identity": "身份核验（视频比对本人与证件）", "materials": "材料核验（视频查看原件）"}


#: The video lists' sockets (one per reviewer's page, for the badge).
SOCKETS = web.AppKey("video_sockets", OpenSockets)


def add_video_routes(app: web.Application, node_key: web.AppKey[Node]) -> None:
    pages = VideoPages(node_key)
    app[SOCKETS] = OpenSockets()
    app[SOCKETS].closing(app)
    staff = require("clerk", "reviewer", own_region=True)
    clerk = require("clerk", own_region=True)
    reviewer = require("reviewer", own_region=True)
    app.router.add_get("/video", staff(pages.listing))
    app.router.add_post("/video", clerk(pages.start))
    app.router.add_get("/video/live", staff(pages.listing_live))
    app.router.add_get("/video/{session}", staff(pages.in_session(pages.session_page)))
    app.router.add_get("/video/{session}/ws", staff(pages.in_session(pages.signaling)))
    app.router.add_post("/video/{session}/join", reviewer(pages.in_session(pages.join)))
    app.router.add_post("/video/{session}/end", staff(pages.in_session(pages.end)))
    app.router.add_post("/video/{session}/check", reviewer(pages.in_session(pages.check)))


def session_for_decision(node: Node, case_id: str, given: str) -> str | None:
    """The session a desk decision names (its hidden ``session`` field), if it is one of
    this node's callee sessions about that case; otherwise none."""
    if not given or not SESSION.match(given):
        return None
    session = node.video.store.get(given)
    ok = (session is not None and session.role == "callee" and session.case_id == case_id
          and session.state == "active")
    return given if ok else None


def takes_part(session: VideoSession, account: Account) -> bool:
    """Whether the account is this side's person in the session: the clerk who started
    it, or the reviewer who took it (any reviewer, while it waits to be taken). Others
    of the region may look at its page, not join the call."""
    if session.role == "caller":
        return account.username == session.started_by
    return session.joined_by in ("", account.username)


class VideoPages:
    def __init__(self, node_key: web.AppKey[Node]) -> None:
        self.node_key = node_key

    def node(self, request: web.Request) -> Node:
        return request.app[self.node_key]

    # ------------------------------------------------------------ the list

    async def listing(self, request: web.Request) -> web.StreamResponse:
        return self._listing(request, {}, {})

    def _listing(self, request: web.Request, values: dict[str, str], errors: dict[str, str],
                 status: int = 200) -> web.Response:
        node = self.node(request)
        account = _account(request)
        sessions = [self._row(s) for s in node.video.store.recent(100)]
        waiting = [s for s in sessions if s["role"] == "callee" and s["state"] == "waiting"]
        return render(request, "video_list.html", {
            "waiting": waiting, "sessions": [s for s in sessions if s not in waiting],
            "partners": {r: region_name(r) for r in sorted(node.router.partners())},
            "can_call": "clerk" in account.roles, "can_take": "reviewer" in account.roles,
            "values": values, "errors": errors}, status=status)

    async def listing_live(self, request: web.Request) -> web.StreamResponse:
        """A socket that says ``{"waiting": n, "version": v}`` now and whenever any
        session changes."""
        node = self.node(request)

        def message() -> dict[str, Any]:
            waiting = sum(1 for s in node.video.store.open_sessions()
                          if s.role == "callee" and s.state == "waiting")
            return {"waiting": waiting, "version": node.video.store.version()}

        return await serve_socket(request, request.app[SOCKETS], watching(node.video.changed),
                                  message)

    async def start(self, request: web.Request) -> web.StreamResponse:
        """发起远程视频: about a case (``case_id``) or a stand-alone consultation."""
        node = self.node(request)
        account = _account(request)
        form = await request.post()
        values = {k: str(form.get(k, "")).strip() for k in ("case_id", "peer", "topic")}
        errors: dict[str, str] = {}
        case_id: str | None = values["case_id"] or None
        if case_id is not None:
            row = node.store.case_row(case_id)
            if row is None or row["role"] != "collecting":
                return error_page(request, 404, "没有这个办件", "本节点没有这个由本窗口收件的办件。",
                                  "请返回办件列表，从办件详情页发起远程视频。")
            peer = row["peer"]
            topic = values["topic"] or f"办件 {case_id} 远程视频核验"
        else:
            peer, topic = values["peer"], values["topic"]
            if peer not in node.router.partners():
                errors["peer"] = "请选择要连线的通办伙伴地区。"
            if not topic:
                errors["topic"] = "请简要填写咨询事项，例如 异地就医备案材料咨询。"
            elif len(topic) > 200:
                errors["topic"] = "咨询事项不超过 200 字，请精简后再发起。"
            if errors:
                return self._listing(request, values, errors, status=400)
        try:
            session = await node.video.open(
                peer, case_id=case_id, topic=topic[:200],
                label=f"{node.config.name}通办专窗", by=account.username)
        except VideoError as exc:
            return error_page(request, 409, "未能发起远程视频", exc.zh,
                              "请稍后再试；如一直不能发起，请联系本节点运维人员。")
        raise web.HTTPSeeOther(f"/video/{session.id}")

    # ------------------------------------------------------------ one session

    async def session_page(self, request: web.Request, node: Node, session: VideoSession,
                            account: Account) -> web.StreamResponse:
        context: dict[str, Any] = {
            "s": self._row(session), "done": request.query.get("done", ""),
            "takes_part": takes_part(session, account),
            "can_take": "reviewer" in account.roles and session.role == "callee",
            "events": [{"when": clock_text(e.at), "what": _event_zh(e.what),
                        "who": _who(e.who)} for e in node.video.store.events(session.id)],
            "checks": CHECKS, "case": None}
        if session.case_id is not None and node.store.case_row(session.case_id) is not None:
            context["case"] = self._case(request, node, session)
        return render(request, "video.html", context)

    def _case(self, request: web.Request, node: Node, session: VideoSession) -> dict[str, Any]:
        # The desk's own view of a case; imported here because the desk imports this
        # module (a decision made in a session names it).
        from node.web.desk import review_view

        assert session.case_id is not None
        row = node.store.case_row(session.case_id)
        assert row is not None
        view = review_view(node, row, request.query.get("view", ""))
        case_id = quote(session.case_id)
        base = {**view, "page": f"/video/{session.id}",
                "href": (f"/desk/cases/{case_id}" if session.role == "callee"
                         else f"/window/cases/{case_id}"),
                "state_zh": STATE_NAMES_ZH.get(row["state"], row["state"]),
                "reviewing": row["role"] == "handling" and row["state"] in (
                    "received", "supplied", "supplement_requested"),
                "can_accept": row["role"] == "handling" and row["state"] in ("received", "supplied"),
                "promised": "", "checked": [r for r in view["receipts"]
                                            if r["kind"] == "video_checked"]}
        if base["can_accept"]:
            case = node.engine.load_case(session.case_id)
            base["promised"] = case.promised_date_from(node.clock()) if case else ""
        return base

    async def signaling(self, request: web.Request, node: Node, session: VideoSession,
                         account: Account) -> web.StreamResponse:
        """The browser's signaling socket: session states out; ready, sdp, ice and
        hangup in, passed on to the other browser through the two nodes."""
        if foreign(request):
            return web.json_response({"error": "不接受来自其他网站的连接。"}, status=403)
        if not takes_part(session, account):
            return web.json_response({"error": "您不是本会话的参加人。"}, status=403)
        ws = web.WebSocketResponse(heartbeat=15.0, max_msg_size=128 * 1024)
        await ws.prepare(request)
        sockets = request.app[SOCKETS].sockets
        sockets.add(ws)

        async def send(message: dict[str, Any]) -> None:
            if not ws.closed:
                await ws.send_str(json.dumps(message, ensure_ascii=False))

        detach = node.video.attach(session.id, send)
        try:
            await send(node.video.state_message(node.video.store.get(session.id) or session))
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    break
                with contextlib.suppress(ValueError):
                    await node.video.from_browser(session.id, json.loads(message.data),
                                                  by=account.username)
        finally:
            detach()
            sockets.discard(ws)
        return ws

    async def join(self, request: web.Request, node: Node, session: VideoSession,
                    account: Account) -> web.StreamResponse:
        try:
            await node.video.join(session.id, label=f"{node.config.name}审核席位",
                                  by=account.username)
        except VideoError as exc:
            return error_page(request, 409, "未能接入", exc.zh, "请返回视频窗口列表刷新后再试。")
        raise web.HTTPSeeOther(f"/video/{session.id}")

    async def end(self, request: web.Request, node: Node, session: VideoSession,
                   account: Account) -> web.StreamResponse:
        await node.video.end(session.id, by=account.username)
        raise web.HTTPSeeOther(f"/video/{session.id}")

    async def check(self, request: web.Request, node: Node, session: VideoSession,
                     account: Account) -> web.StreamResponse:
        """身份核验 / 材料核验 in the session: a ``video_check`` step in both chains."""
        form = await request.post()
        check = str(form.get("check", ""))
        if session.role != "callee" or session.case_id is None or check not in CHECKS:
            return error_page(request, 400, "无法记录核验",
                              "只有办理地审核员能在关于办件的视频会话中记录核验结果。",
                              "请返回会话页面，使用页面上的“记录核验结果”按钮。")
        if session.state != "active":
            return error_page(request, 409, "会话未在进行", "视频核验须在会话进行中记录。",
                              "请先接入会话，与申请人视频核验后再记录。")
        materials = tuple(str(m)[:200] for m in form.getall("material", []) if str(m).strip())
        body = b.VideoCheck(session=session.id, check=check,  # type: ignore[arg-type]
                            confirmed=form.get("confirmed") == "yes", materials=materials[:100],
                            note=str(form.get("note", ""))[:2000], at=node.clock(),
                            reviewer=account.display_name)
        result = await node.command(Command(session.case_id, "video_check", body))
        if result.outcome != "applied":
            why = result.reason.zh if result.reason else "节点拒绝了本次操作"
            return error_page(request, 409, "未能记录核验", f"办件当前状态不允许记录视频核验（{why}）。",
                              "视频核验须在受理决定之前记录；请刷新页面查看办件的最新状态。")
        node.video.note(session.id, by=account.username, what=f"check:{check}")
        raise web.HTTPSeeOther(f"/video/{session.id}?done={check}")

    # ------------------------------------------------------------ helpers

    def in_session(self, handler: SessionHandler) -> Handler:
        """A handler of one session's route, given the node, the session and the account
        (or the page saying there is no such session or that it is not this account's)."""
        async def handle(request: web.Request) -> web.StreamResponse:
            session = self._session(request)
            if isinstance(session, web.Response):
                return session
            return await handler(request, self.node(request), session, _account(request))
        return handle

    def _session(self, request: web.Request) -> VideoSession | web.Response:
        node = self.node(request)
        session_id = request.match_info["session"]
        session = node.video.store.get(session_id) if SESSION.match(session_id) else None
        if session is None:
            return error_page(request, 404, "没有这个视频会话", "本节点没有这个远程视频会话。",
                              "请返回视频窗口列表，从列表中打开会话。")
        account = _account(request)
        if session.role == "callee" and "reviewer" not in account.roles:
            return error_page(request, 403, "无权进入此会话", "办理地的视频会话由审核员接入。",
                              "如工作需要，请联系本节点管理员为您的账户添加审核员角色。")
        if session.role == "caller" and "clerk" not in account.roles:
            return error_page(request, 403, "无权进入此会话", "收件地的视频会话由窗口收件员发起和参加。",
                              "如工作需要，请联系本节点管理员为您的账户添加窗口收件员角色。")
        return session

    @staticmethod
    def _row(session: VideoSession) -> dict[str, Any]:
        return {"id": session.id, "person": session.started_by if session.role == "caller"
                else session.joined_by, "role": session.role, "state": session.state,
                "state_zh": STATES_ZH[session.state],
                "outcome_zh": OUTCOMES.get(session.outcome or "", ""),
                "peer": session.peer, "peer_name": region_name(session.peer),
                "case_id": session.case_id, "topic": session.topic,
                "caller_label": session.caller_label, "callee_label": session.callee_label,
                "created": clock_text(session.created_at),
                "joined": clock_text(session.joined_at) if session.joined_at else "",
                "ended": clock_text(session.ended_at) if session.ended_at else ""}


def _account(request: web.Request) -> Account:
    account = account_of(request)
    assert account is not None  # every route is behind require()
    return account


def _who(who: str) -> str:
    if who.startswith("peer:"):
        return region_name(who[5:])
    return {"node": "节点"}.get(who, who)


def _event_zh(what: str) -> str:
    if what.startswith("ended:"):
        return f"会话结束（{OUTCOMES.get(what[6:], what[6:])}）"
    if what.startswith("check:"):
        return f"已记录{CHECKS.get(what[6:], what[6:])}"
    if what.startswith("media:"):
        return {"media:connected": "音视频已接通",
                "media:reconnecting": "网络中断，正在重新连接"}.get(what, what)
    return {"created": "发起会话", "joined": "对方已接入"}.get(what, what)
