"""The bodies of the messages that cross between regions, one immutable model each.

Data elements follow GB/T 39046-2020: 表5 办事申请 (``Application``, ``Applicant``,
``MaterialRef``), 表6 事项受理 (``Accept``), 表7 事项办理 (``Progress``,
``SpecialProcedure``), 表8 事项办结 (``Outcome``), 表9 评价 (``Evaluation``) and
表15 物流 (``Delivery``). Bodies travel encrypted; only the envelope header is in clear.

``BODY_TYPES`` maps each message kind to its body model; ``docs/protocol.md`` lists
the same table for implementers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from protocol.codes import (
    AcceptanceModel,
    ApplicantKind,
    BusinessAction,
    CaseType,
    CollectionMode,
    DeliveryMode,
    EvaluationChannel,
    IdentityMethod,
    OutcomeResult,
    Satisfaction,
    SpecialProcedureType,
    TrustLevel,
)
from protocol.fields import (
    Address,
    CaseId,
    Date,
    Digest,
    DocNumber,
    IdNumber,
    MatterCode,
    Millis,
    Name,
    Phone,
    RegionCode,
    RequiredText,
    SessionId,
    Text,
    Wire,
    check_id_number,
)

__all__ = [
    "BODY_TYPES",
    "Accept",
    "Ack",
    "Applicant",
    "Application",
    "Body",
    "Contact",
    "Decision",
    "DeferredItem",
    "Delivery",
    "Evaluation",
    "FormValue",
    "FormalReview",
    "Forwarded",
    "IdentityCheck",
    "JointRef",
    "MaterialRef",
    "MatterRef",
    "Outcome",
    "Progress",
    "Refuse",
    "Rejection",
    "SpecialProcedure",
    "Supplement",
    "SupplementItem",
    "SupplementRequest",
    "VideoCheck",
    "WindowRecord",
    "Withdrawal",
    "Withdrawn",
]


# ---------------------------------------------------------------- application (表5)


class MatterRef(Wire):
    """The catalog entry an application is made under, pinned to its version."""

    code: MatterCode  # 实施编码
    version: int = Field(ge=1)  # catalog entry version the form was filled against
    name: Name  # 事项名称
    item: MatterCode | None = None  # 业务办理项编码


def _checked_id_number(number: str, info: ValidationInfo) -> str:
    """公民身份号码 (id type 111) check digit; 统一社会信用代码 (001) length."""
    id_type = info.data.get("id_type")
    if id_type == "111":
        checked = check_id_number(number)
        if checked != number:
            raise ValueError("公民身份号码 check digit X must be upper case")
    elif id_type == "001" and len(number) != 18:
        raise ValueError("统一社会信用代码 has 18 characters (GB 32100)")
    return number


class Contact(Wire):
    """联系人/代理人."""

    name: Name
    id_type: str = Field(pattern=r"^[0-9]{3}$")  # GA/T 2000.156
    id_number: IdNumber
    phone: Phone

    _check_id = field_validator("id_number")(_checked_id_number)


class Applicant(Wire):
    """申请者 (GB/T 39046 表5). Personal data: encrypted on the wire, masked in logs."""

    kind: ApplicantKind  # A.4 服务对象: 1 自然人, 2 企业法人 ...
    name: Name  # 申请者名称
    id_type: str = Field(pattern=r"^[0-9]{3}$")  # 证件类型代码 (111 居民身份证, 001 统一社会信用代码)
    id_number: IdNumber  # 证件号码
    phone: Phone | None = None  # 联系人手机号码
    postcode: str | None = Field(default=None, pattern=r"^[0-9]{6}$")
    address: Address | None = None  # 通讯地址
    legal_representative: Name | None = None  # 法定代表人
    contact: Contact | None = None  # 联系人/代理人
    region: RegionCode | None = None  # 行政区划: where the applicant lives or is registered

    _check_id = field_validator("id_number")(_checked_id_number)


class MaterialRef(Wire):
    """One material: a content-addressed, encrypted file in the materials object store.

    ``key`` is the per-file AES-256 key its chunks are encrypted under
    (docs/protocol.md §5.6); it only ever travels inside an encrypted body.
    A material collected on paper only (no scan) has no file fields.
    """

    name: Name  # 材料名称 (as in the catalog's material list)
    collected: bool  # 是否收取
    mode: CollectionMode  # 收取方式
    count: int = Field(ge=0, le=99)  # 收取数量 (份数)
    trust: TrustLevel  # 可信等级 A–D
    sha256: Digest | None = None  # of the plaintext file
    size: int | None = Field(default=None, ge=0, le=1 << 40)
    media_type: Annotated[str, Field(pattern=r"^[a-z]+/[0-9A-Za-z.+\-]+$")] | None = None
    key: Digest | None = None  # 32-byte content key
    chunk_size: int | None = Field(default=None, ge=1024, le=1 << 24)
    #: Name in the materials object store: random, never derived from the content, so
    #: access to the store does not confirm a guessed document.
    object: Annotated[str, Field(pattern=r"^[0-9A-Za-z_\-]{16,64}$")] | None = None
    verified_by: Name | None = None  # 核验人 (C→B upgrade at the window)

    @model_validator(mode="after")
    def _file_fields_together(self) -> MaterialRef:
        fields = (self.sha256, self.size, self.media_type, self.key, self.chunk_size, self.object)
        if any(f is not None for f in fields) and any(f is None for f in fields):
            raise ValueError("a scanned material needs sha256, size, media_type, key, chunk_size "
                             "and object")
        return self


class DeferredItem(Wire):
    """容缺: a material accepted as missing against the applicant's written pledge."""

    material: Name
    pledge: Text  # the applicant's 承诺 text
    due: Date  # date by which the applicant promises to hand it in


