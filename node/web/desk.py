"""The handling region's desk: 待办队列, 办件审核 (受理 / 补正 / 不予受理), 部门办理, live.

Theory of operation
-------------------
The reviewer (审核员) works the cases that partners' windows sent here: the queue
shows each one's clock — the 5-working-day 补正 notice of 行政许可法 §32 (timer
``notice``, from the window's receipt time), the promised completion date (timer
``promise``, stopped while a 特别程序 runs) — most urgent first. A case page shows
the application, its scans in the page (decrypted as they stream out, like
``GET /api/materials/{object}``) and both receipt chains, and offers the three
first-review decisions. 补正 is offered once (一次性告知): once the case has left
``received`` the machine refuses a second request and the page no longer shows it.

After 受理 the node forwards the case as it always does (``Node._start_forwarding``);
with the built-in department desk (``[[departments]] kind = "desk"`` without
``auto_conclude``) it then waits in ``processing`` for the department's staff
(部门办理员), whose pages here record 办理环节, 特别程序 (suspend / resume) and the
办结 outcome. Every act is a ``Command`` on the node; the forms become bodies in
``desk_forms``. Pages are server-rendered with post/redirect/get; ``desk.js``
follows a socket and swaps in what changed, as the window's pages do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from urllib.parse import quote

from aiohttp import web

from node.app import Node
from node.departments import Desk
from node.engine import Command, Result
from node.web import desk_forms as forms
from node.web.auth import account_of, require
from node.web.case_view import case_view
from node.web.live import ERRORS_SUMMARY, Live, attach, file_size, push, region_name
from node.web.notices import notice_links
from node.web.render import error_page, render
from node.web.video import session_for_decision
from protocol import bodies as b
from protocol.calendar import working_days_between
from protocol.codes import (
    BUSINESS_ACTIONS,
    DELIVERY_MODES,
    MATERIAL_NECESSITY,
    OUTCOME_RESULTS,
    SPECIAL_PROCEDURES,
)
from protocol.errors import ProtocolError
from protocol.fields import clock_text, date_of
from protocol.states import STATE_NAMES_ZH
from protocol.wire import decode_envelope, decode_payload

__all__ = ["add_desk_routes", "review_view"]

#: The reviewer's states (初审 still to do or waiting on the window) and the department's.
REVIEW_STATES = ("received", "supplied", "supplement_requested")
DEPARTMENT_STATES = ("processing", "suspended")
OPEN_STATES = (*REVIEW_STATES, "forwarding", "dead_letter", *DEPARTMENT_STATES, "concluded")
FILTERS = {"todo": "待初审（含已补正）", "open": "全部未办结", "all": "全部",
           **{s: STATE_NAMES_ZH[s] for s in OPEN_STATES}}
#: Clock levels, most urgent first (the queue's sort order and its colours).
LEVELS = ("overdue", "soon", "act", "ok", "waiting", "stopped", "none")
VIEWABLE = {"application/pdf": "pdf", "image/jpeg": "image", "image/png": "image"}
ALL = "*"  # the queue's sockets follow every case
DECISIONS = {"accept": "受理", "supplement": "要求补正", "refuse": "不予受理"}
DEPARTMENT_ACTIONS = {"step": "登记办理环节", "suspend": "启动特别程序", "resume": "结束特别程序",
                      "conclude": "办结"}


def add_desk_routes(app: web.Application, node_key: web.AppKey[Node]) -> None:
    """The desk pages, the scan viewer, the live sockets and their lifetimes."""
    attach(app, node_key, LIVE, DeskLive())
    pages = DeskPages(node_key, LIVE)
    reviewer = require("reviewer", own_region=True)
    department = require("department", own_region=True)
    staff = require("reviewer", "department", "operator", own_region=True)  # may look
    app.router.add_get("/desk", reviewer(pages.queue))
    app.router.add_get("/desk/live", staff(pages.queue_live))
    app.router.add_get("/desk/cases/{case_id}", staff(pages.review_page))
    app.router.add_get("/desk/cases/{case_id}/live", staff(pages.case_live))
    app.router.add_get("/desk/cases/{case_id}/materials/{object}", staff(pages.material))
    app.router.add_post("/desk/cases/{case_id}/{action}", reviewer(pages.decide))
    app.router.add_get("/dept", department(pages.department_queue))
    app.router.add_get("/dept/cases/{case_id}", department(pages.department_page))
    app.router.add_post("/dept/cases/{case_id}/{action}", department(pages.department_act))


class DeskLive(Live):
    """The window's hub, and sockets following every case (the queues)."""

    def wake(self, result: Result) -> None:
        super().wake(result)
        for event in self.waiting.get(ALL, ()):
            event.set()


