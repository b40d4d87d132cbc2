"""The 通办专窗 clerk's pages: 事项查询, 收件登记, 办件详情 (补正, 撤回, 送达, 好差评),
多地联办 (联办收件, 联办件), live.

Theory of operation
-------------------
Every page is server-rendered and every change is a plain form POST with the
session's CSRF token that redirects back (post/redirect/get); a refused form is
rendered again with each problem next to its field and everything typed kept.
Scripts only add comfort: ``window_upload.js`` streams scans to ``/window/scans``
as they are dropped (with progress) and puts their object names in the form, and
``window_case.js`` follows the case over a WebSocket.

**收件登记** takes the matter the clerk picked (region, 实施编码, version as shown),
checks the form its catalog entry defines with the entry's own rules
(``FormField.check``), the material checklist (必要 materials collected, scanned or
— where the entry allows 容缺 — pledged with a due date), 身份核验 and 形式审查,
and routes the applicant's location (``Node.route``) to make sure the chosen region
is the one that handles it there. Then ``collect`` and ``submit`` run as two
commands, as ``POST /api/cases`` does.

**撤回** is offered while the collecting side may still withdraw
(``protocol.joint.withdrawable``, from the transitions table); the page then shows
撤回中, 已撤回, or 撤回未获同意 when the handling side had already decided (its
``withdrawal_refused`` receipt, or a withdrawal the table no longer allows).

**多地联办**: 联办收件 asks once for the applicant, the union (by name) of the form
fields and materials of the entries offering the matter as 多地联办, and one place per
location; each routed part is checked with its own entry's rules and all are
collected in one batch (``node.joint_intake``, as ``POST /api/joints``). The 联办件
page follows the parts live over the same kind of socket.

**Live**: ``Node.observers`` is called with every result once it is on disk; the
``Live`` hub wakes the sockets that follow that case, and each sends the case's
state when it changed. Sockets are closed at shutdown (``on_shutdown``) and the
observer is removed at clean-up.

Only the 窗口收件员 of this node's region may collect and record; reviewers and
operators of the region may look at a case's detail. The forms become protocol
bodies in ``window_forms``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from node.app import Node
from node.engine import Command
from node.joint_intake import collect_joint, joint_view
from node.materials import MaterialTooLarge
from node.store import Changes
from node.web import window_forms as forms
from node.web.auth import account_of, require
from node.web.case_view import case_view, live_state
from node.web.live import ERRORS_SUMMARY, Live, attach, file_size, push, region_name
from node.web.notices import notice_links
from node.web.render import error_page, render
from protocol import bodies as b
from protocol import decode
from protocol.catalog import CatalogEntry
from protocol.codes import (
    DAY_UNITS,
    DELIVERY_MODES,
    EVALUATION_CHANNELS,
    ID_TYPES,
    IDENTITY_METHODS,
    MATERIAL_NECESSITY,
    SATISFACTION,
    SERVICE_OBJECTS,
    TONGBAN_MODES,
)
from protocol.fields import clock_text, date_of
from protocol.joint import JOINT_STATES_ZH, withdrawable
from protocol.routes import SignedRouteRefusal
from protocol.states import STATE_NAMES_ZH

__all__ = ["add_window_routes"]

#: Scans the window accepts (as ``POST /api/materials``).
SCAN_MEDIA = {"application/pdf": "PDF", "image/jpeg": "JPEG", "image/png": "PNG",
              "application/ofd": "OFD"}


def add_window_routes(app: web.Application, node_key: web.AppKey[Node]) -> None:
    """The window pages, the scan upload, the live socket and their lifetimes."""
    attach(app, node_key, LIVE, Live())
    pages = WindowPages(node_key, LIVE)
    clerk = require("clerk", own_region=True)
    staff = require("clerk", "reviewer", "operator", own_region=True)  # may look, not act
    app.router.add_get("/window/matters", clerk(pages.matters))
    app.router.add_get("/window/apply/{region}/{code}", clerk(pages.apply_page))
    app.router.add_post("/window/apply/{region}/{code}", clerk(pages.apply))
    app.router.add_post("/window/scans", clerk(pages.upload_scan))
    app.router.add_get("/window/cases/{case_id}", staff(pages.case_page))
    app.router.add_get("/window/cases/{case_id}/live", staff(pages.live))
    app.router.add_post("/window/cases/{case_id}/{action}", clerk(pages.case_action))
    app.router.add_get("/window/joint/{matter}", clerk(pages.joint_apply_page))
    app.router.add_post("/window/joint/{matter}", clerk(pages.joint_apply))
    app.router.add_get("/window/joints/{joint_id}", staff(pages.joint_page))
    app.router.add_get("/window/joints/{joint_id}/live", staff(pages.joint_live))


# ---------------------------------------------------------------- live updates


# ---------------------------------------------------------------- pages


@dataclasses.dataclass
class WindowPages:
    node_key: web.AppKey[Node]
    live_key: web.AppKey[Live]

    def node(self, request: web.Request) -> Node:
        return request.app[self.node_key]

    # ------------------------------------------------------------ 事项查询

    async def matters(self, request: web.Request) -> web.StreamResponse:
        node = self.node(request)
        query = request.query.get("q", "").strip()[:100]
        partners = _partners(node)
        region = request.query.get("region", "")
        region = region if region in partners else ""
        mode = request.query.get("mode", "proxy")
        mode = mode if mode in TONGBAN_MODES else ""
        hits = await asyncio.to_thread(node.catalog.search, query,
                                       regions=(region,) if region else (),
                                       mode=mode or None, limit=100)
        results = [{**hit, "region_name": partners.get(hit["region"]) or region_name(hit["region"]),
                    "modes_zh": "、".join(TONGBAN_MODES.get(m, m) for m in hit["modes"]),
                    "proxy": "proxy" in hit["modes"], "joint": "joint" in hit["modes"],
                    "basic_code": hit["code"].split("-", 1)[0]} for hit in hits]
        return render(request, "window_matters.html", {
            "q": query, "region_filter": region, "mode": mode, "partners": partners,
            "modes": TONGBAN_MODES, "results": results, "searched": "q" in request.query})

    # ------------------------------------------------------------ 收件登记

    async def apply_page(self, request: web.Request) -> web.StreamResponse:
        entry = self._entry(request)
        if isinstance(entry, web.Response):
            return entry
        return self._apply_form(request, entry, {}, {})

    def _entry(self, request: web.Request) -> CatalogEntry | web.Response:
        node = self.node(request)
        region, code = request.match_info["region"], request.match_info["code"]
        text = request.query.get("version", "")  # the version the form was filled against
        version = int(text) if text.isdigit() and len(text) < 8 else None
        entry = node.catalog.entry(region, code, version)
        if entry is None:
            return error_page(request, 404, "没有这个事项",
                              "通办圈的事项目录中没有这个事项（或它的这个版本），可能已被撤销或更新。",
                              "请回到“事项查询”重新查找并选择事项。")
        if "proxy" not in entry.modes or entry.status != "active":
            return error_page(request, 409, "该事项不能异地代收",
                              f"{entry.name}（{region_name(entry.region)}）不提供异地代收代办。",
                              "请告知申请人该事项的办理方式（全程网办或到办理地办理），"
                              "或回到“事项查询”选择其他事项。")
        return entry

    def _apply_form(self, request: web.Request, entry: CatalogEntry, values: dict[str, Any],
                    errors: dict[str, str], status: int = 200,
                    problem: str | None = None) -> web.Response:
        node = self.node(request)
        account = account_of(request)
        assert account is not None
        today = date_of(node.clock()).isoformat()
        materials = []
        for i, m in enumerate(entry.materials):
            materials.append({
                "i": i, "name": m.name, "necessity": m.necessity,
                "necessity_zh": MATERIAL_NECESSITY[m.necessity], "originals": m.originals,
                "copies": m.copies, "deferrable": m.deferrable, "standard": m.standard,
                "note": m.note,
                "collected": values.get(f"m{i}_collected") == "on",
                "mode": values.get(f"m{i}_mode", "paper_original" if m.originals else "paper_copy"),
                "count": values.get(f"m{i}_count", str(max(1, m.originals + m.copies))),
                "deferred": values.get(f"m{i}_deferred") == "on",
                "pledge": values.get(f"m{i}_pledge", "本人承诺在约定日期前补交该材料，逾期未补交的，"
                                                      "自愿承担相应责任。"),
                "due": values.get(f"m{i}_due", ""),
            })
        scans = self._scans(node, values.get("scans", []))
        shown = [{"name": f.name, "label": f.label, "kind": f.kind, "required": f.required,
                  "choices": f.choices, "help": f.help, "max_length": f.max_length,
                  "value": values.get(f"f_{f.name}", "")} for f in entry.form]
        return render(request, "window_apply.html", {
            "entry": entry, "handling_name": region_name(entry.region),
            "promised": f"{entry.promised_limit.days} 个{DAY_UNITS[entry.promised_limit.unit]}",
            "fields": shown, "materials": materials, "scans": scans, "values": values,
            "errors": errors, "problem": problem, "today": today,
            "summary": ERRORS_SUMMARY.format(n=len(errors), button="提交") if errors else None,
            "service_objects": SERVICE_OBJECTS, "id_types": ID_TYPES,
            "identity_methods": IDENTITY_METHODS, "paper_modes": forms.PAPER_MODES,
            "clerk": account.display_name, "scan_media": "、".join(SCAN_MEDIA.values()),
            "decides": entry.acceptance == "collecting_decides",
            "decisions": forms.DECISIONS}, status=status)

    def _scans(self, node: Node, objects: list[str]) -> list[dict[str, Any]]:
        rows = []
        for obj in objects:
            row = node.store.material(obj)
            if row is not None and row["state"] == "local" and not row["case_id"]:
                rows.append({"object": obj, "name": row["name"], "size": file_size(row["size"]),
                             "media": SCAN_MEDIA.get(row["media_type"], row["media_type"])})
        return rows

    async def apply(self, request: web.Request) -> web.StreamResponse:
        entry = self._entry(request)
        if isinstance(entry, web.Response):
            return entry
        node = self.node(request)
        account = account_of(request)
        assert account is not None
        form = await request.post()
        values: dict[str, Any] = {k: v.strip()[:2000] for k, v in form.items()
                                  if isinstance(v, str) and k not in ("csrf_token", "scans")}
        scans = [s for s in form.getall("scans", []) if isinstance(s, str)]
        scans += await self._plain_uploads(node, form, "scan_file", values.get("scan_for", ""))
        values["scans"] = scans
        errors: dict[str, str] = {}
        built = forms.application(node, entry, values, errors, account.display_name)
        decision = forms.window_decision(node, entry, values, errors, node.clock(),
                                         account.display_name) \
            if entry.acceptance == "collecting_decides" else None
        if errors or built is None:
            return self._apply_form(request, entry, values, errors, status=400)
        handling = self._route(node, entry, values, errors)
        if handling is None:
            return self._apply_form(request, entry, values, errors, status=400)
        result = await node.command(Command(None, "collect", built, peer=handling))
        if result.outcome != "applied" or result.case_id is None:
            return self._apply_form(request, entry, values, {}, status=422, problem=(
                f"收件未成功（{result.detail or result.outcome}）。所填内容已保留，请核对后重新提交；"
                f"如仍不成功，请联系本节点运维人员。"))
        if decision is not None:  # 异地受理、远程办理: the window decides before sending
            done = await self._window_decide(node, result.case_id, built, decision)
            raise web.HTTPSeeOther(f"/window/cases/{result.case_id}?done={done}")
        sent = await node.command(Command(result.case_id, "submit"))
        done = "submitted" if sent.outcome == "applied" else "collected"
        raise web.HTTPSeeOther(f"/window/cases/{result.case_id}?done={done}")

    @staticmethod
    async def _window_decide(node: Node, case_id: str, application: b.Application | None,
                             decision: Any) -> str:
        """受理 (sent with the application, ``submit_decided``), 一次性告知补正 or 不予受理
        at the window; the ``done`` notice to show."""
        if isinstance(decision, b.Accept):
            if application is None:
                raw = node.store.body(case_id, "application")
                application = b.Application.model_validate(decode(raw)) if raw else None
            assert application is not None
            decided = application.model_copy(update={"window_decision": decision})
            sent = await node.command(Command(case_id, "submit_decided", decided))
            return "window_accept" if sent.outcome == "applied" else "window_failed"
        event = "window_supplement" if isinstance(decision, b.SupplementRequest) \
            else "window_refuse"
        done = await node.command(Command(case_id, event, decision))
        return event if done.outcome == "applied" else "window_failed"

    def _route(self, node: Node, entry: CatalogEntry, values: dict[str, Any],
               errors: dict[str, str]) -> str | None:
        """The handling region: the chosen entry's, once routing agrees for the
        applicant's location."""
        location = values.get("a_region", "")
        routes = node.route(entry.basic_code, [location])
        if isinstance(routes, SignedRouteRefusal):
            errors["a_region"] = (f"{routes.refusal.zh}。请核对申请人属地代码；属地确实不在通办范围的，"
                                  f"请告知申请人到属地办理。")
            return None
        handling = routes[0].handling
        if handling != entry.region:
            errors["a_region"] = (f"按申请人属地 {location}，该事项应由{region_name(handling)}"
                                  f"（{handling}）办理，不是{region_name(entry.region)}。"
                                  f"请回到“事项查询”选择{region_name(handling)}的该事项。")
            return None
        return handling

    async def _plain_uploads(self, node: Node, form: Any, field: str, name: str) -> list[str]:
        """Scans sent with the form itself (no script): stored as the streamed ones are."""
        objects = []
        for part in form.getall(field, []):
            if isinstance(part, web.FileField) and part.filename:
                row = await _intake(node, _file_pieces(part.file), name or part.filename,
                                    part.content_type)
                if isinstance(row, dict):
                    objects.append(str(row["object"]))
        return objects

    async def upload_scan(self, request: web.Request) -> web.StreamResponse:
        """Stream one scan in (``?name=`` the material it is for): encrypted on arrival."""
        node = self.node(request)
        name = request.query.get("name", "").strip()
        if not 1 <= len(name) <= 200:
            return _json_error(400, "请先选择这份扫描件对应的材料，再上传。")
        row = await _intake(node, request.content.iter_chunked(1 << 16), name,
                            request.content_type)
        if isinstance(row, str):
            return _json_error(413 if "上限" in row else 415, row)
        return web.json_response({"object": row["object"], "name": name,
                                  "size": file_size(row["size"]),
                                  "media": SCAN_MEDIA[row["media_type"]]}, status=201)

    # ------------------------------------------------------------ 办件详情

    async def case_page(self, request: web.Request) -> web.StreamResponse:
        return self._case(request, {}, {}, None)

    def _case(self, request: web.Request, values: dict[str, Any], errors: dict[str, str],
              form_name: str | None, status: int = 200) -> web.Response:
        node = self.node(request)
        case_id = request.match_info["case_id"]
        row = node.store.case_row(case_id)
        if row is None:
            return error_page(request, 404, "没有这个办件", f"本节点没有编号为 {case_id} 的办件。",
                              "请从“办件列表”中选择办件；编号是从回执上抄录的，请核对后再试。")
        account = account_of(request)
        assert account is not None
        view = case_view(node, row)
        notice = {"submitted": "已收件并发送至办理地。请把收件回执交给申请人。",
                  "collected": "已收件，但尚未发送到办理地；节点会自动重试，请稍后刷新查看。",
                  "supplement": "已登记补正材料并发送至办理地。",
                  "deliver": "已登记送达。请请申请人对本次服务作出评价。",
                  "evaluate": "已登记好差评，谢谢。",
                  "withdraw": "已登记撤回申请。",
                  "window_accept": "已在窗口受理，申请和受理决定已发送至办理地。请把受理通知书交给申请人。",
                  "window_supplement": "已一次性告知补正。请把补正告知书交给申请人；申请人补齐后在本页登记。",
                  "window_supplemented": "已登记补正材料。请决定受理或不予受理。",
                  "window_refuse": "已作出不予受理决定，申请不发送至办理地。请把不予受理决定书交给申请人。",
                  "window_failed": "已收件，但窗口决定未能登记；请刷新页面查看状态后重新操作。",
                  }.get(request.query.get("done", ""))
        return render(request, "window_case.html", {
            **view, "notice": notice, "values": values, "errors": errors, "form_name": form_name,
            "notices": notice_links(node, row, view),
            "summary": ERRORS_SUMMARY.format(n=len(errors), button="提交") if errors else None,
            "can_act": "clerk" in account.roles and row["role"] == "collecting",
            "can_withdraw": withdrawable(row["state"]),
            "delivery_modes": DELIVERY_MODES, "channels": EVALUATION_CHANNELS,
            "stars": [(s, SATISFACTION[c]) for s, c in forms.STARS.items()],
            "scan_media": "、".join(SCAN_MEDIA.values())}, status=status)

    async def case_action(self, request: web.Request) -> web.StreamResponse:
        node = self.node(request)
        case_id, action = request.match_info["case_id"], request.match_info["action"]
        row = node.store.case_row(case_id)
        account = account_of(request)
        assert account is not None
        if row is None or row["role"] != "collecting":
            return error_page(request, 404, "没有这个办件", f"本节点没有本地区收件的办件 {case_id}。",
                              "请从“办件列表”中选择办件后再操作。")
        if action not in ACTIONS:
            return error_page(request, 404, "没有这个操作", f"办件详情没有“{action}”这一操作。",
                              "请返回办件详情页，使用页面上的按钮操作。")
        form = await request.post()
        values: dict[str, Any] = {k: v.strip()[:2000] for k, v in form.items()
                                  if isinstance(v, str) and k not in ("csrf_token", "scans")}
        errors: dict[str, str] = {}
        now = node.clock()
        body: Any = None
        if action == "supplement":
            scans = [s for s in form.getall("scans", []) if isinstance(s, str)]
            scans += await self._plain_uploads(node, form, "scan_file",
                                               values.get("scan_for", ""))
            values["scans"] = scans
            asked = case_view(node, row)["supplement_request"]
            body = forms.supplement(node, asked, values, scans, errors, now, account.display_name)
        elif action == "window_supplemented":
            scans = [s for s in form.getall("scans", []) if isinstance(s, str)]
            values["scans"] = scans
            asked = case_view(node, row)["window_request"]
            body = forms.supplement(node, asked, values, scans, errors, now, account.display_name)
        elif action == "window_accept":
            body = self._window_accept(node, row, values, errors, now, account.display_name)
        elif action == "window_refuse":
            body = forms.window_refuse(values, errors, now, account.display_name)
        elif action == "deliver":
            body = forms.delivery(values, errors, now)
        elif action == "withdraw":
            body = forms.withdrawal(values, errors, now, account.display_name)
        else:
            body = forms.evaluation(node, values, errors, now)
        if errors or body is None:
            return self._case(request, values, errors, action, status=400)
        event = "submit_decided" if action == "window_accept" else action
        result = await node.command(Command(case_id, event, body))
        if result.outcome != "applied":
            state = STATE_NAMES_ZH.get(row["state"], row["state"])
            if action == "withdraw" and not withdrawable(row["state"]):
                return self._case(request, values, {"form": (
                    f"撤回未获同意：办件当前状态为“{state}”，办理地已作出决定，不能再撤回。"
                    f"请告知申请人；申请人仍要放弃办理的，请其向办理地提出。")}, action, status=409)
            return self._case(request, values, {"form": (
                f"办件当前状态为“{state}”，不能{ACTIONS[action]}（{result.detail or result.outcome}）。"
                f"请刷新页面查看最新状态后再操作。")}, action, status=409)
        raise web.HTTPSeeOther(f"/window/cases/{case_id}?done={action}")

    @staticmethod
    def _window_accept(node: Node, row: dict[str, Any], values: dict[str, Any],
                       errors: dict[str, str], now: int, clerk: str) -> b.Application | None:
        """受理 after the window's 补正: the application sent with the decision."""
        application = case_view(node, row)["application"]
        entry = node.catalog.entry(row["peer"], application.matter.code,
                                   application.matter.version) if application else None
        if application is None or entry is None:
            errors["form"] = "找不到该事项的目录信息，不能在窗口受理。请联系本节点运维人员。"
            return None
        accept = forms.window_accept(entry, node, values, errors, now, clerk)
        return application.model_copy(update={"window_decision": accept}) if accept else None

    # ------------------------------------------------------------ live

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Push ``{state, state_zh, receipts}`` now and whenever the case changes."""
        node = self.node(request)
        case_id = request.match_info["case_id"]
        if node.store.case_row(case_id) is None:
            return _json_error(404, "没有这个办件。")
        return await push(request, request.app[self.live_key], (case_id,), lambda: live_state(node, case_id))

    async def joint_live(self, request: web.Request) -> web.StreamResponse:
        """Push the joint case (each part's state and outcome) now and whenever it changes."""
        node = self.node(request)
        joint_id = request.match_info["joint_id"]
        view = joint_view(node, joint_id)
        if view is None:
            return _json_error(404, "没有这个联办件。")
        parts = tuple(p["case_id"] for p in view["parts"])
        return await push(request, request.app[self.live_key], parts, lambda: joint_view(node, joint_id))

    # ------------------------------------------------------------ 多地联办

    async def joint_apply_page(self, request: web.Request) -> web.StreamResponse:
        joint = self._joint_entries(request)
        if isinstance(joint, web.Response):
            return joint
        return self._joint_form(request, joint, {}, {})

    def _joint_entries(self, request: web.Request) -> forms.JointEntries | web.Response:
        matter = request.match_info["matter"]
        joint = forms.joint_entries(self.node(request), matter) if len(matter) <= 40 else None
        if joint is None:
            return error_page(request, 404, "该事项不提供多地联办",
                              f"通办圈的事项目录中没有以多地联办方式提供的事项 {matter}。",
                              "请回到“事项查询”，把通办模式选为“多地联办”后重新查找。")
        return joint

    def _joint_form(self, request: web.Request, joint: forms.JointEntries,
                    values: dict[str, Any], errors: dict[str, str], status: int = 200,
                    problem: str | None = None) -> web.Response:
        account = account_of(request)
        assert account is not None
        materials = [{
            "i": k, "name": m.name, "necessity": m.necessity,
            "necessity_zh": MATERIAL_NECESSITY[m.necessity], "originals": m.originals,
            "copies": m.copies, "deferrable": False, "standard": m.standard, "note": m.note,
            "collected": values.get(f"m{k}_collected") == "on",
            "mode": values.get(f"m{k}_mode", "paper_original" if m.originals else "paper_copy"),
            "count": values.get(f"m{k}_count", str(max(1, m.originals + m.copies)))}
            for k, m in enumerate(joint.materials)]
        shown = [{"name": f.name, "label": f.label, "kind": f.kind, "required": f.required,
                  "choices": f.choices, "help": f.help, "max_length": f.max_length,
                  "value": values.get(f"f_{f.name}", "")} for f in joint.fields]
        offered = [f"{region_name(e.region)}（{e.region}）" for e in joint.entries]
        return render(request, "window_joint_apply.html", {
            "matter": request.match_info["matter"], "name": joint.name, "offered": offered,
            "places": [values.get(f"loc{i}", "") for i in range(forms.PLACES)],
            "fields": shown, "materials": materials, "values": values, "errors": errors,
            "problem": problem, "handling_name": "各办理地",
            "summary": ERRORS_SUMMARY.format(n=len(errors), button="提交") if errors else None,
            "service_objects": SERVICE_OBJECTS, "id_types": ID_TYPES,
            "identity_methods": IDENTITY_METHODS, "paper_modes": forms.PAPER_MODES,
            "clerk": account.display_name}, status=status)

    async def joint_apply(self, request: web.Request) -> web.StreamResponse:
        """联办收件: route every place, fill one part per handling region, collect them
        all in one batch (node.joint_intake, as ``POST /api/joints``)."""
        joint = self._joint_entries(request)
        if isinstance(joint, web.Response):
            return joint
        node = self.node(request)
        account = account_of(request)
        assert account is not None
        form = await request.post()
        values: dict[str, Any] = {k: v.strip()[:2000] for k, v in form.items()
                                  if isinstance(v, str) and k != "csrf_token"}
        errors: dict[str, str] = {}
        located = forms.places(values, errors)
        routes = node.route(request.match_info["matter"], located, mode="joint") \
            if "locations" not in errors else []
        if isinstance(routes, SignedRouteRefusal):
            errors["locations"] = (f"{routes.refusal.zh}。请核对各地点的行政区划代码；"
                                   f"确实不在联办范围的，请告知申请人到各地分别办理。")
            routes = []
        parts: dict[str, b.Application] = {}
        for route in routes:
            entry = node.catalog.entry(route.handling, route.code, route.version)
            if entry is None or entry not in joint.entries:
                errors.setdefault("locations", f"{region_name(route.handling)}的该事项刚刚更新，"
                                               f"请刷新本页后重新提交。")
                continue
            part = forms.joint_part(node, joint, entry, values, errors, account.display_name)
            if part is not None:
                parts[route.handling] = part
        if not routes:  # tell of every other problem too, as the first entry sees them
            forms.joint_part(node, joint, joint.entries[0], values, errors, account.display_name)
        if errors or len(parts) != len(routes):
            return self._joint_form(request, joint, values, errors, status=400)
        window = next(iter(parts.values())).window  # one 收件编号 for the whole case
        collected = await collect_joint(node, request.match_info["matter"], routes, lambda r: (
            parts[r.handling].model_copy(update={"window": window})))
        if collected.outcome != "applied" or collected.case_id is None:
            return self._joint_form(request, joint, values, {}, status=422, problem=(
                f"联办收件未成功（{collected.detail or collected.outcome}）。所填内容已保留，"
                f"请核对后重新提交；如仍不成功，请联系本节点运维人员。"))
        raise web.HTTPSeeOther(f"/window/joints/{collected.case_id}?done=collected")

    async def joint_page(self, request: web.Request) -> web.StreamResponse:
        node = self.node(request)
        joint_id = request.match_info["joint_id"]
        view = joint_view(node, joint_id)
        if view is None:
            return error_page(request, 404, "没有这个联办件", f"本节点没有编号为 {joint_id} 的联办件。",
                              "请核对回执上的联办件编号；编号无误的，请从“办件列表”中查找各分件。")
        first = node.store.body(view["parts"][0]["case_id"], "application")
        application = b.Application.model_validate(decode(first)) if first else None
        parts = [{**p, "handling_name": region_name(p["handling"]), "n": i + 1}
                 for i, p in enumerate(view["parts"])]
        notice = ("已收件，各分件已发送至各办理地。请把各分件的收件回执交给申请人。"
                  if request.query.get("done") == "collected" else None)
        return render(request, "window_joint.html", {
            **view, "parts": parts, "application": application, "notice": notice,
            "policy_zh": {"whole_case": "一地不予受理则整件不予受理（其余分件撤回）",
                          "part_only": "一地不予受理只影响该地分件"}.get(view["policy"], ""),
            "closed": clock_text(view["closed_at"]) if view["closed_at"] else "",
            "states_zh": JOINT_STATES_ZH})


#: The live sockets of one app (a module-level key: aiohttp names keys from the frame
#: that makes them, and a key made inside a function fails in a thread).
LIVE = web.AppKey("window_live", Live)


ACTIONS = {"supplement": "登记补正", "deliver": "登记送达", "evaluate": "登记评价",
           "withdraw": "撤回", "window_supplemented": "登记窗口补正材料",
           "window_accept": "窗口受理", "window_refuse": "窗口不予受理"}


# ---------------------------------------------------------------- helpers


async def _intake(node: Node, pieces: AsyncIterator[bytes], name: str,
                  media_type: str) -> dict[str, Any] | str:
    """Store a scan encrypted; its ``materials`` row, or what is wrong (Chinese)."""
    if media_type not in SCAN_MEDIA:
        return "只接受 PDF、JPEG、PNG 或 OFD 格式的扫描件，请转换格式后重新上传。"
    try:
        row = await node.materials.intake(pieces, name[:200], media_type)
    except MaterialTooLarge:
        limit = node.config.limits.max_material_bytes >> 20
        return f"文件超过大小上限（{limit} MB），请降低扫描分辨率或分页扫描后重新上传。"
    await node.store.commit(Changes(materials=[{**row, "at": node.clock()}]))
    return row


async def _file_pieces(file: Any) -> AsyncIterator[bytes]:
    while piece := await asyncio.to_thread(file.read, 1 << 16):
        yield piece


def _partners(node: Node) -> dict[str, str]:
    """The regions whose catalogs this node holds: the circle's members, or the peers."""
    circle = node.circle.current if node.circle is not None else None
    if circle is not None:
        named = {m.region: m.name for m in circle.members}
    else:
        named = {p.region: region_name(p.region) for p in node.config.peers}
    named.pop(node.region, None)
    return dict(sorted(named.items()))





def _json_error(status: int, zh: str) -> web.Response:
    return web.json_response({"error": zh}, status=status)

