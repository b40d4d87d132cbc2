"""The public receipt-verification page behind the QR code, and the printed 收件回执.

Theory of operation
-------------------
**The token** in ``/verify/{token}`` is the receipt's digest (SHA-256, docs/protocol.md
§6.1) in unpadded URL-safe base64: 43 characters, 256 bits, so it cannot be guessed, and
the QR code stays small. Anything but the canonical spelling of 32 bytes is refused
before the database is asked.

**回执真实有效** means three things, checked at every visit (a receipt can stop
verifying when its key is revoked back to before it was made): this node holds the
receipt; every receipt of its signer's chain for the case, from index 0 to the newest
this node holds, links to the one before (``prev``) and carries a signature that
verifies against the node's key registry with the key usable at the receipt's own time
(``KeyRegistry.signing_key(key, actor, at)``, §8); and the receipt is one of them. The
page then shows what is not personal data: who signed what when, the case's state, the
matter and the two regions. Never the applicant, the form or the materials: receipts
carry none of them (§6.6), and the page reads nothing but the matter from the
application.

**The 收件回执** (``/cases/{case_id}/receipt``) is the paper the window hands the
applicant (architecture §3, step 1). Name, 证件号码 and phone are masked
(``protocol.masking``) in case it is lost. Its QR code holds the absolute address of the
verification page of the case's first receipt on this node (``collected``); it is inline
SVG (the Content-Security-Policy allows no inline style and no script, and an ``<svg>``
element with presentation attributes needs neither).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import segno
from aiohttp import web

from node.app import Node
from node.web.auth import AUTH, require
from node.web.render import error_page, render
from protocol import Receipt, decode
from protocol import bodies as b
from protocol.codes import COLLECTION_MODES, DAY_UNITS, ID_TYPES
from protocol.errors import ProtocolError
from protocol.fields import clock_text
from protocol.masking import mask_id_number, mask_name, mask_phone
from protocol.states import RECEIPT_NAMES_ZH, STATE_NAMES_ZH
from protocol.wire import receipt_from_fields
from receipts import KeyRegistry, SignatureChecker
from routing.regions import official_name

__all__ = ["Verdict", "add_verify_routes", "check_receipt", "digest_of",
           "qr_svg", "token_of", "verify_url"]

TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")



def token_of(digest: bytes) -> str:
    """The verification token of a receipt digest."""
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def digest_of(token: str) -> bytes | None:
    """The digest a token names, or ``None`` unless it is exactly ``token_of`` of 32 bytes
    (a different last character that decodes the same is refused too)."""
    if not TOKEN.match(token):
        return None
    try:
        digest = base64.urlsafe_b64decode(token + "=")
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == 32 and token_of(digest) == token else None


def verify_url(request: web.Request, digest: bytes) -> str:
    """The absolute address of a receipt's verification page on this node, as the
    browser reached it (behind TLS, ``[web] secure_cookies``: https)."""
    scheme = "https" if request.app[AUTH].config.secure_cookies else request.scheme
    return f"{scheme}://{request.host}/verify/{token_of(digest)}"


# ---------------------------------------------------------------- checking (no I/O)


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: Literal["genuine", "not_found", "unverifiable"]
    receipt: Receipt | None = None
    problem: str = ""  # why it is unverifiable, in Chinese


def check_receipt(digest: bytes, stored: list[bytes], registry: KeyRegistry,
                  checker: SignatureChecker) -> Verdict:
    """Whether the receipt ``digest`` is genuine, given the canonical receipts of its case
    as stored (``stored``): found among them, and its signer's chain unbroken and signed
    with keys usable at each receipt's time."""
    receipts: list[Receipt] = []
    for raw in stored:
        try:
            receipts.append(receipt_from_fields(decode(raw)))
        except ProtocolError:
            return Verdict("unverifiable", problem="本节点保存的回执记录已损坏，无法校验。")
    receipt = next((r for r in receipts if r.digest == digest), None)
    if receipt is None:
        # The database named the digest but no receipt hashes to it: altered after signing.
        return Verdict("unverifiable", problem="回执内容与其编号不符，可能已被篡改。")
    chain = sorted((r for r in receipts if r.actor == receipt.actor), key=lambda r: r.index)
    previous: Receipt | None = None
    for position, link in enumerate(chain):
        if link.index != position or link.prev != (previous.digest if previous else None):
            return Verdict("unverifiable", receipt, "该办件的回执链不完整或前后不衔接。")
        if link.sig is None or link.sig.key != link.key:
            return Verdict("unverifiable", receipt, "回执缺少签发地区的签名。")
        try:
            checker.check(link.digest, link.sig, registry.signing_key(link.key, link.actor, link.at))
        except ProtocolError:
            return Verdict("unverifiable", receipt,
                           "回执的签名与签发地区登记的密钥不符，或该密钥在签发时已失效。")
        previous = link
    return Verdict("genuine", receipt)


