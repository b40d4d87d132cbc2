"""The desk's forms as protocol bodies: each function checks what the reviewer or the
department typed (``values``: the form's text fields; checkboxes are ``"on"``), puts
what to do about every problem in ``errors`` under the field's name (shown in place),
and returns the body, or ``None`` when anything is wrong."""

from __future__ import annotations

import datetime
from typing import Any

from pydantic import ValidationError

from protocol import bodies as b
from protocol.catalog import CatalogEntry
from protocol.codes import BUSINESS_ACTIONS, DELIVERY_MODES, OUTCOME_RESULTS, SPECIAL_PROCEDURES

__all__ = ["accept", "conclude", "refuse", "resume", "step", "supplement_request", "suspend"]

#: The reason a ticked catalog material carries when the reviewer wrote none.
DEFAULT_REASON = "未提交或不符合受理标准，请按事项目录的要求补交。"


def accept(values: dict[str, Any], errors: dict[str, str], now: int, promised: str,
           reviewer: str) -> b.Accept | None:
    doc_no = values.get("doc_no", "")
    if not doc_no:
        errors["doc_no"] = "请填写受理文书编号（受理通知书上的文号），例如 济医保受〔2026〕0001号。"
    elif len(doc_no) > 100:
        errors["doc_no"] = "受理文书编号不超过 100 个字符，请核对后重新填写。"
    if errors:
        return None
    return b.Accept(doc_no=doc_no, accepted_at=now, promised_date=promised, decided_by=reviewer)


def supplement_request(entry: CatalogEntry | None, values: dict[str, Any], errors: dict[str, str],
                       now: int, reviewer: str) -> b.SupplementRequest | None:
    """一次性告知: the catalog materials ticked (each with its reason) and free-text items,
    one per line as ``材料：原因``."""
    items: list[b.SupplementItem] = []
    for i, material in enumerate(entry.materials if entry else ()):
        if values.get(f"sm{i}") == "on":
            reason = values.get(f"sm{i}_reason", "") or DEFAULT_REASON
            items.append(b.SupplementItem(material=material.name, reason=reason[:2000]))
    for line in values.get("extra_items", "").splitlines():
        line = line.strip()
        if not line:
            continue
        name, _, reason = line.replace(":", "：").partition("：")
        name, reason = name.strip(), reason.strip()
        if not name or len(name) > 200:
            errors["extra_items"] = (f"“{line[:30]}”格式有误：每行写一项，材料名称不超过 200 字，"
                                     f"名称后可加全角冒号和补正原因。")
            break
        items.append(b.SupplementItem(material=name, reason=reason or DEFAULT_REASON))
    if not items and "extra_items" not in errors:
        errors["sm"] = "请至少勾选一项需补正的材料，或在“其他补正内容”中逐行填写。"
    if len(items) > 100:
        errors["sm"] = "一次最多告知 100 项补正内容，请合并相近的事项。"
    if errors:
        return None
    return b.SupplementRequest(items=tuple(items), note=values.get("sm_note", ""),
                               notified_at=now, decided_by=reviewer)


def refuse(values: dict[str, Any], errors: dict[str, str], now: int,
           reviewer: str) -> b.Refuse | None:
    reason, basis = values.get("reason", ""), values.get("legal_basis", "")
    if not reason:
        errors["reason"] = "请填写不予受理的理由，申请人会收到这段文字。"
    if not basis:
        errors["legal_basis"] = "请填写法律依据，例如《中华人民共和国行政许可法》第三十二条第一款第（二）项。"
    if errors:
        return None
    return b.Refuse(reason=reason, legal_basis=basis, refused_at=now, decided_by=reviewer)


