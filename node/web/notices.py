"""The printed 受理通知书 and 补正告知书 (一次性告知), for the window and the desk.

Theory of operation
-------------------
**Which decision.** A notice is the paper form of one first-review decision, and each
decision is a signed receipt of the region that made it (``protocol.states``):

* 受理: ``accepted`` or ``deemed_accepted`` (5 working days without a 补正 notice,
  行政许可法 §32 ¶1 (四)) signed by the handling region, or ``accepted_at_window``
  signed by the collecting region (异地受理、远程办理: the window decided);
* 补正: ``supplement_requested`` signed by the handling region, or
  ``window_supplement_notice`` signed by the collecting region.

The collecting side mirrors a handling decision with a receipt of its own kind
(``accepted``, ``supplement_requested``); only the decider's receipt counts, so the
QR code always names the decision itself. Both sides hold both chains (each message
carries its sender's receipts), so the window and the desk print the same notice with
the same QR code, each pointing at its own ``/verify/{token}`` page. The newest
deciding receipt wins (a case is accepted at most once; 补正 is asked at most once).

**Which words.** The notice prints the decision's body, never the receipt alone: the
受理文书编号, acceptance time and promised date of the ``Accept`` (the decision message,
or the application's ``window_decision``), the complete list and note of the
``SupplementRequest`` (the decision message, or the window's local event), exactly as
recorded. A receipt names its decision's 受理文书编号 and number of 补正 items; a body
that does not match them is not printed. The handling side holds the window's 补正
receipt but never its list (the window decides before sending), so it sends the clerk
to the collecting window.

**Same rules as the 收件回执** (``node.web.verify``): an A4 sheet, name, 证件号码 and
phone masked, the QR code inline SVG (the CSP allows no inline style and no script),
for signed-in staff (窗口收件员, 审核员, 运维) of this node's region. A case without such
a decision gets the error page (409) saying what to do instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import quote

import segno
from aiohttp import web

from node.app import Node
from node.web.auth import require
from node.web.case_view import case_view
from node.web.live import region_name
from node.web.render import error_page, render
from node.web.verify import _application, _entry_facts, _region, _sides, verify_url
from protocol import Receipt, decode
from protocol import bodies as b
from protocol.codes import ID_TYPES
from protocol.errors import ProtocolError
from protocol.fields import clock_text
from protocol.masking import mask_id_number, mask_name, mask_phone
from protocol.states import STATE_NAMES_ZH
from protocol.wire import receipt_from_fields

__all__ = ["NOTICES", "Decided", "add_notice_routes", "decided", "notice_links"]

Notice = Literal["acceptance", "supplement"]
Side = Literal["collecting", "handling"]

#: Per notice: the deciding receipt kinds and the side that signs each.
NOTICES: dict[Notice, dict[str, Side]] = {
    "acceptance": {"accepted": "handling", "deemed_accepted": "handling",
                   "accepted_at_window": "collecting"},
    "supplement": {"supplement_requested": "handling", "window_supplement_notice": "collecting"},
}
TITLES: dict[Notice, str] = {"acceptance": "受理通知书", "supplement": "补正告知书"}


@dataclasses.dataclass(frozen=True)
class Decided:
    """A deciding receipt this node holds, and its decision's body (``None`` when this
    node does not hold it, or holds one that does not match the receipt)."""

    receipt: Receipt
    body: b.Accept | b.SupplementRequest | None

    @property
    def by_window(self) -> bool:
        return self.receipt.kind in ("accepted_at_window", "window_supplement_notice")


def decided(node: Node, row: dict[str, Any], view: dict[str, Any], notice: Notice) -> Decided | None:
    """The newest receipt deciding ``notice`` for the case ``row`` (``view``: its
    ``case_view``), signed by the side that decides it, or ``None``."""
    collecting, handling = _sides(node, row)
    signer = {"collecting": collecting, "handling": handling}
    kinds = NOTICES[notice]
    found: Receipt | None = None
    for raw in node.store.receipts(row["case_id"]):
        try:
            receipt = receipt_from_fields(decode(raw))
        except ProtocolError:
            continue
        side = kinds.get(receipt.kind)
        if side is not None and receipt.actor == signer[side] and (
                found is None or (receipt.at, receipt.index) > (found.at, found.index)):
            found = receipt
    if found is None:
        return None
    return Decided(found, _body_of(found, view))


def _body_of(receipt: Receipt, view: dict[str, Any]) -> b.Accept | b.SupplementRequest | None:
    if receipt.kind in NOTICES["acceptance"]:
        accept: b.Accept | None = view["accept"]
        if accept is None or receipt.data.get("doc_no", accept.doc_no) != accept.doc_no:
            return None
        return accept
    request: b.SupplementRequest | None = view[
        "window_request" if receipt.kind == "window_supplement_notice" else "supplement_request"]
    if request is None or receipt.data.get("items", len(request.items)) != len(request.items):
        return None
    return request


def notice_links(node: Node, row: dict[str, Any], view: dict[str, Any]) -> dict[Notice, str]:
    """The case page's 打印受理通知书 / 打印补正告知书 links: each notice's address, or
    ``""`` where this node cannot print it."""
    links: dict[Notice, str] = {"acceptance": "", "supplement": ""}
    if view["application"] is None:
        return links
    for notice in NOTICES:
        found = decided(node, row, view, notice)
        if found is not None and found.body is not None:
            links[notice] = f"/cases/{quote(row['case_id'])}/notice/{notice}"
    return links


# ---------------------------------------------------------------- the pages


def _refused(request: web.Request, row: dict[str, Any], notice: Notice,
             found: Decided | None) -> web.Response:
    """Why there is no notice to print (409), and what to do instead."""
    case_id, state = row["case_id"], row["state"]
    state_zh = STATE_NAMES_ZH.get(state, state)
    title = TITLES[notice]
    if found is not None:  # the receipt is here, its body is not
        if found.by_window and row["role"] == "handling":
            return error_page(request, 409, f"{title}由收件地打印",
                              f"办件 {case_id} 由{_region(row['peer'])}的通办专窗一次性告知补正，"
                              f"补正清单保存在收件地。",
                              "请联系收件地的通办专窗为申请人打印补正告知书。")
        return error_page(request, 409, f"{title}内容不完整",
                          f"本节点保存有办件 {case_id} 的{title[:2]}决定回执，但没有与之相符的决定内容。",
                          "请稍后刷新本页；如仍不能打印，请联系本节点运维人员。")
    if notice == "supplement":
        return error_page(request, 409, "该办件没有补正告知",
                          f"办件 {case_id} 没有被要求补正（当前状态：{state_zh}），没有补正告知书可打印。",
                          "补正告知书在办理地审核员或收件窗口一次性告知补正后才能打印。"
                          "请回到办件详情页查看办件的当前状态。")
    if state in ("supplement_requested", "supplied", "awaiting_materials", "supplied_at_window"):
        step = ("该办件正在补正。请先打印补正告知书交给申请人；补正后作出受理决定，"
                "再打印受理通知书。")
    elif state == "refused":
        step = ("该办件已决定不予受理，不能打印受理通知书。"
                "请在办件详情页查看不予受理的理由和依据，并告知申请人。")
    elif state in ("withdrawing", "withdrawn"):
        step = "申请人已申请撤回，该办件不再受理。请在办件详情页查看撤回情况。"
    elif row["role"] == "handling":
        step = "请在办件审核页作出受理决定；受理后即可打印受理通知书。"
    else:
        step = ("受理决定由办理地在收到申请材料后 5 个工作日内作出，办件详情页会实时显示。"
                "受理后即可打印受理通知书；在此之前，申请人可凭收件回执查询进度。")
    return error_page(request, 409, "该办件尚未受理",
                      f"办件 {case_id} 还没有受理决定（当前状态：{state_zh}），没有受理通知书可打印。",
                      step)


def _qr_svg(url: str, title: str) -> str:
    """The QR code of ``url`` as ``verify.qr_svg`` draws it, titled for this notice."""
    code = segno.make(url, error="m", micro=False)
    return code.svg_inline(scale=1, border=4, dark="#000", light="#fff", omitsize=True,
                           svgclass="qr-code", lineclass=None, title=title)


async def notice_page(request: web.Request, node: Node, notice: Notice) -> web.Response:
    """受理通知书 or 补正告知书 of a case (A4), with the QR code of its deciding receipt."""
    case_id = request.match_info["case_id"]
    row = node.store.case_row(case_id)
    application = None if row is None else _application(node, case_id)
    if row is None or application is None:
        return error_page(request, 404, "没有这个办件", f"本节点没有编号为 {case_id[:80]} 的办件。",
                          f"请返回办件列表，从列表中选择要打印{TITLES[notice]}的办件。")
    view = case_view(node, row)
    found = decided(node, row, view, notice)
    if found is None or found.body is None:
        return _refused(request, row, notice, found)
    collecting, handling = _sides(node, row)
    facts = _entry_facts(node, handling, application)
    applicant, window = application.applicant, application.window
    person = applicant.kind == 1  # 自然人: a person's name is personal data; a company's is not
    url = verify_url(request, found.receipt.digest)
    case_page = ("/window/cases/" if row["role"] == "collecting" else "/desk/cases/") + quote(case_id)
    authority = facts["authority"] or _region(handling)
    window_name = node.config.name if collecting == node.region else region_name(collecting)
    context: dict[str, Any] = {
        "case_id": case_id, "case_page": case_page,
        "by_window": found.by_window, "kind": found.receipt.kind,
        "window_no": window.window_no, "window": window.window,
        "received_at": clock_text(window.received_at),
        "matter": application.matter.name,
        "applicant": mask_name(applicant.name) if person else applicant.name,
        "id_type": ID_TYPES.get(applicant.id_type, f"证件（{applicant.id_type}）"),
        "id_number": mask_id_number(applicant.id_number),
        "phone": mask_phone(applicant.phone) if applicant.phone else "",
        "collecting": _region(collecting), "handling": _region(handling),
        "authority": authority, "facts": facts,
        # who issues the paper, and who would decide after a 补正 ("本窗口" or the handling region)
        "issuer": f"{window_name}跨域通办专窗" if found.by_window else authority,
        "decider": "本窗口" if found.by_window else _region(handling),
        "signed_by": _region(found.receipt.actor), "signed_at": clock_text(found.receipt.at),
        "verify_url": url, "qr": _qr_svg(url, f"{TITLES[notice]}查验二维码"),
    }
    if isinstance(found.body, b.Accept):
        accept = found.body
        context.update({"doc_no": accept.doc_no, "accepted_at": clock_text(accept.accepted_at),
                        "promised_date": accept.promised_date, "decided_by": accept.decided_by,
                        "deemed": accept.deemed or found.receipt.kind == "deemed_accepted"})
        return render(request, "notice_acceptance.html", context)
    request_body = found.body
    context.update({"items": request_body.items, "note": request_body.note,
                    "notified_at": clock_text(request_body.notified_at),
                    "decided_by": request_body.decided_by})
    return render(request, "notice_supplement.html", context)


# ---------------------------------------------------------------- wiring


def add_notice_routes(app: web.Application, node_key: web.AppKey[Node]) -> None:
    """``GET /cases/{case_id}/notice/acceptance`` and ``.../notice/supplement`` (staff)."""
    printable = require("clerk", "reviewer", "operator", own_region=True)

    def page(notice: Notice) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await notice_page(request, request.app[node_key], notice)
        return printable(handle)

    for notice in NOTICES:
        app.router.add_get(f"/cases/{{case_id}}/notice/{notice}", page(notice))
