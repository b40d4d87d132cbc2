"""The operators' pages (运维): 运行监控, 时限预警, 办件追踪, 死信处理.

Theory of operation
-------------------
For the node's own 运维 and 管理员 (``require("operator", "admin", own_region=True)``):

* ``/ops``: the dashboard. Alerts on top (``node.alerts``), the NATS connection, per
  partner the messages sent, received, acknowledged, retried and dead, with the
  backlogs both ways, the partners' heartbeats (``node.health``), rates over the last
  hour as charts and the latency of each protocol step as histograms. Figures come
  from the node's Prometheus registry (``ops_data``), never counted twice. A socket
  (``/ops/live``) sends the recorded hour at once, then every new point and every
  change of health or alerts; ``ops.js`` draws the charts and swaps in the tables.
* ``/ops/deadlines``: cases near or past their 补正 notice or promise, with the
  escalation levels of ``ops_cases`` (1 提醒, 2 督办, 3 通报), and counts per partner.
* ``/ops/cases/{id}``: one case's trace, both regions' receipts checked one by one,
  the messages both ways, and its evidence bundle (``.../bundle``, the bytes
  ``GET /api/cases/{id}/bundle`` gives).
* ``/ops/dead-letters``: dead-lettered cases with 重试 (the engine's
  ``operator_retry``, as ``POST /api/cases/{id}/retry``) and refused inbound messages
  with 忽略 (marked handled in the store). Both are written to the accounts audit log
  with the operator's username, and the page shows that trail.

Changes are POSTs that redirect back (post/redirect/get), under the CSRF token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from node.app import Node
from node.engine import Command
from node.evidence import bundle_for
from node.store import Changes
from node.web.auth import AUTH, account_of, require
from node.web.live import OpenSockets, region_name, serve_socket, watching
from node.web.ops_cases import ESCALATIONS, counts_by_partner, deadlines, trace
from node.web.ops_data import (
    LATENCY_GROUPS,
    PARTNER_FIELDS,
    Figures,
    Recorder,
    figures,
    latency_json,
    recording,
)
from node.web.render import error_page, render
from protocol.errors import Reason
from protocol.fields import clock_text
from protocol.states import STATE_NAMES_ZH
from receipts import SignatureChecker

__all__ = ["add_ops_routes"]

#: Audit actions of this page, as the audit trail names them.
AUDIT_ACTIONS = {"retry_forward": "死信重试流转", "discard_rejection": "忽略拒收报文"}
DONE = {"retry": "已重新流转办件 {who}，正在转交承办部门；结果会显示在本页和办件追踪中。",
        "discard": "已将拒收报文 {who} 标记为已处理（忽略），审计记录已写入。"}
ALERT_LEVELS = {"critical": "严重", "warning": "警告"}
ALERT_EVENTS = {"firing": "告警", "updated": "升级", "resolved": "恢复"}
#: The metrics' partner labels that are not a region (node.metrics.partner_label).
OTHER_SENDERS = {"unknown": "未知发件方", "other": "其他"}


RECORDER = web.AppKey("ops_recorder", Recorder)
SOCKETS = web.AppKey("ops_sockets", OpenSockets)  # the dashboards' sockets


def add_ops_routes(app: web.Application, node_key: web.AppKey[Node]) -> None:
    """The operators' pages, their socket, and the recorder's lifetime."""
    from node.web import ops_data  # read at start-up: tests shorten the interval

    checker = SignatureChecker(capacity=1024)
    recording(app, lambda a: Recorder(a[node_key].metrics.registry, a[node_key].clock,
                                      interval=ops_data.INTERVAL_S), RECORDER)
    sockets = OpenSockets()
    app[SOCKETS] = sockets
    sockets.closing(app)
    ops = require("operator", "admin", own_region=True)

    def page(handler: Callable[[web.Request, Node], Awaitable[web.StreamResponse]]
             ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await handler(request, request.app[node_key])
        return ops(handle)

    async def case_trace(request: web.Request, node: Node) -> web.StreamResponse:
        return trace_page(request, node, checker)

    app.router.add_get("/ops", page(dashboard))
    app.router.add_get("/ops/live", page(live))
    app.router.add_get("/ops/deadlines", page(deadlines_page))
    app.router.add_get("/ops/cases", page(find_case))
    app.router.add_get("/ops/cases/{case_id}", page(case_trace))
    app.router.add_get("/ops/cases/{case_id}/bundle", page(bundle))
    app.router.add_get("/ops/dead-letters", page(dead_letters))
    app.router.add_post("/ops/dead-letters/{case_id}/retry", page(retry))
    app.router.add_post("/ops/rejections/{rowid}/discard", page(discard))


# ---------------------------------------------------------------- 运行监控


def dashboard_view(node: Node, found: Figures) -> dict[str, Any]:
    """What the dashboard shows now (also what its live parts are refreshed from)."""
    now = found.at
    health = {p.region: p for p in node.health.partners()}
    partners = []
    for region in sorted(set(health) | set(found.partners)):
        figures_of = found.partners.get(region, {})
        state = health.get(region)
        if state is None and not any(figures_of.values()):
            continue
        partners.append({
            "region": region,
            "name": state.name if state is not None else OTHER_SENDERS.get(
                region, region_name(region)),
            "member": state is not None,
            **dict.fromkeys(PARTNER_FIELDS, 0), **{k: int(v) for k, v in figures_of.items()},
            "silent": state.silent if state is not None else None,
            "last_seen": _ago(now, state.last_seen) if state and state.last_seen else "",
            "last_seen_at": clock_text(state.last_seen) if state and state.last_seen else "",
            "started_at": clock_text(state.started_at) if state and state.started_at else "",
            "threshold_s": state.threshold_s if state is not None else None,
            "queued": state.queued if state is not None else int(figures_of.get("outbox", 0)),
            "oldest_queued": clock_text(state.oldest_queued)
            if state and state.oldest_queued else "",
        })
    alerts = [{"level": a.level, "level_zh": ALERT_LEVELS.get(a.level, a.level), "kind": a.kind,
               "key": a.key, "title": a.title, "detail": a.detail, "since": clock_text(a.since)}
              for a in node.alerts.active()]
    history = [{"at": clock_text(at), "event": ALERT_EVENTS.get(event, event),
                "firing": event != "resolved", "title": alert.title,
                "level_zh": ALERT_LEVELS.get(alert.level, alert.level)}
               for at, event, alert in node.alerts.history()[:20]]
    open_cases = {STATE_NAMES_ZH.get(s, s): n for s, n in sorted(found.cases.items()) if n}
    return {
        "now": clock_text(now), "nats": found.nats_connected, "reconnects": found.reconnects,
        "inbox": found.inbox, "queues": found.queues, "materials": found.materials,
        "partners": partners, "alerts": alerts, "history": history, "cases": open_cases,
        "dead_total": int(found.total("dead")), "outbox_total": int(found.total("outbox")),
        "soon": found.deadlines.get("notice_soon", 0) + found.deadlines.get("promise_soon", 0),
        "overdue": (found.deadlines.get("notice_overdue", 0)
                    + found.deadlines.get("promise_overdue", 0)),
        "latency": latency_json(found), "silent": sum(1 for p in partners if p["silent"]),
        "members": sum(1 for p in partners if p["member"]),
    }


async def dashboard(request: web.Request, node: Node) -> web.StreamResponse:
    found = figures(node.metrics.registry, node.clock())
    return render(request, "ops_dashboard.html", {
        **dashboard_view(node, found), "title": "运行监控", "section": "dashboard",
        "interval": request.app[RECORDER].interval, "groups": LATENCY_GROUPS})


async def live(request: web.Request, node: Node) -> web.StreamResponse:
    """The recorded hour at once, then each new point, and a word at every change of the
    partners' health or the alerts; the page says nothing."""
    recorder = request.app[RECORDER]
    sent = {"last": -1}

    def message() -> dict[str, Any]:
        latest = recorder.latest
        if sent["last"] < 0:  # first: the hour recorded so far
            points = list(recorder.points)
            sent["last"] = points[-1]["t"] if points else 0
            return {"type": "history", "interval": recorder.interval, "points": points,
                    "latency": latency_json(latest) if latest is not None else {}}
        update: dict[str, Any] = {"type": "update"}
        if recorder.points and recorder.points[-1]["t"] > sent["last"]:
            update["point"] = recorder.points[-1]
            sent["last"] = update["point"]["t"]
            if latest is not None:
                update["latency"] = latency_json(latest)
        return update

    return await serve_socket(request, request.app[SOCKETS], watching(
        recorder.listeners, node.health.changed, node.alerts.changed), message)


