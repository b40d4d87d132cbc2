"""Every state transition of a case, for both roles, in one table.

Theory of operation
-------------------
A case (办件) lives on two nodes at once: the **collecting** region (收件地), whose
通办专窗 took the application, and the **handling** region (办理地), whose department
decides it. Each side runs its own state machine over the same events:

* an event is either *local* (a clerk's, reviewer's or department's act, a timer, a
  department adapter's report) or *remote* (a message from the other side);
* the same act has the same name on both sides: the reviewer's ``accept`` at the
  handling side travels as a ``decision`` message and is the event ``accept`` at
  the collecting side.

Rule 1: everything that changes a case's state is a row of ``TRANSITIONS``; nothing
else assigns state. A ``(role, state, event)`` that is not a row is a protocol
error naming the state and the event (``machine.Case`` raises it).

Rule 2: a row says what the transition *does* as data: the receipt kind it signs
(``None``: bookkeeping only, no receipt), the message kind it sends to the other
side, and the timers it sets (``+name``) or cancels (``-name``).

Timers (persisted by the node, fired back in as local events):

* ``notice``: 5 working days from the window's receipt time. If the handling side
  has neither accepted, refused nor asked for 补正 by then, the application is
  deemed accepted (行政许可法 §32 (四); §82: periods count working days).
* ``promise``: the promised completion date (承诺办结时间). Stopped during a
  特别程序 and moved on by the working days it took.

Acceptance models: the handling side decides (``submit``), or, where the catalog
entry authorises it, the collecting window decides and the application arrives
already accepted (``submit_decided``). 一次性告知: a case can be asked for 补正
once, by the reviewer or (collecting-decides model) by the window; after the
supplement it is accepted or refused.

``docs/protocol.md`` shows these tables and a diagram generated from them
(``python -m protocol.diagram``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = [
    "COLLECTING_STATES",
    "HANDLING_STATES",
    "LOCAL_EVENTS",
    "RECEIPT_NAMES_ZH",
    "REMOTE_EVENTS",
    "STATE_NAMES_ZH",
    "TIMER_EVENTS",
    "TRANSITIONS",
    "Role",
    "Transition",
]

Role = Literal["collecting", "handling"]


class Transition(NamedTuple):
    new_state: str
    receipt: str | None  # receipt kind signed for this transition; None: no receipt
    send: str | None = None  # message kind sent to the other side
    timers: tuple[str, ...] = ()  # "+notice" sets, "-notice" cancels


T = Transition
_C: Role = "collecting"
_H: Role = "handling"

# The collecting side's states after a decision, where a late withdrawal refusal can land.
_C_DECIDED = ("accepted", "processing", "suspended", "outcome_received", "delivered",
              "evaluated", "archived", "refused")
# Where a reviewer's video check (远程视频核验) can be made, and where it can arrive.
_H_REVIEWING = ("received", "supplement_requested", "supplied")
_C_REVIEWING = ("under_review", "supplement_requested", "supplied", "withdrawing")
# The handling side's states after the decision: withdrawal is refused there.
_H_DECIDED = ("forwarding", "dead_letter", "processing", "suspended", "concluded",
              "outcome_acknowledged", "delivered", "evaluated", "archived", "refused")

TRANSITIONS: dict[tuple[Role, str, str], Transition] = {
    # ---- collecting side (收件地) -------------------------------------------------
    # 收件: identity check and formal review recorded with the application.
    (_C, "new", "collect"): T("collected", "collected"),
    (_C, "collected", "submit"): T("sent", "submitted", send="application"),
    (_C, "collected", "submit_decided"): T("sent_decided", "accepted_at_window", send="application"),
    # The window's own 一次性告知 and refusal (collecting-decides model), before sending.
    (_C, "collected", "window_supplement"): T("awaiting_materials", "window_supplement_notice"),
    (_C, "awaiting_materials", "window_supplemented"): T(
        "supplied_at_window", "window_supplemented"
    ),
    (_C, "supplied_at_window", "submit_decided"): T(
        "sent_decided", "accepted_at_window", send="application"
    ),
    (_C, "supplied_at_window", "window_refuse"): T("refused", "refused_at_window"),
    (_C, "supplied_at_window", "withdraw"): T("withdrawn", "withdrawn"),
    (_C, "collected", "window_refuse"): T("refused", "refused_at_window"),
    (_C, "awaiting_materials", "window_refuse"): T("refused", "refused_at_window"),
    (_C, "collected", "withdraw"): T("withdrawn", "withdrawn"),
    (_C, "awaiting_materials", "withdraw"): T("withdrawn", "withdrawn"),
    # 签收 and first review by the handling side.
    (_C, "sent", "received"): T("under_review", "received_by_handler"),
    (_C, "sent_decided", "received"): T("accepted", "received_by_handler"),
    (_C, "under_review", "accept"): T("accepted", "accepted"),
    (_C, "under_review", "request_supplement"): T("supplement_requested", "supplement_requested"),
    (_C, "under_review", "refuse"): T("refused", "refused"),
    (_C, "supplement_requested", "supplement"): T("supplied", "supplied", send="supplement"),
    (_C, "supplied", "accept"): T("accepted", "accepted"),
    (_C, "supplied", "refuse"): T("refused", "refused"),
    # 远程视频核验 in a virtual-window session: recorded in both chains; no state changes.
    **{(_C, s, "video_check"): T(s, "video_checked") for s in _C_REVIEWING},
    # 撤回 before the decision; the decision may cross the withdrawal on the wire.
    (_C, "sent", "withdraw"): T("withdrawing", "withdrawal_requested", send="withdrawal"),
    (_C, "under_review", "withdraw"): T("withdrawing", "withdrawal_requested", send="withdrawal"),
    (_C, "supplement_requested", "withdraw"): T(
        "withdrawing", "withdrawal_requested", send="withdrawal"
    ),
    (_C, "supplied", "withdraw"): T("withdrawing", "withdrawal_requested", send="withdrawal"),
    (_C, "withdrawing", "received"): T("withdrawing", "received_by_handler"),
    (_C, "withdrawing", "request_supplement"): T("withdrawing", "supplement_requested"),
    (_C, "withdrawing", "accept"): T("accepted", "accepted"),
    (_C, "withdrawing", "refuse"): T("refused", "refused"),
    (_C, "withdrawing", "withdrawn"): T("withdrawn", "withdrawn"),
    **{(_C, s, "withdrawal_refused"): T(s, "withdrawal_refused") for s in _C_DECIDED},
    # 办理, with 特别程序 stopping the clock.
    (_C, "accepted", "forwarded"): T("processing", "forwarded"),
    (_C, "processing", "step"): T("processing", "progress"),
    (_C, "processing", "suspend"): T("suspended", "suspended"),
    (_C, "suspended", "step"): T("suspended", "progress"),
    (_C, "suspended", "resume"): T("processing", "resumed"),
    # 办结: the outcome arrives and is acknowledged with our own receipt.
    (_C, "processing", "conclude"): T("outcome_received", "outcome_received", send="outcome_ack"),
    # 送达, 评价, 归档.
    (_C, "outcome_received", "deliver"): T("delivered", "delivered", send="delivery"),
    (_C, "delivered", "evaluate"): T("evaluated", "evaluated", send="evaluation"),
    (_C, "delivered", "archive"): T("archived", "archived"),
    (_C, "evaluated", "archive"): T("archived", "archived"),
    (_C, "refused", "archive"): T("archived", "archived"),
    (_C, "withdrawn", "archive"): T("archived", "archived"),
    # ---- handling side (办理地) --------------------------------------------------
    # 签收, starting the 5-day 补正 notice clock of 行政许可法 §32.
    (_H, "new", "submit"): T("received", "received", send="received", timers=("+notice",)),
    (_H, "new", "submit_decided"): T(
        "forwarding", "received_accepted", send="received", timers=("+promise",)
    ),
    # 初审: 受理 / 补正 (once: 一次性告知) / 不予受理; silence is acceptance.
    (_H, "received", "accept"): T(
        "forwarding", "accepted", send="decision", timers=("-notice", "+promise")
    ),
    (_H, "received", "request_supplement"): T(
        "supplement_requested", "supplement_requested", send="decision", timers=("-notice",)
    ),
    (_H, "received", "refuse"): T("refused", "refused", send="decision", timers=("-notice",)),
    (_H, "received", "notice_due"): T(
        "forwarding", "deemed_accepted", send="decision", timers=("+promise",)
    ),
    (_H, "supplement_requested", "supplement"): T("supplied", "supplied"),
    (_H, "supplied", "accept"): T("forwarding", "accepted", send="decision", timers=("+promise",)),
    (_H, "supplied", "refuse"): T("refused", "refused", send="decision"),
    **{(_H, s, "video_check"): T(s, "video_checked", send="video_check") for s in _H_REVIEWING},
    # 撤回: accepted before the decision, refused after it.
    (_H, "received", "withdraw"): T("withdrawn", "withdrawn", send="withdrawn", timers=("-notice",)),
    (_H, "supplement_requested", "withdraw"): T("withdrawn", "withdrawn", send="withdrawn"),
    (_H, "supplied", "withdraw"): T("withdrawn", "withdrawn", send="withdrawn"),
    **{(_H, s, "withdraw"): T(s, "withdrawal_refused", send="rejection") for s in _H_DECIDED},
    # 流转 to the department: attempts counted, dead letter when exhausted.
    (_H, "forwarding", "forward_failed"): T("forwarding", None),
    (_H, "forwarding", "forward_exhausted"): T("dead_letter", "dead_lettered"),
    (_H, "dead_letter", "operator_retry"): T("forwarding", "retry_requested"),
    (_H, "forwarding", "forwarded"): T("processing", "forwarded", send="forwarded"),
    # 办理 and 特别程序.
    (_H, "processing", "step"): T("processing", "progress", send="progress"),
    (_H, "processing", "suspend"): T("suspended", "suspended", send="progress", timers=("-promise",)),
    (_H, "suspended", "step"): T("suspended", "progress", send="progress"),
    (_H, "suspended", "resume"): T("processing", "resumed", send="progress", timers=("+promise",)),
    (_H, "forwarding", "promise_due"): T("forwarding", "overdue"),
    (_H, "dead_letter", "promise_due"): T("dead_letter", "overdue"),
    (_H, "processing", "promise_due"): T("processing", "overdue"),
    # 办结 and what follows at the collecting side.
    (_H, "processing", "conclude"): T("concluded", "concluded", send="outcome", timers=("-promise",)),
    (_H, "concluded", "outcome_ack"): T("outcome_acknowledged", "outcome_acknowledged"),
    (_H, "outcome_acknowledged", "deliver"): T("delivered", "delivered"),
    (_H, "delivered", "evaluate"): T("evaluated", "evaluated"),
    (_H, "delivered", "archive"): T("archived", "archived"),
    (_H, "archived", "evaluate"): T("archived", "evaluated"),  # 好差评 after archiving
    (_H, "evaluated", "archive"): T("archived", "archived"),
    (_H, "refused", "archive"): T("archived", "archived"),
    (_H, "withdrawn", "archive"): T("archived", "archived"),
}

#: Events a side feeds in itself (staff, timers, department adapters), per role.
LOCAL_EVENTS: dict[Role, frozenset[str]] = {
    "collecting": frozenset({
        "collect", "submit", "submit_decided", "window_supplement", "window_supplemented",
        "window_refuse", "withdraw", "supplement", "deliver", "evaluate", "archive",
    }),
    "handling": frozenset({
        "accept", "request_supplement", "refuse", "notice_due", "forward_failed",
        "forward_exhausted", "operator_retry", "forwarded", "step", "suspend", "resume",
        "promise_due", "conclude", "archive", "video_check",
    }),
}

#: Events that arrive as messages from the other side, per role.
REMOTE_EVENTS: dict[Role, frozenset[str]] = {
    "collecting": frozenset({
        "received", "accept", "request_supplement", "refuse", "withdrawn", "withdrawal_refused",
        "forwarded", "step", "suspend", "resume", "conclude", "video_check",
    }),
    "handling": frozenset({
        "submit", "submit_decided", "supplement", "withdraw", "outcome_ack", "deliver",
        "evaluate",
    }),
}

TIMER_EVENTS = {"notice": "notice_due", "promise": "promise_due"}

COLLECTING_STATES = tuple(dict.fromkeys(
    s for (role, state, _), t in TRANSITIONS.items() if role == "collecting"
    for s in (state, t.new_state)
))
HANDLING_STATES = tuple(dict.fromkeys(
    s for (role, state, _), t in TRANSITIONS.items() if role == "handling"
    for s in (state, t.new_state)
))

STATE_NAMES_ZH = {
    "new": "新建",
    "collected": "已收件",
    "awaiting_materials": "窗口补正中",
    "supplied_at_window": "窗口已补正",
    "sent": "已推送",
    "sent_decided": "已受理并推送",
    "under_review": "已签收·初审中",
    "received": "已签收·初审中",
    "supplement_requested": "待补正",
    "supplied": "已补正·待决定",
    "withdrawing": "撤回中",
    "withdrawn": "已撤回",
    "refused": "不予受理",
    "accepted": "已受理",
    "forwarding": "已受理·流转中",
    "dead_letter": "流转失败·待人工处理",
    "processing": "办理中",
    "suspended": "特别程序中",
    "concluded": "已办结·待确认",
    "outcome_received": "已办结·待送达",
    "outcome_acknowledged": "已办结·待送达",
    "delivered": "已送达",
    "evaluated": "已评价",
    "archived": "已归档",
}


#: Receipt kinds as people read them (timelines, the public verification page).
RECEIPT_NAMES_ZH = {
    "collected": "已收件（通办专窗收件登记）",
    "submitted": "已发送至办理地",
    "accepted_at_window": "窗口已受理并发送",
    "window_supplement_notice": "窗口一次性告知补正",
    "window_supplemented": "窗口已补正材料",
    "refused_at_window": "窗口不予受理",
    "received_by_handler": "办理地已签收",
    "received": "已签收",
    "received_accepted": "已签收（收件地已受理）",
    "accepted": "已受理",
    "deemed_accepted": "逾期未告知补正，视为受理",
    "supplement_requested": "办理地要求补正",
    "video_checked": "远程视频核验",
    "supplied": "已补正",
    "refused": "不予受理",
    "withdrawal_requested": "已申请撤回",
    "withdrawn": "已撤回",
    "withdrawal_refused": "撤回未获同意（已作出受理决定）",
    "forwarded": "已流转至承办部门",
    "dead_lettered": "流转失败，待人工处理",
    "retry_requested": "重新流转",
    "progress": "办理进展",
    "suspended": "特别程序开始",
    "resumed": "特别程序结束",
    "overdue": "已超承诺时限",
    "concluded": "已办结",
    "outcome_received": "收到办理结果",
    "outcome_acknowledged": "收件地已确认办理结果",
    "delivered": "已送达",
    "evaluated": "已评价",
    "archived": "已归档",
}

