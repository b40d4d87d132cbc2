"""A case as the staff pages show it: state, timeline of both sides' receipts, the
messages' bodies (补正 list, decision, outcome, delivery, evaluation). Read-only;
shared by the window's and the desk's pages.
"""

from __future__ import annotations

from typing import Any

from node.app import Node
from node.web import window_forms as forms
from node.web.live import region_name
from protocol import bodies as b
from protocol import decode
from protocol.codes import (
    DELIVERY_MODES,
    EVALUATION_CHANNELS,
    OUTCOME_RESULTS,
    SATISFACTION,
)
from protocol.errors import ProtocolError
from protocol.fields import clock_text
from protocol.states import RECEIPT_NAMES_ZH, STATE_NAMES_ZH
from protocol.wire import decode_envelope, decode_payload, receipt_from_fields

__all__ = ["case_view", "live_state", "window_bodies", "withdrawal_state"]


def case_view(node: Node, row: dict[str, Any]) -> dict[str, Any]:
    """What the detail page shows of a case: its application, the messages both ways
    (补正 list, outcome, delivery, evaluation) and the receipts of both chains."""
    case_id = row["case_id"]
    raw = node.store.body(case_id, "application")
    application = b.Application.model_validate(decode(raw)) if raw else None
    bodies: dict[str, Any] = {}
    for wire, _, plaintext in node.store.envelopes(case_id):
        try:
            envelope = decode_envelope(wire)
            body, _ = decode_payload(envelope.kind, plaintext)
        except ProtocolError:
            continue
        key: str = envelope.kind
        if key == "decision":
            key = f"decision_{body.outcome}"
        bodies[key] = body  # the newest of each kind
    sent_application = bodies.get("application")
    if isinstance(sent_application, b.Application) and sent_application.window_decision:
        bodies.setdefault("decision_accept", sent_application.window_decision)
    window = window_bodies(node, case_id)
    if "window_refuse" in window:
        bodies.setdefault("decision_refuse", window["window_refuse"])
    receipts = []
    for data in node.store.receipts(case_id):
        receipt = receipt_from_fields(decode(data))
        receipts.append({"at": receipt.at, "when": clock_text(receipt.at), "kind": receipt.kind,
                         "name": RECEIPT_NAMES_ZH.get(receipt.kind, receipt.kind),
                         "side": "本地" if receipt.actor == node.region
                         else region_name(receipt.actor), "detail": _receipt_detail(receipt.data)})
    receipts.sort(key=lambda r: (r["at"], r["side"] != "本地"))
    request = bodies.get("decision_supplement")
    outcome = bodies.get("outcome")
    delivery = bodies.get("delivery")
    evaluation = bodies.get("evaluation")
    stars = {c: s for s, c in forms.STARS.items()}
    return {
        "case": {**row, "state_zh": STATE_NAMES_ZH.get(row["state"], row["state"]),
                 "peer_name": region_name(row["peer"]), "updated": clock_text(row["updated_at"])},
        "application": application, "receipts": receipts, "receipt_count": len(receipts),
        "supplement_request": request,
        "supplement_notified": clock_text(request.notified_at) if request else "",
        "supplied": bodies.get("supplement"),
        "window_request": window.get("window_supplement"),
        "window_supplied": window.get("window_supplemented"),
        "window_decides": bool(application and application.acceptance == "collecting_decides"),
        "accept": bodies.get("decision_accept"), "refuse": bodies.get("decision_refuse"),
        "outcome": outcome, "outcome_result": OUTCOME_RESULTS.get(outcome.result) if outcome else "",
        "outcome_delivery": DELIVERY_MODES.get(outcome.delivery) if outcome else "",
        "outcome_at": clock_text(outcome.concluded_at) if outcome else "",
        "delivery": delivery, "delivery_mode": DELIVERY_MODES.get(delivery.mode) if delivery else "",
        "delivery_at": clock_text(delivery.delivered_at) if delivery else "",
        "evaluation": evaluation,
        "withdrawal": withdrawal_state(row["state"], [str(r["kind"]) for r in receipts]),
        "evaluation_stars": stars.get(evaluation.satisfaction, 0) if evaluation else 0,
        "evaluation_zh": SATISFACTION.get(evaluation.satisfaction) if evaluation else "",
        "evaluation_channel": EVALUATION_CHANNELS.get(evaluation.channel) if evaluation else "",
    }


#: The window's own decisions (异地受理、远程办理): local events, kept in the event log.
_WINDOW_EVENTS: dict[str, Any] = {"window_supplement": b.SupplementRequest,
                                  "window_supplemented": b.Supplement, "window_refuse": b.Refuse}


def window_bodies(node: Node, case_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for data in node.store.events(case_id):
        record = decode(data)
        model = _WINDOW_EVENTS.get(record.get("event", ""))
        if model is not None and "body" in record:
            body = record["body"]
            found[record["event"]] = model.model_validate(
                decode(body) if isinstance(body, bytes) else body)
    return found


def withdrawal_state(state: str, kinds: list[str]) -> str:
    """撤回 as the window sees it: ``withdrawing`` (asked, no answer yet), ``withdrawn``,
    ``refused`` (the handling side had already decided: 撤回未获同意) or ``""``."""
    if state == "withdrawing":
        return "withdrawing"
    if state == "withdrawn" or (state == "archived" and "withdrawn" in kinds):
        return "withdrawn"
    return "refused" if "withdrawal_refused" in kinds else ""


def live_state(node: Node, case_id: str) -> dict[str, Any] | None:
    row = node.store.case_row(case_id)
    if row is None:
        return None
    return {"state": row["state"], "state_zh": STATE_NAMES_ZH.get(row["state"], row["state"]),
            "receipts": len(node.store.receipts(case_id)), "updated": row["updated_at"]}


def _receipt_detail(data: dict[str, Any]) -> str:
    parts = []
    if "doc_no" in data:
        parts.append(f"受理文书编号 {data['doc_no']}")
    if "promised_date" in data:
        parts.append(f"承诺办结 {data['promised_date']}")
    if "items" in data:
        parts.append(f"{data['items']} 项待补正")
    if "department" in data:
        parts.append(str(data["department"]))
    if "result" in data:
        parts.append(OUTCOME_RESULTS.get(str(data["result"]), str(data["result"])))
    if "mode" in data:
        parts.append(DELIVERY_MODES.get(str(data["mode"]), str(data["mode"])))
    if "tracking_no" in data:
        parts.append(f"单号 {data['tracking_no']}")
    if "satisfaction" in data:
        parts.append(SATISFACTION.get(data["satisfaction"], ""))
    return "；".join(p for p in parts if p)