def step(values: dict[str, Any], errors: dict[str, str], now: int,
         handler: str) -> b.Progress | None:
    name, action = values.get("step_name", ""), values.get("step_action", "pass")
    if not name or len(name) > 200:
        errors["step_name"] = "请填写办理环节名称（不超过 200 字），例如 审查、审核、决定。"
    if action not in BUSINESS_ACTIONS:
        errors["step_action"] = "请选择业务动作：通过、退回或其他。"
    if errors:
        return None
    return b.Progress(event="step", at=now, step=name, action=action,
                      handler=handler, opinion=values.get("step_opinion", ""))


def suspend(values: dict[str, Any], errors: dict[str, str], now: int,
            handler: str) -> b.Progress | None:
    kind, name = values.get("sp_type", ""), values.get("sp_name", "")
    reason, days = values.get("sp_reason", ""), values.get("sp_days", "")
    if not kind.isdigit() or int(kind) not in SPECIAL_PROCEDURES:
        errors["sp_type"] = "请选择特别程序类型。"
    if not name or len(name) > 200:
        errors["sp_name"] = "请填写特别程序名称，例如 听证、检验检测、专家评审、现场核查。"
    if not reason:
        errors["sp_reason"] = "请填写启动特别程序的理由或依据。"
    if not days.isdigit() or not 1 <= int(days) <= 365:
        errors["sp_days"] = "请填写预计所需的工作日数（1 到 365 的整数）；承诺时限在此期间暂停。"
    if errors:
        return None
    special = b.SpecialProcedure(type=int(kind), name=name,  # type: ignore[arg-type]
                                 reason=f"{reason}（预计 {int(days)} 个工作日）"[:2000])
    return b.Progress(event="suspend", at=now, step=f"特别程序开始：{name}"[:200],
                      handler=handler, opinion=values.get("sp_opinion", ""), special=special)


def resume(started: b.SpecialProcedure | None, values: dict[str, Any], errors: dict[str, str],
           now: int, handler: str) -> b.Progress | None:
    result = values.get("sp_result", "")
    if not result:
        errors["sp_result"] = "请填写特别程序的结果，例如 听证结束，意见已采纳。"
    if errors:
        return None
    base = started or b.SpecialProcedure(type=2, name="特别程序", reason="")
    special = base.model_copy(update={"result": result[:2000]})
    return b.Progress(event="resume", at=now, step=f"特别程序结束：{base.name}"[:200],
                      handler=handler, opinion="", special=special)


def conclude(values: dict[str, Any], errors: dict[str, str], now: int, handler: str,
             issuer: str) -> b.Outcome | None:
    result, delivery = values.get("o_result", ""), values.get("o_delivery", "")
    if result not in OUTCOME_RESULTS:
        errors["o_result"] = "请选择办结结果。"
    if delivery not in DELIVERY_MODES:
        errors["o_delivery"] = "请选择结果送达方式：窗口领取、邮寄送达或电子送达。"
    cert_name = values.get("o_cert_name", "") or None
    cert_no = values.get("o_cert_no", "") or None
    if result == "issued" and (cert_name is None or cert_no is None):
        errors["o_cert_no"] = "出证办结请填写结果证照名称和证照编号。"
    if result == "returned" and not values.get("o_description"):
        errors["o_description"] = "退回办结（不予许可）请写明理由，申请人会收到这段文字。"
    valid_until = values.get("o_valid_until", "") or None
    if valid_until is not None and not _is_date(valid_until):
        errors["o_valid_until"] = "证照有效期限请按 YYYY-MM-DD 填写，或留空。"
    elicence = values.get("o_elicence", "") or None
    if errors:
        return None
    try:
        return b.Outcome(result=result, concluded_at=now,
                         description=values.get("o_description", ""), certificate_name=cert_name,
                         certificate_no=cert_no, elicence_id=elicence, valid_until=valid_until,
                         issuer=issuer, handler=handler, delivery=delivery,
                         by_post=delivery == "post")
    except ValidationError:
        errors["o_elicence"] = "电子证照标识只能包含字母、数字、点和连字符，请核对后重新填写，或留空。"
        return None


def _is_date(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10
