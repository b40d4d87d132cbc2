"""The operators' view of cases: deadlines with escalation levels, and one case's trace.

Theory of operation
-------------------
**Deadlines (时限预警).** The clocks are the desk's (``node.web.desk.clock_of``): the
5-working-day 补正 notice of 行政许可法 §32 (timer ``notice``) and the promised
completion date (承诺时限, working days, stopped while a 特别程序 runs). An operator
escalates by how late a case is, in working days of the node's calendar:

====  ======  ==========================================================
级别   名称     when
====  ======  ==========================================================
1     提醒     due by the end of the next working day (the desk's ``soon``)
2     督办     past due, by up to 3 working days (the desk's ``overdue``)
3     通报     past due by more than 3 working days
====  ======  ==========================================================

Level 1 is the same ``soon`` as ``tongban_deadline_cases`` and the ``overdue_cases``
alert; levels 2 and 3 together are their ``overdue``.

**Trace.** Every receipt this node holds for a case, of both regions, in time order,
each checked on its own: its signature against the key its region had at the
receipt's time (``KeyRegistry.signing_key``, as the public verification page does),
and its place in its region's chain (index in order, ``prev`` = the digest of the one
before). The whole case is then checked as an auditor would, by building its evidence
bundle (``node.evidence.bundle_for``) and running the offline verifier on it
(``receipts.verify_bundle``) against the node's key registry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from node.app import Node
from node.evidence import bundle_for
from node.web.desk import OPEN_STATES, Clock, clock_of
from node.web.live import region_name
from protocol import Receipt, decode
from protocol.calendar import working_days_between
from protocol.errors import ProtocolError
from protocol.fields import clock_text, date_of
from protocol.states import RECEIPT_NAMES_ZH, STATE_NAMES_ZH
from protocol.wire import receipt_from_fields
from receipts import BundleError, SignatureChecker, verify_bundle

__all__ = ["ESCALATIONS", "Deadline", "counts_by_partner", "deadlines", "escalation", "trace"]

#: Escalation levels: (name, what the operator does).
ESCALATIONS: dict[int, tuple[str, str]] = {
    1: ("提醒", "下一个工作日结束前到期：提醒审核员或承办部门当日处理"),
    2: ("督办", "已逾期（3 个工作日以内）：通知承办部门负责人督办，并告知收件地窗口"),
    3: ("通报", "逾期超过 3 个工作日：报告本地区通办牵头部门通报，并向申请人说明"),
}
#: Overdue by more than this many working days: 通报.
REPORT_AFTER_DAYS = 3
#: Message kinds in Chinese, for the trace.
MESSAGE_NAMES_ZH = {
    "application": "申请（代收件）", "received": "签收回执", "decision": "初审决定",
    "supplement": "补正材料", "withdrawal": "撤回申请", "withdrawn": "撤回确认",
    "forwarded": "流转通知", "progress": "办理进度", "outcome": "办结结果",
    "outcome_ack": "结果签收", "delivery": "送达记录", "evaluation": "好差评",
    "rejection": "拒收通知", "video_check": "远程视频核验",
}


def escalation(clock: Clock, late_days: int) -> int:
    """The escalation level of a desk clock: 0 (none), 1 提醒, 2 督办, 3 通报."""
    if clock.level == "soon":
        return 1
    if clock.level == "overdue":
        return 3 if late_days > REPORT_AFTER_DAYS else 2
    return 0


@dataclasses.dataclass(frozen=True)
class Deadline:
    case_id: str
    peer: str  # the collecting region
    state: str
    clock_name: str  # 补正告知 / 承诺时限
    due_day: str  # ISO date
    level: int  # 1 提醒, 2 督办, 3 通报
    late_days: int  # working days past due (0 when not yet due)
    text: str  # the desk's reading of the clock
    arrived: int  # ms

    @property
    def level_name(self) -> str:
        return ESCALATIONS[self.level][0]

    def view(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "level_name": self.level_name,
                "peer_name": region_name(self.peer),
                "state_zh": STATE_NAMES_ZH.get(self.state, self.state),
                "arrived_text": clock_text(self.arrived)}


def deadlines(node: Node, now: int) -> list[Deadline]:
    """Open handling cases whose notice or promise is due by the end of the next working
    day or past, most urgent first (highest level, then the earliest due)."""
    calendar = node.engine.calendar
    today = date_of(now)
    found: list[Deadline] = []
    for row, snapshot in node.store.cases_in("handling", OPEN_STATES):
        clock = clock_of(node, row["state"], snapshot, now)
        if clock.level not in ("soon", "overdue"):
            continue
        timers: dict[str, int] = snapshot.get("timers") or {}
        if "notice" in timers:
            name, due_day = "补正告知期限", date_of(timers["notice"])
        else:
            name, due_day = "承诺办结时限", dt.date.fromisoformat(snapshot["promised_date"])
        try:
            late = working_days_between(calendar, due_day, today) if today > due_day else 0
        except ValueError:  # the calendar does not cover those days
            late = (today - due_day).days
        level = escalation(clock, late)
        found.append(Deadline(row["case_id"], row["peer"], row["state"], name,
                              due_day.isoformat(), level, late, clock.text, row["created_at"]))
    found.sort(key=lambda d: (-d.level, d.due_day, -d.arrived))
    return found


def counts_by_partner(found: list[Deadline]) -> list[dict[str, Any]]:
    """Per collecting region: how many cases at each level."""
    table: dict[str, dict[int, int]] = {}
    for item in found:
        table.setdefault(item.peer, dict.fromkeys(ESCALATIONS, 0))[item.level] += 1
    return [{"peer": peer, "peer_name": region_name(peer), "levels": levels,
             "total": sum(levels.values())}
            for peer, levels in sorted(table.items(), key=lambda kv: (-kv[1][3], -kv[1][2],
                                                                      -kv[1][1], kv[0]))]


# ---------------------------------------------------------------- the trace


def trace(node: Node, case_id: str, checker: SignatureChecker) -> dict[str, Any]:
    """Both regions' receipts of a case with their checks, its messages both ways, and
    the verdict of its evidence bundle."""
    receipts: list[Receipt] = []
    damaged = 0
    for raw in node.store.receipts(case_id):
        try:
            receipts.append(receipt_from_fields(decode(raw)))
        except ProtocolError:
            damaged += 1
    known = {r.digest for r in receipts}
    rows = []
    previous: dict[str, Receipt | None] = {}
    for receipt in sorted(receipts, key=lambda r: (r.actor, r.index)):
        before = previous.get(receipt.actor)
        expected_index = 0 if before is None else before.index + 1
        linked = (receipt.index == expected_index
                  and receipt.prev == (before.digest if before is not None else None))
        previous[receipt.actor] = receipt
        rows.append({
            "at": receipt.at, "when": to_the_second(receipt.at), "kind": receipt.kind,
            "name": RECEIPT_NAMES_ZH.get(receipt.kind, receipt.kind), "actor": receipt.actor,
            "actor_name": "本地区" if receipt.actor == node.region else region_name(receipt.actor),
            "index": receipt.index, "key": receipt.key, "digest": receipt.digest.hex()[:16],
            "signed": _signature_holds(node, receipt, checker), "linked": linked,
            "cross": receipt.their is None or receipt.their in known,
        })
    rows.sort(key=lambda r: (r["at"], r["actor"] != node.region, r["index"]))
    messages = [{**m, "name": MESSAGE_NAMES_ZH.get(m["kind"], m["kind"]),
                 "when": to_the_second(m["at"]),
                 "acked": to_the_second(m["acked_at"]) if m["acked_at"] else "",
                 "peer_name": region_name(m["peer"])} for m in node.store.envelope_log(case_id)]
    bundle = bundle_for(node.store, node.registry, node.region, case_id, node.clock())
    try:
        report = verify_bundle(bundle, node.registry)
        verdict = {"ok": True, "text": (
            f"证据包校验通过：{len(report.chains)} 条回执链共 {sum(report.chains.values())} 条回执、"
            f"{report.envelopes} 条报文，签名和链接均有效。")}
    except BundleError as exc:
        verdict = {"ok": False, "text": f"证据包校验未通过：{exc.link} — {exc.problem}。"
                                        "请下载证据包交技术人员核查，并联系对方节点比对回执。"}
    all_ok = damaged == 0 and all(r["signed"] and r["linked"] and r["cross"] for r in rows)
    return {"receipts": rows, "messages": messages, "damaged": damaged, "all_ok": all_ok,
            "verdict": verdict, "bundle_size": len(bundle)}


def to_the_second(millis: int) -> str:
    """A trace's time (北京时间), to the second: steps of one case are seconds apart."""
    return clock_text(millis, seconds=True)


def _signature_holds(node: Node, receipt: Receipt, checker: SignatureChecker) -> bool:
    if receipt.sig is None or receipt.sig.key != receipt.key:
        return False
    try:
        checker.check(receipt.digest, receipt.sig,
                      node.registry.signing_key(receipt.key, receipt.actor, receipt.at))
    except ProtocolError:
        return False
    return True