class IdentityCheck(Wire):
    """身份核验 at the window."""

    method: IdentityMethod
    passed: bool
    checked_at: Millis
    checked_by: Name  # clerk


class FormalReview(Wire):
    """形式审查: completeness and legal form, not substance."""

    passed: bool
    reviewed_at: Millis
    reviewed_by: Name
    notes: Text = ""


class WindowRecord(Wire):
    """What the collecting window (收件地) recorded when it took the application."""

    window_no: DocNumber  # 收件编号
    window: Name  # 通办专窗 name
    clerk: Name
    received_at: Millis  # 收件时间: starts the 5-day clock of 行政许可法 §32
    identity: IdentityCheck
    formal_review: FormalReview


class FormValue(Wire):
    """One field of the application form the catalog entry defines."""

    field: Annotated[str, Field(pattern=r"^[A-Za-z_][0-9A-Za-z_]{0,63}$")]
    value: Text


class Accept(Wire):
    """受理 (GB/T 39046 表6)."""

    outcome: Literal["accept"] = "accept"
    doc_no: DocNumber  # 受理文书编号
    accepted_at: Millis  # 受理时间
    promised_date: Date  # 承诺办结时间, in working days from acceptance
    decided_by: Name  # 受理人员 (or the window, in the collecting-decides model)
    deemed: bool = False  # accepted by law: no 补正 notice within 5 days (行政许可法 §32)
    session: SessionId | None = None  # decided in this virtual-window video session


class SupplementItem(Wire):
    material: Name
    reason: Text


class SupplementRequest(Wire):
    """补正: the complete one-time list of what is missing (一次性告知)."""

    outcome: Literal["supplement"] = "supplement"
    items: tuple[SupplementItem, ...] = Field(min_length=1, max_length=100)
    note: Text = ""
    notified_at: Millis
    decided_by: Name
    session: SessionId | None = None  # told in this virtual-window video session


class Refuse(Wire):
    """不予受理, with the reason and its legal basis (行政许可法 §32 (一)(二))."""

    outcome: Literal["refuse"] = "refuse"
    reason: RequiredText
    legal_basis: RequiredText
    refused_at: Millis
    decided_by: Name
    session: SessionId | None = None  # decided in this virtual-window video session


Decision = Annotated[Accept | SupplementRequest | Refuse, Field(discriminator="outcome")]


class VideoCheck(Wire):
    """远程视频核验: what the handling region's reviewer confirmed in a virtual-window
    video session (远程虚拟窗口), before deciding. Nothing of the media is kept."""

    session: SessionId
    check: Literal["identity", "materials"]  # 身份核验 by video / materials examined (材料核验)
    confirmed: bool  # the identity matched, or the materials are as required
    materials: tuple[Name, ...] = Field(default=(), max_length=100)  # the ones examined
    note: Text = ""  # what the reviewer noted
    at: Millis
    reviewer: Name


class JointRef(Wire):
    """多地联办: this application is part ``part`` of a joint case at the collecting
    region, whose parts go to ``regions`` (in part order; protocol.joint)."""

    id: CaseId  # the joint case at the collecting region
    part: int = Field(ge=1, le=20)
    regions: tuple[RegionCode, ...] = Field(min_length=2, max_length=20)

    @model_validator(mode="after")
    def _part_listed(self) -> JointRef:
        if self.part > len(self.regions):
            raise ValueError(f"part {self.part} of {len(self.regions)}")
        return self


class Application(Wire):
    """An application collected at a 通办专窗 for a matter handled elsewhere (代收代办)."""

    matter: MatterRef
    case_type: CaseType = 2  # 办件类型: 2 承诺件
    source: Literal[1, 2, 3, 4, 9] = 1  # 申报来源 (A.5 办理形式): 1 窗口办理
    acceptance: AcceptanceModel = "handling_decides"
    applicant: Applicant
    form: tuple[FormValue, ...] = Field(default=(), max_length=500)
    materials: tuple[MaterialRef, ...] = Field(default=(), max_length=200)
    deferred: tuple[DeferredItem, ...] = Field(default=(), max_length=100)  # 容缺
    window: WindowRecord
    window_decision: Accept | None = None  # set only in the collecting-decides model
    summary: Text = ""  # 办理摘要
    joint: JointRef | None = None  # 多地联办: one part of a joint case

    @model_validator(mode="after")
    def _decision_matches_model(self) -> Application:
        if self.window_decision is not None and self.acceptance != "collecting_decides":
            raise ValueError("a window decision needs the collecting-decides acceptance model")
        return self


