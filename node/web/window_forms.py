"""The window's forms as protocol bodies: each function checks what the clerk typed
(``values``: the form's text fields; checkboxes are ``"on"``), puts what to do about
every problem in ``errors`` under the field's name (shown in place), and returns the
body, or ``None`` when anything is wrong."""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Any

from pydantic import ValidationError

from node.app import Node
from node.materials import material_ref
from protocol import bodies as b
from protocol.catalog import CatalogEntry
from protocol.codes import COLLECTION_MODES, DELIVERY_MODES, EVALUATION_CHANNELS, IDENTITY_METHODS
from protocol.fields import REGION_PATTERN, check_id_number, date_of
from protocol.machine import Case

__all__ = ["DECISIONS", "PAPER_MODES", "PLACES", "STARS", "applicant", "application",
           "delivery", "evaluation", "joint_entries", "joint_part", "places", "supplement",
           "window_accept", "window_decision", "window_refuse", "window_supplement",
           "withdrawal"]

#: Paper materials: how the window took them (electronic ones are the uploaded scans).
PAPER_MODES = {k: v for k, v in COLLECTION_MODES.items() if k != "electronic"}
#: 联办收件: the places the page offers (the first two required).
PLACES = 4
#: 好差评 as the applicant sees it (five stars: 非常满意) and the A.8 code it records.
STARS = {5: 1, 4: 2, 3: 3, 2: 4, 1: 5}
#: 异地受理、远程办理: what the window itself may decide (the page's ``w_decision``).
DECISIONS = {"accept": "窗口受理", "supplement": "窗口一次性告知补正", "refuse": "窗口不予受理"}


def application(node: Node, entry: CatalogEntry, values: dict[str, Any],
                 errors: dict[str, str], clerk: str) -> b.Application | None:
    """The application as collected. For a collecting-decides entry (异地受理、远程办理) whose
    clerk decides 补正 or 不予受理 at the window, missing materials and a failed 形式审查
    are what that decision is about, so they do not stop the collection."""
    decides = entry.acceptance == "collecting_decides"
    lenient = decides and values.get("w_decision") in ("supplement", "refuse")
    built = _application(node, entry, values, errors, clerk, lenient)
    return built.model_copy(update={"acceptance": "collecting_decides"}) \
        if built is not None and decides else built


def _application(node: Node, entry: CatalogEntry, values: dict[str, Any],
                 errors: dict[str, str], clerk: str, lenient: bool) -> b.Application | None:
    now = node.clock()
    today = date_of(now).isoformat()
    applicant_ = applicant(values, errors)
    form = []
    for field in entry.form:
        key = f"f_{field.name}"
        try:
            checked = field.check(values.get(key, ""))
        except ValueError as exc:
            errors[key] = _zh(str(exc)) + "。请按填写说明修改。"
            continue
        if checked:
            form.append(b.FormValue(field=field.name, value=checked))
    scans = values.get("scans", [])
    scan_rows = [r for r in (node.store.material(o) for o in scans)
                 if r is not None and r["state"] == "local" and not r["case_id"]]
    scanned = {r["name"] for r in scan_rows}
    materials: list[b.MaterialRef] = []
    deferred: list[b.DeferredItem] = []
    for i, m in enumerate(entry.materials):
        collected = values.get(f"m{i}_collected") == "on"
        is_deferred = values.get(f"m{i}_deferred") == "on" and m.deferrable
        if collected and is_deferred:
            errors[f"m{i}"] = f"“{m.name}”已勾选收取，无需再登记容缺；请取消其中一项。"
            continue
        if collected:
            mode = values.get(f"m{i}_mode", "")
            count = values.get(f"m{i}_count", "")
            if mode not in PAPER_MODES:
                errors[f"m{i}"] = f"请选择“{m.name}”的收取方式。"
            elif not count.isdigit() or not 0 < int(count) <= 99:
                errors[f"m{i}"] = f"“{m.name}”的份数应为 1 到 99 的整数，请修改。"
            else:
                materials.append(b.MaterialRef(
                    name=m.name, collected=True, mode=mode, count=int(count),
                    trust="B" if mode == "paper_original" else "C",
                    verified_by=clerk if mode == "paper_original" else None))
        elif is_deferred:
            pledge, due = values.get(f"m{i}_pledge", ""), values.get(f"m{i}_due", "")
            if not pledge:
                errors[f"m{i}"] = f"请填写申请人对“{m.name}”的容缺承诺内容。"
            elif not _is_date(due) or due <= today:
                errors[f"m{i}"] = (f"请填写“{m.name}”的承诺补交日期（今天之后，格式 YYYY-MM-DD），"
                                   f"并与申请人确认。")
            else:
                deferred.append(b.DeferredItem(material=m.name, pledge=pledge, due=due))
        elif m.necessity == "required" and m.name not in scanned and not lenient:
            errors[f"m{i}"] = (f"“{m.name}”是必要材料：请收取、上传扫描件" +
                               ("，或登记申请人的容缺承诺。" if m.deferrable else "后再提交。"))
    materials += [material_ref(r, trust="B") for r in scan_rows]
    method = values.get("identity_method", "")
    if method not in IDENTITY_METHODS:
        errors["identity_method"] = "请选择身份核验方式。"
    if values.get("identity_passed") != "on":
        errors["identity_passed"] = "身份核验通过后才能收件；核验未通过的，请告知申请人携带有效证件再来办理。"
    passed = values.get("review_passed") == "on"
    if not passed and not lenient:
        errors["review_passed"] = ("形式审查通过后才能收件；材料不齐且不能容缺的，"
                                   "请一次性告知申请人需补齐的材料。")
    if errors or applicant_ is None:
        return None
    window = b.WindowRecord(
        window_no=node.window_no(now), window=f"{node.config.name}跨域通办专窗", clerk=clerk,
        received_at=now,
        identity=b.IdentityCheck(method=method, passed=True, checked_at=now,
                                 checked_by=clerk),
        formal_review=b.FormalReview(passed=passed, reviewed_at=now, reviewed_by=clerk,
                                     notes=values.get("review_notes", "")))
    return b.Application(
        matter=b.MatterRef(code=entry.code, version=entry.version, name=entry.name),
        case_type=entry.case_type, source=1, acceptance="handling_decides", applicant=applicant_,
        form=tuple(form), materials=tuple(materials), deferred=tuple(deferred), window=window,
        summary=f"{applicant_.name} {entry.name}"[:2000])