def _ago(now: int, then: int) -> str:
    seconds = max(0, (now - then) // 1000)
    if seconds < 60:
        return f"{seconds} 秒前"
    if seconds < 3600:
        return f"{seconds // 60} 分钟前"
    return f"{seconds // 3600} 小时前"


# ---------------------------------------------------------------- 时限预警


async def deadlines_page(request: web.Request, node: Node) -> web.StreamResponse:
    found = deadlines(node, node.clock())
    chosen = request.query.get("level", "")
    shown = [d for d in found if not chosen or str(d.level) == chosen]
    return render(request, "ops_deadlines.html", {
        "title": "时限预警", "section": "deadlines", "rows": [d.view() for d in shown],
        "by_partner": counts_by_partner(found), "escalations": ESCALATIONS, "chosen": chosen,
        "levels": {level: sum(1 for d in found if d.level == level) for level in ESCALATIONS},
        "total": len(found)})


# ---------------------------------------------------------------- 办件追踪


def _no_case(request: web.Request, node: Node, case_id: str) -> web.Response:
    return error_page(request, 404, "没有这个办件",
                      f"本节点（{node.config.name}）没有编号为 {case_id} 的办件。",
                      "请核对办件编号（见收件回执或办件列表）后在运行监控页重新查询；"
                      "若办件由对方地区收件尚未到达本节点，请稍后再查。")


async def find_case(request: web.Request, node: Node) -> web.StreamResponse:
    case_id = request.query.get("q", "").strip()[:100]
    if not case_id:
        return error_page(request, 400, "请输入办件编号", "查询框是空的。",
                          "请在运行监控页的“办件追踪”框中输入办件编号后再查询。")
    if node.store.case_row(case_id) is None:
        return _no_case(request, node, case_id)
    raise web.HTTPSeeOther(f"/ops/cases/{quote(case_id, safe='')}")


def trace_page(request: web.Request, node: Node, checker: SignatureChecker) -> web.Response:
    case_id = request.match_info["case_id"]
    row = node.store.case_row(case_id)
    if row is None:
        return _no_case(request, node, case_id)
    return render(request, "ops_trace.html", {
        "title": f"办件追踪 {case_id}", "section": "trace", "row": row,
        "state_zh": STATE_NAMES_ZH.get(row["state"], row["state"]),
        "role_zh": "收件地（本地区窗口收件）" if row["role"] == "collecting" else "办理地（本地区办理）",
        "peer_name": region_name(row["peer"]), "quoted": quote(case_id, safe=""),
        **trace(node, case_id, checker)})


async def bundle(request: web.Request, node: Node) -> web.StreamResponse:
    case_id = request.match_info["case_id"]
    if node.store.case_row(case_id) is None:
        return _no_case(request, node, case_id)
    data = bundle_for(node.store, node.registry, node.region, case_id, node.clock())
    return web.Response(body=data, content_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{case_id}.tbb"'})


# ---------------------------------------------------------------- 死信处理


async def dead_letters(request: web.Request, node: Node) -> web.StreamResponse:
    return _dead_letters(request, node)


def _dead_letters(request: web.Request, node: Node, *, error: str | None = None,
                  status: int = 200) -> web.Response:
    department = node.departments[0].name if node.departments else "承办部门"
    cases = []
    for row in node.store.cases(state="dead_letter", limit=500):
        snapshot = node.store.case_snapshot(row["case_id"]) or {}
        errors = node.store.forward_errors(row["case_id"], limit=1)
        attempts = int(snapshot.get("forward_attempts") or 0)
        if errors:
            reason = f"转交{department}第 {errors[0]['attempt']} 次失败：{errors[0]['error']}"
        else:
            reason = (f"转交{department}的自动重试已用尽（每轮最多 {node.config.retry.attempts} 次），"
                      f"未记录具体错误：请查看节点日志中 “dead letter: case {row['case_id']}” 一行")
        cases.append({**row, "peer_name": region_name(row["peer"]), "reason": reason,
                      "attempts": attempts, "since": clock_text(row["updated_at"]),
                      "failed_at": clock_text(errors[0]["at"]) if errors else "",
                      "quoted": quote(row["case_id"], safe="")})
    reasons = {reason.code: reason.zh for reason in Reason}
    rejected = [{**r, "sender_name": region_name(r["sender"]) if r["sender"] else "未知",
                 "reason": reasons.get(r["code"], r["code"]), "when": clock_text(r["at"])}
                for r in node.store.rejection_rows(limit=200)]
    handled = [{**r, "when": clock_text(r["at"]), "handled": clock_text(r["handled_at"])}
               for r in node.store.rejection_rows(handled=True, limit=20)]
    auth = request.app[AUTH]
    trail = [{"at": clock_text(a.at), "actor": a.actor,
              "action": AUDIT_ACTIONS.get(a.action, a.action), "target": a.target or "",
              "detail": a.detail.get("result", "")}
             for a in auth.store.audit_of(AUDIT_ACTIONS, 30)]
    done = DONE.get(request.query.get("done", ""))
    return render(request, "ops_dead_letters.html", {
        "title": "死信处理", "section": "dead", "cases": cases, "rejected": rejected,
        "handled": handled, "trail": trail, "department": department, "error": error,
        "notice": done.format(who=request.query.get("who", "")[:100]) if done else None,
    }, status=status)


async def retry(request: web.Request, node: Node) -> web.StreamResponse:
    """重试: forward a dead-lettered case again; audited with the operator's name."""
    case_id = request.match_info["case_id"]
    row = node.store.case_row(case_id)
    if row is None:
        return _no_case(request, node, case_id)
    if row["state"] != "dead_letter":
        return _dead_letters(request, node, status=409, error=(
            f"办件 {case_id} 当前状态为“{STATE_NAMES_ZH.get(row['state'], row['state'])}”，"
            "不在死信中，无需重试（可能已由其他运维人员重试）。请查看下方列表的最新状态。"))
    result = await node.command(Command(case_id, "operator_retry"))
    if result.outcome != "applied":
        return _dead_letters(request, node, status=409, error=(
            f"办件 {case_id} 未能重新流转：{result.reason.zh if result.reason else '节点拒绝了本次操作'}。"
            "请刷新本页查看办件的最新状态后再试；如仍失败，请下载该办件的证据包交技术人员核查。"))
    await _audit(request, "retry_forward", case_id, {"peer": row["peer"],
                                                     "result": "已重新流转"})
    raise web.HTTPSeeOther(f"/ops/dead-letters?done=retry&who={quote(case_id, safe='')}")


async def discard(request: web.Request, node: Node) -> web.StreamResponse:
    """忽略: mark a refused inbound message handled; audited with the operator's name."""
    try:
        rowid = int(request.match_info["rowid"])
    except ValueError:
        rowid = -1
    row = node.store.rejection_row(rowid) if rowid > 0 else None
    if row is None:
        return _dead_letters(request, node, status=404, error=(
            "没有这条拒收报文记录，可能链接有误。请在下方列表中选择要忽略的报文。"))
    if row["handled_at"] is not None:
        return _dead_letters(request, node, status=409, error=(
            f"拒收报文 {row['msg_id'] or rowid} 已于 {clock_text(row['handled_at'])} 由 "
            f"{row['handled_by']} 标记为已处理，无需再次忽略。"))
    account = account_of(request)
    assert account is not None
    now = node.clock()
    await node.store.commit(Changes(rejections_handled=[(rowid, now, account.username)]))
    await _audit(request, "discard_rejection", row["msg_id"] or str(rowid), {
        "sender": row["sender"], "code": row["code"], "case_id": row["case_id"],
        "result": f"忽略（{row['code']}）"})
    raise web.HTTPSeeOther(
        f"/ops/dead-letters?done=discard&who={quote(row['msg_id'] or str(rowid), safe='')}")


async def _audit(request: web.Request, action: str, target: str, detail: dict[str, Any]) -> None:
    auth = request.app[AUTH]
    account = account_of(request)
    assert account is not None
    await asyncio.to_thread(auth.store.record, auth.clock(), account.username, action, target,
                            detail)