#: At module level: an ``AppKey`` names itself after the module that makes it.
LIVE = web.AppKey("desk_live", DeskLive)


# ---------------------------------------------------------------- clocks


@dataclasses.dataclass(frozen=True)
class Clock:
    level: str  # one of LEVELS
    text: str
    due: int  # ms, for sorting; 0 when there is none

    @property
    def rank(self) -> tuple[int, int]:
        return LEVELS.index(self.level), self.due or 1 << 62


def clock_of(node: Node, state: str, snapshot: dict[str, Any], now: int) -> Clock:
    """What is running on a handling case, as the desk reads it."""
    calendar = node.engine.calendar
    today = date_of(now)
    timers: dict[str, int] = snapshot.get("timers") or {}

    def left(due_day: dt.date) -> tuple[str, int]:
        if today > due_day:
            late = working_days_between(calendar, due_day, today)
            return "overdue", late
        days = working_days_between(calendar, today, due_day)
        return ("soon" if days <= 1 else "ok"), days

    if "notice" in timers:
        due_day = date_of(timers["notice"])
        level, days = left(due_day)
        text = (f"补正告知期限 {due_day} 已过 {days} 个工作日（逾期视为受理）" if level == "overdue"
                else f"补正告知期限 {due_day}，剩 {days} 个工作日")
        return Clock(level, text, timers["notice"])
    promised = snapshot.get("promised_date")
    if state == "suspended":
        since = snapshot.get("suspended_on") or ""
        return Clock("stopped", f"特别程序中，承诺时限自 {since} 起暂停（原承诺办结 {promised}）", 0)
    if promised and state in ("forwarding", "dead_letter", "processing"):
        due_day = dt.date.fromisoformat(promised)
        level, days = left(due_day)
        text = (f"已超承诺办结时限 {days} 个工作日（承诺 {promised}）" if level == "overdue"
                else f"承诺办结 {promised}，剩 {days} 个工作日")
        return Clock(level, text, timers.get("promise", 0) or now)
    if state == "supplied":
        return Clock("act", "已补正，请作出受理或不予受理决定", 0)
    if state == "supplement_requested":
        return Clock("waiting", "已一次性告知补正，等待收件地补交材料", 0)
    return Clock("none", "", 0)


# ---------------------------------------------------------------- pages