# ---------------------------------------------------------------- the rest of the walk


class Ack(Wire):
    """签收 and outcome acknowledgement: which message is acknowledged."""

    of: Digest  # digest of the acknowledged envelope
    at: Millis


class Supplement(Wire):
    """补正材料: what the applicant handed in at the window after a 补正 notice."""

    materials: tuple[MaterialRef, ...] = Field(default=(), max_length=200)
    form: tuple[FormValue, ...] = Field(default=(), max_length=500)
    note: Text = ""
    supplied_at: Millis


class Withdrawal(Wire):
    """撤回: the applicant withdraws before the decision."""

    reason: Text
    requested_at: Millis
    requested_by: Name  # clerk recording it


class Withdrawn(Wire):
    at: Millis


class Forwarded(Wire):
    """流转: handed to the competent department."""

    department: Name  # 承办机构
    department_code: Annotated[str, Field(pattern=r"^[0-9A-Z]{18}$")] | None = None  # 统一社会信用代码
    forwarded_at: Millis
    attempts: int = Field(ge=1)


class SpecialProcedure(Wire):
    """特别程序 (GB/T 39046 表7): stops the clock of the promised date."""

    type: SpecialProcedureType  # A.7
    name: Name  # 特别程序种类名称 (听证, 检验, 专家评审 ...)
    reason: Text  # 启动理由或依据
    result: Text = ""  # 特别程序结果 (at the end)


class Progress(Wire):
    """办理过程: a step of the department, or the start or end of a 特别程序."""

    event: Literal["step", "suspend", "resume"]
    at: Millis
    step: Name  # 环节名称
    action: BusinessAction = "pass"  # 业务动作
    handler: Name  # 环节处理人
    opinion: Text = ""  # 处理意见
    special: SpecialProcedure | None = None

    @model_validator(mode="after")
    def _special_when_suspending(self) -> Progress:
        if (self.event != "step") != (self.special is not None):
            raise ValueError("suspend and resume carry the special procedure; steps do not")
        return self


class Outcome(Wire):
    """办结 (GB/T 39046 表8)."""

    result: OutcomeResult
    concluded_at: Millis
    description: Text = ""  # 办件结果描述
    certificate_name: Name | None = None  # 结果证照名称
    certificate_no: DocNumber | None = None  # 结果证照编号
    elicence_id: Annotated[str, Field(pattern=r"^[0-9A-Za-z.\-]{1,200}$")] | None = None  # 电子证照标识
    valid_until: Date | None = None  # 证照有效期限
    issuer: Name  # 发证/盖章单位
    handler: Name  # 办理人
    delivery: DeliveryMode  # how the result will reach the applicant
    by_post: bool = False  # 是否快递寄送结果: true exactly when delivery is "post"

    @model_validator(mode="after")
    def _by_post_is_delivery(self) -> Outcome:
        if self.by_post != (self.delivery == "post"):
            raise ValueError("by_post (是否快递寄送结果) must be true exactly when delivery is post")
        return self


class Delivery(Wire):
    """送达 record (GB/T 39046 表15 物流 for posted results)."""

    mode: DeliveryMode
    delivered_at: Millis
    recipient: Name  # 接收人 (personal data)
    courier: Name | None = None  # 寄送单位
    tracking_no: Annotated[str, Field(pattern=r"^[0-9A-Za-z\-]{4,40}$")] | None = None  # 物流单号
    note: Text = ""

    @model_validator(mode="after")
    def _post_needs_tracking(self) -> Delivery:
        if self.mode == "post" and (self.courier is None or self.tracking_no is None):
            raise ValueError("邮寄 needs the courier and the tracking number")
        return self


class Evaluation(Wire):
    """好差评 (GB/T 39046 表9, A.8)."""

    satisfaction: Satisfaction
    channel: EvaluationChannel
    evaluated_at: Millis
    text: Text = ""  # 文字评价
    region: RegionCode  # 评价地
    count: int = Field(default=1, ge=1, le=99)  # 评价次数


class Rejection(Wire):
    """A refusal of a message, with a stable reason code (protocol.errors.Reason)."""

    of: Digest  # digest of the refused envelope
    code: Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")]
    zh: Text
    en: Text
    detail: Text = ""


Body = (
    Application
    | Ack
    | Accept
    | SupplementRequest
    | Refuse
    | Supplement
    | Withdrawal
    | Withdrawn
    | Forwarded
    | Progress
    | Outcome
    | Delivery
    | Evaluation
    | Rejection
    | VideoCheck
)

#: Message kind → body model. ``decision`` is a tagged union on ``outcome``.
BODY_TYPES: dict[str, Any] = {
    "application": Application,
    "received": Ack,
    "decision": Decision,
    "supplement": Supplement,
    "withdrawal": Withdrawal,
    "withdrawn": Withdrawn,
    "forwarded": Forwarded,
    "progress": Progress,
    "outcome": Outcome,
    "outcome_ack": Ack,
    "delivery": Delivery,
    "evaluation": Evaluation,
    "rejection": Rejection,
    "video_check": VideoCheck,
}