APPLICANT_PROBLEMS = {
    "a_name": "请填写申请人姓名或单位名称。",
    "a_id_number": "证件号码有误，请核对证件后重新输入（居民身份证为 18 位，末位可为 X）。",
    "a_phone": "手机号码应为 11 位数字，固定电话请加区号，例如 0371-12345678。",
    "a_region": "属地代码应为 6 位行政区划代码，例如 370102；用于确定办理地。",
    "a_address": "通讯地址不超过 200 字，请精简。",
}


def applicant(values: dict[str, Any], errors: dict[str, str]) -> b.Applicant | None:
    kind = values.get("a_kind", "1")
    id_type = values.get("a_id_type", "111")
    number = values.get("a_id_number", "").upper()
    if id_type == "111":
        try:
            number = check_id_number(number)
        except ValueError:
            errors["a_id_number"] = APPLICANT_PROBLEMS["a_id_number"]
    fields = {"kind": int(kind) if kind.isdigit() else 0, "name": values.get("a_name", ""),
              "id_type": id_type, "id_number": number, "phone": values.get("a_phone") or None,
              "address": values.get("a_address") or None, "region": values.get("a_region", "")}
    if not fields["phone"]:
        errors["a_phone"] = "请填写申请人的联系电话，办理结果和补正通知会用到。"
    try:
        applicant = b.Applicant.model_validate(fields)
    except ValidationError as exc:
        for problem in exc.errors():
            key = f"a_{problem['loc'][0]}" if problem["loc"] else "a_name"
            errors.setdefault(key, APPLICANT_PROBLEMS.get(key, "请核对后重新填写。"))
        return None
    return None if errors.keys() & APPLICANT_PROBLEMS.keys() else applicant


def supplement(node: Node, request: b.SupplementRequest | None, values: dict[str, Any],
               scans: list[str], errors: dict[str, str], now: int,
               clerk: str) -> b.Supplement | None:
    """补正材料: the paper originals ticked against the request's items and the scans."""
    refs: list[b.MaterialRef] = []
    for i, item in enumerate(request.items if request else ()):
        if values.get(f"s{i}_paper") == "on":
            refs.append(b.MaterialRef(name=item.material, collected=True, mode="paper_original",
                                      count=1, trust="B", verified_by=clerk))
    for obj in scans:
        row = node.store.material(obj)
        if row is not None and row["state"] == "local" and not row["case_id"]:
            refs.append(material_ref(row, trust="B"))
    if not refs:
        errors["s_materials"] = "请勾选申请人已补交的纸质材料，或上传补正材料的扫描件，然后再提交。"
        return None
    return b.Supplement(materials=tuple(refs), note=values.get("s_note", ""), supplied_at=now)