@dataclasses.dataclass
class DeskPages:
    node_key: web.AppKey[Node]
    live_key: web.AppKey[DeskLive]

    def node(self, request: web.Request) -> Node:
        return request.app[self.node_key]

    # ------------------------------------------------------------ queues

    def _rows(self, node: Node, states: tuple[str, ...] | None, query: str) -> list[dict[str, Any]]:
        now = node.clock()
        rows = []
        for row in node.store.cases(limit=2000):
            if row["role"] != "handling" or (states is not None and row["state"] not in states):
                continue
            name = self._matter_name(node, row["matter"])
            if query and not any(query.lower() in (text or "").lower()
                                 for text in (row["case_id"], row["window_no"], name)):
                continue
            snapshot = node.store.case_snapshot(row["case_id"]) or {}
            clock = clock_of(node, row["state"], snapshot, now)
            received = snapshot.get("received_at")
            rows.append({**row, "matter_name": name, "clock": clock,
                         "state_zh": STATE_NAMES_ZH.get(row["state"], row["state"]),
                         "peer_name": region_name(row["peer"]),
                         "received": clock_text(received) if received else "",
                         "arrived": clock_text(row["created_at"])})
        rows.sort(key=lambda r: (r["clock"].rank, r["created_at"]))
        return rows

    def _matter_name(self, node: Node, code: str | None) -> str:
        entry = node.catalog.entry(node.region, code) if code else None
        return entry.name if entry is not None else (code or "")

    async def queue(self, request: web.Request) -> web.StreamResponse:
        """待办队列: the handling-side cases, most urgent first."""
        node = self.node(request)
        chosen = request.query.get("state", "todo")
        chosen = chosen if chosen in FILTERS else "todo"
        states: tuple[str, ...] | None = {"todo": ("received", "supplied"), "open": OPEN_STATES,
                                          "all": None}.get(chosen, (chosen,))
        query = request.query.get("q", "").strip()[:100]
        rows = self._rows(node, states, query)
        return render(request, "desk_queue.html", {
            "rows": rows, "filters": FILTERS, "chosen": chosen, "q": query,
            "levels": _level_counts(rows), "title": "待办队列", "case_base": "/desk/cases",
            "form_action": "/desk"})

    async def department_queue(self, request: web.Request) -> web.StreamResponse:
        """部门办理: the cases forwarded to the department desk."""
        node = self.node(request)
        query = request.query.get("q", "").strip()[:100]
        chosen = request.query.get("state", "")
        states = (chosen,) if chosen in (*DEPARTMENT_STATES, "forwarding", "concluded") \
            else DEPARTMENT_STATES
        rows = self._rows(node, states, query)
        filters = {"": "办理中及特别程序中", "processing": STATE_NAMES_ZH["processing"],
                   "suspended": STATE_NAMES_ZH["suspended"],
                   "forwarding": STATE_NAMES_ZH["forwarding"],
                   "concluded": STATE_NAMES_ZH["concluded"]}
        return render(request, "desk_queue.html", {
            "rows": rows, "filters": filters, "chosen": chosen, "q": query,
            "levels": _level_counts(rows), "title": "部门办理", "case_base": "/dept/cases",
            "form_action": "/dept", "department": self._department_name(node),
            "desk_in_use": self._desk_in_use(node)})

    async def queue_live(self, request: web.Request) -> web.StreamResponse:
        def state() -> dict[str, Any]:
            node = self.node(request)
            newest = node.store.cases(limit=1)
            return {"updated": newest[0]["updated_at"] if newest else 0,
                    "count": sum(node.store.count_states().values())}
        return await push(request, request.app[self.live_key], (ALL,), state)

    # ------------------------------------------------------------ 办件审核

    async def review_page(self, request: web.Request) -> web.StreamResponse:
        return self._review(request, {}, {}, None)

    def _case_row(self, request: web.Request) -> dict[str, Any] | web.Response:
        node = self.node(request)
        case_id = request.match_info["case_id"]
        row = node.store.case_row(case_id)
        if row is None or row["role"] != "handling":
            return error_page(request, 404, "没有这个办件",
                              f"本节点没有由{node.config.name}办理、编号为 {case_id} 的办件。",
                              "请回到待办队列选择办件；编号是从回执上抄录的，请核对后再试。")
        return row

    def _review(self, request: web.Request, values: dict[str, Any], errors: dict[str, str],
                form_name: str | None, status: int = 200) -> web.Response:
        row = self._case_row(request)
        if isinstance(row, web.Response):
            return row
        node = self.node(request)
        account = account_of(request)
        assert account is not None
        view = self._view(node, row, request.query.get("view", ""))
        case = node.engine.load_case(row["case_id"])
        now = node.clock()
        promised = case.promised_date_from(now) if case is not None else ""
        notice = {"accept": "已受理，受理决定已发送至收件地；办件正在流转至承办部门。",
                  "supplement": "已一次性告知补正，补正通知已发送至收件地。",
                  "refuse": "已作出不予受理决定，决定已发送至收件地。"}.get(
                      request.query.get("done", ""))
        return render(request, "desk_case.html", {
            **view, "notice": notice, "values": values, "errors": errors, "form_name": form_name,
            "summary": ERRORS_SUMMARY.format(n=len(errors), button=DECISIONS.get(
                form_name or "", "提交")) if errors else None,
            "promised": promised, "can_decide": "reviewer" in account.roles,
            "notices": notice_links(node, row, view),
            "live": f"/desk/cases/{quote(row['case_id'])}/live",
            "page": f"/desk/cases/{quote(row['case_id'])}"}, status=status)

    def _view(self, node: Node, row: dict[str, Any], shown: str) -> dict[str, Any]:
        return review_view(node, row, shown)

    def _department_name(self, node: Node) -> str:
        return node.departments[0].name if node.departments else "承办部门"

    def _desk_in_use(self, node: Node) -> bool:
        """Whether the department works here: the built-in desk, not deciding by itself."""
        return bool(node.departments) and isinstance(node.departments[0], Desk) \
            and not node.departments[0].auto_conclude

    async def decide(self, request: web.Request) -> web.StreamResponse:
        """受理 / 补正 / 不予受理, as commands; a refused form comes back with its problems."""
        row = self._case_row(request)
        if isinstance(row, web.Response):
            return row
        node = self.node(request)
        action = request.match_info["action"]
        if action not in DECISIONS:
            return error_page(request, 404, "没有这个操作", f"办件审核没有“{action}”这一操作。",
                              "请返回办件审核页，使用页面上的按钮操作。")
        account = account_of(request)
        assert account is not None
        values = await _values(request)
        errors: dict[str, str] = {}
        now = node.clock()
        body: Any
        if action == "accept":
            case = node.engine.load_case(row["case_id"])
            promised = case.promised_date_from(now) if case is not None else ""
            body = forms.accept(values, errors, now, promised, account.display_name)
        elif action == "supplement":
            if row["state"] != "received":
                errors["form"] = ("补正只能一次性告知：本件已告知过补正或已作出决定，不能再次要求补正。"
                                  "请根据补正后的材料作出受理或不予受理决定。")
                return self._review(request, values, errors, action, status=409)
            raw = case_view(node, row)["application"]
            entry = node.catalog.entry(node.region, raw.matter.code, raw.matter.version) \
                if raw else None
            body = forms.supplement_request(entry, values, errors, now, account.display_name)
        else:
            body = forms.refuse(values, errors, now, account.display_name)
        if errors or body is None:
            return self._review(request, values, errors, action, status=400)
        event = {"accept": "accept", "supplement": "request_supplement", "refuse": "refuse"}[action]
        session = session_for_decision(node, row["case_id"], values.get("session", ""))
        if session is not None:  # decided in a virtual-window session: the receipt names it
            body = body.model_copy(update={"session": session})
        result = await node.command(Command(row["case_id"], event, body))
        if result.outcome != "applied":
            state = STATE_NAMES_ZH.get(row["state"], row["state"])
            return self._review(request, values, {"form": (
                f"办件当前状态为“{state}”，不能{DECISIONS[action]}（{result.detail or result.outcome}）。"
                f"请刷新页面查看最新状态后再操作。")}, action, status=409)
        if session is not None:
            node.video.note(session, by=account.username, what=f"decision:{action}")
            raise web.HTTPSeeOther(f"/video/{session}?done={action}")
        raise web.HTTPSeeOther(f"/desk/cases/{quote(row['case_id'])}?done={action}")

    # ------------------------------------------------------------ 部门办理

    async def department_page(self, request: web.Request) -> web.StreamResponse:
        return self._department(request, {}, {}, None)

    def _department(self, request: web.Request, values: dict[str, Any], errors: dict[str, str],
                    form_name: str | None, status: int = 200) -> web.Response:
        row = self._case_row(request)
        if isinstance(row, web.Response):
            return row
        node = self.node(request)
        view = self._view(node, row, request.query.get("view", ""))
        notice = {"step": "已登记办理环节，进展已发送至收件地。",
                  "suspend": "已启动特别程序，承诺办结时限暂停计算。",
                  "resume": "已结束特别程序，承诺办结日期已顺延。",
                  "conclude": "已办结，办理结果已发送至收件地。"}.get(request.query.get("done", ""))
        return render(request, "desk_department.html", {
            **view, "notice": notice, "values": values, "errors": errors, "form_name": form_name,
            "summary": ERRORS_SUMMARY.format(n=len(errors), button=DEPARTMENT_ACTIONS.get(
                form_name or "", "提交")) if errors else None,
            "actions": BUSINESS_ACTIONS, "specials": SPECIAL_PROCEDURES,
            "results": OUTCOME_RESULTS, "delivery_modes": DELIVERY_MODES,
            "running": _running_special(view["progress"]),
            "desk_in_use": self._desk_in_use(node),
            "live": f"/desk/cases/{quote(row['case_id'])}/live",
            "page": f"/dept/cases/{quote(row['case_id'])}"}, status=status)

    async def department_act(self, request: web.Request) -> web.StreamResponse:
        row = self._case_row(request)
        if isinstance(row, web.Response):
            return row
        node = self.node(request)
        action = request.match_info["action"]
        if action not in DEPARTMENT_ACTIONS:
            return error_page(request, 404, "没有这个操作", f"部门办理没有“{action}”这一操作。",
                              "请返回部门办理页，使用页面上的按钮操作。")
        account = account_of(request)
        assert account is not None
        values = await _values(request)
        errors: dict[str, str] = {}
        if not self._desk_in_use(node):
            errors["form"] = (f"{self._department_name(node)}不在本节点的部门办理页面办理"
                              f"（由其自有系统办理或自动办结），此处不能登记。请在该部门的系统中办理。")
            return self._department(request, values, errors, action, status=409)
        now, handler = node.clock(), account.display_name
        body: b.Progress | b.Outcome | None
        if action == "step":
            body = forms.step(values, errors, now, handler)
        elif action == "suspend":
            body = forms.suspend(values, errors, now, handler)
        elif action == "resume":
            running = _running_special(_progress(node, row["case_id"]))
            body = forms.resume(running.special if running else None, values, errors, now,
                                handler)
        else:
            body = forms.conclude(values, errors, now, handler, self._department_name(node))
        if errors or body is None:
            return self._department(request, values, errors, action, status=400)
        event = "conclude" if action == "conclude" else action
        result = await node.command(Command(row["case_id"], event, body))
        if result.outcome != "applied":
            state = STATE_NAMES_ZH.get(row["state"], row["state"])
            return self._department(request, values, {"form": (
                f"办件当前状态为“{state}”，不能{DEPARTMENT_ACTIONS[action]}"
                f"（{result.detail or result.outcome}）。请刷新页面查看最新状态后再操作。")},
                action, status=409)
        raise web.HTTPSeeOther(f"/dept/cases/{quote(row['case_id'])}?done={action}")

    # ------------------------------------------------------------ scans

    async def material(self, request: web.Request) -> web.StreamResponse:
        """One scan of a case, decrypted as it streams out, to be shown in the page."""
        row = self._case_row(request)
        if isinstance(row, web.Response):
            return row
        node = self.node(request)
        case_id, obj = row["case_id"], request.match_info["object"]
        held = node.store.material(obj)
        if held is None or held["case_id"] != case_id:
            return error_page(request, 404, "没有这份材料", f"办件 {case_id} 没有这份扫描件。",
                              "请回到办件审核页，从材料清单中打开扫描件。")
        if held["state"] == "to_fetch":
            return error_page(request, 409, "材料尚未传到",
                              "这份扫描件还在从收件地传输，尚未到达本节点。",
                              "请稍候一两分钟后刷新页面再查看；长时间未到请联系本节点运维人员。")
        name = quote(held["name"] or obj)
        response = web.StreamResponse(headers={
            "Content-Type": held["media_type"],
            "Content-Disposition": f"inline; filename*=UTF-8''{name}",
            # Shown inside this site's own pages only, and nothing in it may run.
            "Content-Security-Policy": "default-src 'none'; img-src 'self'; "
                                       "style-src 'unsafe-inline'; frame-ancestors 'self'",
            "X-Frame-Options": "SAMEORIGIN", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin", "Cache-Control": "no-store"})
        response.content_length = held["size"]
        await response.prepare(request)
        async for chunk in node.materials.plaintext(held):
            await response.write(chunk)
        await response.write_eof()
        return response

    # ------------------------------------------------------------ live

    async def case_live(self, request: web.Request) -> web.StreamResponse:
        node = self.node(request)
        case_id = request.match_info["case_id"]
        if node.store.case_row(case_id) is None:
            return web.json_response({"error": "没有这个办件。"}, status=404)

        def state() -> dict[str, Any] | None:
            row = node.store.case_row(case_id)
            if row is None:
                return None
            return {"state": row["state"], "state_zh": STATE_NAMES_ZH.get(row["state"], row["state"]),
                    "receipts": len(node.store.receipts(case_id)), "updated": row["updated_at"]}
        return await push(request, request.app[self.live_key], (case_id,), state)


# ---------------------------------------------------------------- helpers


async def _values(request: web.Request) -> dict[str, Any]:
    form = await request.post()
    return {k: v.strip()[:2000] for k, v in form.items()
            if isinstance(v, str) and k != "csrf_token"}


def _bodies(node: Node, case_id: str, kind: str) -> list[Any]:
    """Every body of one message kind in a case, in order (both directions)."""
    found = []
    for wire, _, plaintext in node.store.envelopes(case_id):
        try:
            envelope = decode_envelope(wire)
            if envelope.kind != kind:
                continue
            body, _ = decode_payload(envelope.kind, plaintext)
        except ProtocolError:
            continue
        found.append(body)
    return found


def _newest(node: Node, case_id: str, kind: str) -> Any:
    found = _bodies(node, case_id, kind)
    return found[-1] if found else None


def _progress(node: Node, case_id: str) -> list[dict[str, Any]]:
    return [{"body": p, "when": clock_text(p.at), "action": BUSINESS_ACTIONS.get(p.action, ""),
             "event": p.event} for p in _bodies(node, case_id, "progress")]


def _running_special(progress: list[dict[str, Any]]) -> b.Progress | None:
    """The 特别程序 started and not yet ended, if any."""
    running = None
    for item in progress:
        if item["event"] == "suspend":
            running = item["body"]
        elif item["event"] == "resume":
            running = None
    return running


def _level_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(LEVELS, 0)
    for row in rows:
        counts[row["clock"].level] += 1
    return counts


def review_view(node: Node, row: dict[str, Any], shown: str) -> dict[str, Any]:
    """The desk's view of a case: application, scans (``shown`` opened in the viewer),
    clocks, progress; also the virtual-window session page's."""
    view = case_view(node, row)
    application: b.Application | None = view["application"]
    entry = node.catalog.entry(node.region, application.matter.code,
                               application.matter.version) if application else None
    labels = {f.name: f.label for f in entry.form} if entry else {}
    form = [{"label": labels.get(v.field, v.field), "value": v.value}
            for v in (application.form if application else ())]
    refs = list(application.materials if application else ())
    supplied = view["supplied"]
    refs += [ref.model_copy(update={"name": f"{ref.name}（补正）"})
             for ref in (supplied.materials if supplied else ())]
    materials, viewer = [], None
    case_id = row["case_id"]
    for ref in refs:
        item: dict[str, Any] = {"name": ref.name, "mode": ref.mode, "count": ref.count,
                                "trust": ref.trust, "object": ref.object,
                                "verified_by": ref.verified_by}
        if ref.object is not None:
            held = node.store.material(ref.object)
            item["arrived"] = held is not None and held["state"] != "to_fetch"
            item["kind"] = VIEWABLE.get(ref.media_type or "", "")
            item["size"] = file_size(ref.size or 0)
            item["href"] = f"/desk/cases/{quote(case_id)}/materials/{ref.object}"
            if ref.object == shown:
                viewer = item
        materials.append(item)
    progress = _progress(node, case_id)
    catalog = [{"i": i, "name": m.name, "necessity": MATERIAL_NECESSITY[m.necessity],
                "standard": m.standard}
               for i, m in enumerate(entry.materials if entry else ())]
    forwarded = _newest(node, case_id, "forwarded")
    return {**view, "entry": entry, "form_values": form, "materials": materials,
            "viewer": viewer, "progress": progress, "catalog": catalog,
            "forwarded": forwarded,
            "forwarded_at": clock_text(forwarded.forwarded_at) if forwarded else "",
            "department_name": (node.departments[0].name if node.departments else "承办部门"),
            "clock": clock_of(node, row["state"], node.store.case_snapshot(case_id) or {},
                              node.clock()),
            "deferred": application.deferred if application else ()}