# ---------------------------------------------------------------- what the pages show


def _region(code: str) -> str:
    name = official_name(code)
    return f"{name}（{code}）" if name else code


def _application(node: Node, case_id: str) -> b.Application | None:
    raw = node.store.body(case_id, "application")
    if raw is None:
        return None
    try:
        return b.Application.model_validate(decode(raw))
    except (ProtocolError, ValueError):
        return None


def _sides(node: Node, row: dict[str, Any]) -> tuple[str, str]:
    """(collecting, handling) region codes of a case row."""
    if row["role"] == "collecting":
        return node.region, row["peer"]
    return row["peer"], node.region


NO_FACTS: dict[str, Any] = dict.fromkeys(("phone", "promised", "legal", "authority"))


def _entry_facts(node: Node, handling: str, application: b.Application | None) -> dict[str, Any]:
    """The catalog's 咨询电话 and time limits of the matter applied under, if known here
    (each ``None`` if not)."""
    if application is None:
        return dict(NO_FACTS)
    entry = node.catalog.entry(handling, application.matter.code, application.matter.version)
    if entry is None:
        return dict(NO_FACTS)
    return {"phone": entry.consult_phone,
            "promised": f"{entry.promised_limit.days} 个{DAY_UNITS[entry.promised_limit.unit]}",
            "legal": f"{entry.legal_limit.days} 个{DAY_UNITS[entry.legal_limit.unit]}",
            "authority": entry.authority}


def _verify_page(request: web.Request, context: dict[str, Any], status: int) -> web.Response:
    response = render(request, "verify.html", {"found": None, "problem": "",
                                               "facts": NO_FACTS,
                                               **context}, status=status)
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _not_found(request: web.Request, *, malformed: bool) -> web.Response:
    if malformed:
        title = "回执验证链接无效"
        problem = "这个验证链接不完整或有误，可能是二维码没有扫描完整，或手工输入时有遗漏。"
    else:
        title = "不是本系统签发的回执"
        problem = (f"{request.app[AUTH].name}跨域通办系统中没有与这个二维码对应的回执。"
                   "回执可能不是本系统签发的，或二维码已被改动。")
    return _verify_page(request, {"outcome": "not_found", "title": title, "problem": problem},
                        status=404)


async def verify_page(request: web.Request, node: Node, checker: SignatureChecker) -> web.Response:
    """回执查验: public, no sign-in; shows no personal data."""
    digest = digest_of(request.match_info["token"])
    if digest is None:
        return _not_found(request, malformed=True)
    case_id = node.store.receipt_case(digest)
    row = None if case_id is None else node.store.case_row(case_id)
    if case_id is None or row is None:
        return _not_found(request, malformed=False)
    verdict = check_receipt(digest, node.store.receipts(case_id), node.registry, checker)
    collecting, handling = _sides(node, row)
    application = _application(node, case_id)
    facts = _entry_facts(node, handling, application)
    if verdict.outcome != "genuine" or verdict.receipt is None:
        return _verify_page(request, {"outcome": "unverifiable", "title": "签名无法验证",
                                      "problem": verdict.problem, "facts": facts}, status=200)
    receipt = verdict.receipt
    found = {
        "kind": RECEIPT_NAMES_ZH.get(receipt.kind, receipt.kind),
        "actor": _region(receipt.actor),
        "at": clock_text(receipt.at),
        "state": STATE_NAMES_ZH.get(row["state"], row["state"]),
        "updated": clock_text(row["updated_at"]),
        "matter": application.matter.name if application else (row["matter"] or "—"),
        "window_no": row["window_no"] or "",
        "collecting": _region(collecting),
        "handling": _region(handling),
    }
    return _verify_page(request, {"outcome": "genuine", "title": "回执真实有效", "found": found,
                                  "facts": facts}, status=200)