def delivery(values: dict[str, Any], errors: dict[str, str], now: int) -> b.Delivery | None:
    mode = values.get("d_mode", "")
    recipient = values.get("d_recipient", "")
    courier = values.get("d_courier", "") or None
    tracking = values.get("d_tracking", "") or None
    if mode not in DELIVERY_MODES:
        errors["d_mode"] = "请选择送达方式：窗口领取、邮寄送达或电子送达。"
    if not recipient:
        errors["d_recipient"] = "请填写接收人姓名（本人领取的填申请人姓名）。"
    if mode == "post":
        if courier is None:
            errors["d_courier"] = "邮寄送达请填写寄送单位，例如 中国邮政EMS。"
        if tracking is None or not (4 <= len(tracking) <= 40
                                    and all(c.isascii() and (c.isalnum() or c == "-")
                                            for c in tracking)):
            errors["d_tracking"] = "请填写物流单号：4 至 40 位字母、数字或连字符，照面单抄录。"
    if errors:
        return None
    return b.Delivery(mode=mode, delivered_at=now, recipient=recipient,
                      courier=courier if mode == "post" else None,
                      tracking_no=tracking if mode == "post" else None,
                      note=values.get("d_note", ""))


def evaluation(node: Node, values: dict[str, Any], errors: dict[str, str],
                now: int) -> b.Evaluation | None:
    stars = values.get("e_stars", "")
    channel = values.get("e_channel", "")
    if not stars.isdigit() or int(stars) not in STARS:
        errors["e_stars"] = "请按申请人的评价选择一至五星。"
    if channel not in EVALUATION_CHANNELS:
        errors["e_channel"] = "请选择评价渠道。"
    if errors:
        return None
    return b.Evaluation(satisfaction=STARS[int(stars)], channel=channel,  # type: ignore[arg-type]
                        evaluated_at=now, text=values.get("e_text", ""), region=node.region)


# ---------------------------------------------------------------- 多地联办


@dataclasses.dataclass(frozen=True)
class JointEntries:
    """What the 联办收件 page asks once for every part: the union, by name, of the form
    fields and materials of the catalog entries offering the matter as 多地联办."""

    entries: tuple[CatalogEntry, ...]
    fields: tuple[Any, ...]  # protocol.catalog.FormField
    materials: tuple[Any, ...]  # protocol.catalog.Material

    @property
    def name(self) -> str:
        return str(self.entries[0].name)


def joint_entries(node: Node, basic_code: str) -> JointEntries | None:
    """The entries in force that offer ``basic_code`` as 多地联办, None if there are none."""
    entries: list[CatalogEntry] = []
    for region, code, _, status, _, modes, _, _ in node.catalog.index.offers(basic_code):
        entry = node.catalog.entry(region, code) if "joint" in modes and status == "active" else None
        if entry is not None and "joint" in entry.modes and entry.status == "active" \
                and all((e.region, e.code) != (region, code) for e in entries):
            entries.append(entry)
    if not entries:
        return None
    fields = {f.name: f for e in entries for f in e.form}
    materials = {m.name: m for e in entries for m in e.materials}
    return JointEntries(tuple(entries), tuple(fields.values()), tuple(materials.values()))


def places(values: dict[str, Any], errors: dict[str, str]) -> list[str]:
    """The places named (one per 办理地点), at least two, each a 行政区划代码."""
    named = [values.get(f"loc{i}", "") for i in range(PLACES)]
    named = [p for p in named if p]
    if any(not re.fullmatch(REGION_PATTERN, p) for p in named):
        errors["locations"] = "地点应为 6、9 或 12 位行政区划代码，例如 370102，请逐个核对。"
    elif len(named) < 2:
        errors["locations"] = ("多地联办至少要填两个地点（如迁出地和迁入地）；只涉及一地的，"
                               "请回到“事项查询”按异地代收代办收件。")
    elif len(set(named)) < len(named):
        errors["locations"] = "同一个地点填了两次，请删去重复的地点。"
    return named


def joint_part(node: Node, joint: JointEntries, entry: CatalogEntry, values: dict[str, Any],
               errors: dict[str, str], clerk: str) -> b.Application | None:
    """One part's application: the page's values as ``entry``'s own form and checklist
    (materials are numbered by the page, ``m<k>``; the entry numbers its own)."""
    page_index = {m.name: k for k, m in enumerate(joint.materials)}
    own = {k: v for k, v in values.items() if not k.startswith("m")}
    for i, m in enumerate(entry.materials):
        k = page_index[m.name]
        own.update({f"m{i}_{key[len(f'm{k}_'):]}": v for key, v in values.items()
                    if key.startswith(f"m{k}_")})
    own["scans"] = []
    mine: dict[str, str] = {}
    application_ = application(node, entry, own, mine, clerk)
    for key, problem in mine.items():
        if re.fullmatch(r"m\d+", key):
            key = f"m{page_index[entry.materials[int(key[1:])].name]}"
        errors.setdefault(key, problem)
    return application_