# ---------------------------------------------------------------- the printed 收件回执


def qr_svg(url: str) -> str:
    """The QR code of ``url`` as an inline ``<svg>`` (no style attribute, no script)."""
    code = segno.make(url, error="m", micro=False)
    return code.svg_inline(scale=1, border=4, dark="#000", light="#fff", omitsize=True,
                           svgclass="qr-code", lineclass=None,
                           title="收件回执查验二维码")


async def receipt_page(request: web.Request, node: Node) -> web.Response:
    """收件回执: the window's printable receipt of collection (A4)."""
    case_id = request.match_info["case_id"]
    row = node.store.case_row(case_id)
    application = None if row is None else _application(node, case_id)
    if row is None or application is None:
        return error_page(request, 404, "没有这个办件", f"本节点没有编号为 {case_id[:80]} 的办件。",
                          "请返回办件列表，从列表中选择要打印回执的办件。")
    if row["role"] != "collecting":
        return error_page(request, 409, "收件回执由收件地打印",
                          f"办件 {case_id} 由{_region(row['peer'])}的通办专窗收件，本地区是办理地。",
                          "请联系收件地的通办专窗为申请人打印收件回执。")
    own = node.store.receipts(case_id, actor=node.region, first=0, last=0)
    if not own:
        return error_page(request, 409, "收件回执尚未生成", "该办件还没有本地区签发的收件回执。",
                          "请稍后刷新本页；如仍无回执，请联系本节点运维人员。")
    first = receipt_from_fields(decode(own[0]))
    url = verify_url(request, first.digest)
    collecting, handling = _sides(node, row)
    applicant = application.applicant
    person = applicant.kind == 1  # 自然人: a person's name is personal data; a company's is not
    window = application.window
    decision = application.window_decision
    context = {
        "case_id": case_id,
        "window_no": window.window_no,
        "matter": application.matter.name,
        "matter_code": application.matter.code,
        "applicant": mask_name(applicant.name) if person else applicant.name,
        "id_type": ID_TYPES.get(applicant.id_type, f"证件（{applicant.id_type}）"),
        "id_number": mask_id_number(applicant.id_number),
        "phone": mask_phone(applicant.phone) if applicant.phone else "",
        "agent": mask_name(applicant.contact.name) if applicant.contact else "",
        "materials": [{"name": m.name, "mode": COLLECTION_MODES.get(m.mode, m.mode),
                       "count": m.count, "collected": m.collected}
                      for m in application.materials],
        "deferred": [{"material": d.material, "due": d.due} for d in application.deferred],
        "case_type": {1: "即办件", 2: "承诺件"}.get(application.case_type, "其他"),
        "decision": None if decision is None else {"doc_no": decision.doc_no,
                                                   "promised_date": decision.promised_date},
        "facts": _entry_facts(node, handling, application),
        "window": window.window,
        "clerk": window.clerk,
        "received_at": clock_text(window.received_at),
        "collecting": _region(collecting),
        "handling": _region(handling),
        "verify_url": url,
        "qr": qr_svg(url),
    }
    return render(request, "receipt.html", context)


# ---------------------------------------------------------------- wiring


def add_verify_routes(app: web.Application, node_key: web.AppKey[Node]) -> None:
    """``GET /verify/{token}`` (public) and ``GET /cases/{case_id}/receipt`` (staff)."""
    checker = SignatureChecker(capacity=1024)

    def with_node(handler: Callable[[web.Request, Node], Awaitable[web.Response]]
                  ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return await handler(request, request.app[node_key])
        return handle

    async def verify(request: web.Request, node: Node) -> web.Response:
        return await verify_page(request, node, checker)

    printable = require("clerk", "reviewer", "operator", own_region=True)(with_node(receipt_page))
    app.router.add_get("/verify/{token}", with_node(verify))
    app.router.add_get("/cases/{case_id}/receipt", printable)