def withdrawal(values: dict[str, Any], errors: dict[str, str], now: int,
               clerk: str) -> b.Withdrawal | None:
    """撤回: the applicant's reason, as the clerk records it."""
    reason = values.get("w_reason", "")
    if not reason:
        errors["w_reason"] = "请填写申请人撤回申请的原因（如“申请人决定暂不办理”），然后再提交。"
        return None
    return b.Withdrawal(reason=reason, requested_at=now, requested_by=clerk)


# ---------------------------------------------------------------- 异地受理、远程办理


def window_decision(node: Node, entry: CatalogEntry, values: dict[str, Any],
                    errors: dict[str, str], now: int, clerk: str) -> Any:
    """The window's own decision on the 收件登记 page (``w_decision``)."""
    decision = values.get("w_decision", "")
    if decision == "accept":
        return window_accept(entry, node, values, errors, now, clerk)
    if decision == "supplement":
        return window_supplement(entry, values, errors, now, clerk)
    if decision == "refuse":
        return window_refuse(values, errors, now, clerk)
    errors["w_decision"] = "本事项由收件地窗口受理：请选择窗口受理、一次性告知补正或不予受理。"
    return None


def window_accept(entry: CatalogEntry, node: Node, values: dict[str, Any],
                  errors: dict[str, str], now: int, clerk: str) -> b.Accept | None:
    """受理 at the window: the promised date counted as the handling side counts it
    (``Case.promised_date_from`` with the entry's 承诺办结时限)."""
    doc_no = values.get("w_doc_no", "")
    if not doc_no or len(doc_no) > 50:
        errors["w_doc_no"] = "请填写受理文书编号（不超过 50 字），例如 呼民婚受〔2026〕0001号。"
        return None
    limit = entry.promised_limit
    counting = Case(case="promise", role="collecting", ours=node.region, theirs=entry.region,
                    our_key="-", calendar=node.engine.calendar, acceptance="collecting_decides",
                    promise_days=limit.days, promise_unit=limit.unit)
    try:
        return b.Accept(doc_no=doc_no, accepted_at=now,
                        promised_date=counting.promised_date_from(now), decided_by=clerk)
    except ValidationError:
        errors["w_doc_no"] = "受理文书编号含有不允许的字符，请照受理通知书抄录。"
        return None


def window_supplement(entry: CatalogEntry, values: dict[str, Any], errors: dict[str, str],
                      now: int, clerk: str) -> b.SupplementRequest | None:
    """一次性告知: the entry's materials ticked as missing, plus anything written in."""
    items = [b.SupplementItem(material=m.name, reason=values.get(f"w_reason{i}") or "未提交或不符合要求")
             for i, m in enumerate(entry.materials) if values.get(f"w_missing{i}") == "on"]
    extra = values.get("w_missing_other", "")
    if extra:
        items.append(b.SupplementItem(material=extra[:100], reason="需补充提交"))
    if not items:
        errors["w_missing"] = "请勾选需补正的材料，或在“其他需补正的内容”中写明，做到一次性告知。"
        return None
    return b.SupplementRequest(items=tuple(items), note=values.get("w_note", ""),
                               notified_at=now, decided_by=clerk)


def window_refuse(values: dict[str, Any], errors: dict[str, str], now: int,
                  clerk: str) -> b.Refuse | None:
    """不予受理 at the window, with its reason and legal basis (行政许可法 §32)."""
    reason, basis = values.get("w_refuse_reason", ""), values.get("w_legal_basis", "")
    if not reason:
        errors["w_refuse_reason"] = "请填写不予受理的理由，以便告知申请人。"
    if not basis:
        errors["w_legal_basis"] = "请填写不予受理的法律依据，例如《中华人民共和国行政许可法》第三十二条。"
    if not reason or not basis:
        return None
    return b.Refuse(reason=reason, legal_basis=basis, refused_at=now, decided_by=clerk)


def _zh(message: str) -> str:
    """The Chinese half of a bilingual message ``中文 / English``."""
    return message.split(" / ", 1)[0]


def _is_date(text: str) -> bool:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10
