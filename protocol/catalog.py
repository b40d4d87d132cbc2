"""The matter catalog (事项清单): one region's 通办 matters, as it publishes them.

A ``CatalogEntry`` holds the data elements of GB/T 39046 表4 that a window and a
reviewer need (names and codes, 事项类型, 实施主体, 受理条件, 办理流程, the legal
and promised time limits with their units, 办件类型, fees, the result, the flags,
where and how to ask, the material list) and what 通办 adds: the scope, the
modes offered, who decides 受理, and the application form with typed fields.

Entries are versioned: a change is a new ``version`` (an application pins the
version it was filled against, ``MatterRef.version``), and withdrawing a matter is
a new version with ``status = "withdrawn"``, signed like any other, so nobody but
the publishing region can take a matter out of the circle's catalogs.

A published entry travels as a ``CatalogRecord``: the entry and the publishing
region's Merkle-batched signature over ``entry_digest`` (docs/protocol.md §12).
"""

from __future__ import annotations

import datetime as dt
import re
import re._parser as sre_parse  # type: ignore[import-not-found]  # re's own parser: checked, not run
from typing import Annotated, Any, Self

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from protocol.codes import (
    AcceptanceModel,
    ApplicantKind,
    AuthorityNature,
    CaseType,
    DayUnit,
    EntryStatus,
    ExerciseLevel,
    FieldKind,
    HandlingForm,
    JointFailure,
    MaterialForm,
    MaterialNecessity,
    MaterialSource,
    MatterType,
    ResultType,
    TongbanMode,
    TongbanScope,
)
from protocol.envelope import Signature, leaf_digest
from protocol.fields import (
    Address,
    CreditCode,
    Date,
    LongText,
    MatterCode,
    Name,
    Phone,
    RegionCode,
    Text,
    Wire,
    check_id_number,
)

__all__ = ["TAG_CATALOG", "CatalogEntry", "CatalogMaterial", "CatalogRecord", "Fee", "FormField",
           "TimeLimit", "entry_digest"]

TAG_CATALOG = b"tongban/1 catalog\x00"

#: Field patterns come from other regions' catalogs, and Python's ``re`` backtracks
#: without a time limit, so only patterns whose matching time stays small are
#: accepted: at most two repeats of variable width (``+``, ``*``, ``?``, ``{m,n}``)
#: in the whole pattern, none inside another, no alternatives inside a repeat
#: (``(a|a)+``), and no back-references. Fixed counts
#: (``[0-9]{6}``), classes and alternation of fixed text are free; that is what
#: form fields need (``^[A-Z]{2}[0-9]{4,8}$``). Values are checked up to
#: ``MAX_PATTERNED`` characters.
MAX_PATTERNED = 200
_YES_NO = ("是", "否")
_LIST_SEPARATORS = (";", "；")


def _repeats(parsed: Any, inside: bool = False) -> int:
    """Variable-width repeats in a parsed pattern; ``ValueError`` for nested ones."""
    count = 0
    for op, arg in parsed:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, body = arg
            if low != high:
                if inside:
                    raise ValueError("repeats inside repeats")
                count += 1
            count += _repeats(body, inside or low != high)
        elif name == "SUBPATTERN":
            count += _repeats(arg[-1], inside)
        elif name == "BRANCH":
            if inside:  # (a|a)+ matches one text in ever more ways
                raise ValueError("alternatives inside repeats")
            count += sum(_repeats(branch, inside) for branch in arg[1])
        elif name in ("GROUPREF", "GROUPREF_EXISTS"):
            raise ValueError("back-references")
        elif name in ("ASSERT", "ASSERT_NOT"):
            count += _repeats(arg[1], inside)
    return count


def _safe_pattern(pattern: str) -> str:
    try:
        parsed = sre_parse.parse(pattern)
        variable = _repeats(parsed)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"a field pattern may not use {exc}; a pattern may repeat a group "
                         f"at most by a fixed count, e.g. [0-9]{{6}}") from None
    if variable > 2:
        raise ValueError("a field pattern may hold at most two variable repeats (*, +, ?, {m,n}); "
                         "more can take very long to match")
    return pattern


def _no_separator(value: str) -> str:
    if any(sep in value for sep in _LIST_SEPARATORS):
        raise ValueError("a choice may not contain ; or ；, which separate choices")
    return value


FieldName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][0-9A-Za-z_]{0,63}$")]
Pattern = Annotated[str, StringConstraints(max_length=200), AfterValidator(_safe_pattern)]


class FormField(Wire):
    """One field of the application form (申请表) a matter defines."""

    name: FieldName  # identifier, as in ``FormValue.field``
    label: Name  # 中文标签
    kind: FieldKind
    required: bool = True
    max_length: int | None = Field(default=None, ge=1, le=2000)
    pattern: Pattern | None = None
    choices: tuple[Annotated[Name, AfterValidator(_no_separator)], ...] = Field(default=(),
                                                                                max_length=100)
    minimum: int | None = None  # number fields
    maximum: int | None = None
    help: Text = ""  # 填写说明

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"choice field {self.name} lists no choices")
        if self.kind != "choice" and self.choices:
            raise ValueError(f"only a choice field has choices ({self.name} is {self.kind})")
        if None not in (self.minimum, self.maximum) and self.minimum > self.maximum:  # type: ignore[operator]
            raise ValueError(f"field {self.name}: minimum above maximum")
        return self

    def check(self, value: str) -> str:
        """The value, normalised; ``ValueError`` (Chinese / English) if the form rejects it."""
        value = value.strip()
        if not value:
            if self.required:
                raise ValueError(f"{self.label}：必填 / {self.name} is required")
            return value
        if self.max_length is not None and len(value) > self.max_length:
            raise ValueError(f"{self.label}：不超过 {self.max_length} 个字 / {self.name} is longer "
                             f"than {self.max_length} characters")
        check = _KIND_CHECKS.get(self.kind)
        if check is not None:
            value = check(self, value)
        if self.pattern is not None and (len(value) > MAX_PATTERNED
                                         or not re.fullmatch(self.pattern, value)):
            raise ValueError(f"{self.label}：格式不符 / {self.name} does not match {self.pattern}")
        return value


def _number(field: FormField, value: str) -> str:
    if not re.fullmatch(r"-?[0-9]{1,18}", value):
        raise ValueError(f"{field.label}：应为整数 / {field.name} must be a whole number")
    number = int(value)
    if field.minimum is not None and number < field.minimum:
        raise ValueError(f"{field.label}：不小于 {field.minimum} / {field.name} < {field.minimum}")
    if field.maximum is not None and number > field.maximum:
        raise ValueError(f"{field.label}：不大于 {field.maximum} / {field.name} > {field.maximum}")
    return str(number)


def _date(field: FormField, value: str) -> str:
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"{field.label}：日期格式为 YYYY-MM-DD / {field.name} must be a date "
                         f"YYYY-MM-DD") from None


def _choice(field: FormField, value: str) -> str:
    if value not in field.choices:
        raise ValueError(f"{field.label}：请从 {'、'.join(field.choices)} 中选择 / {field.name} "
                         f"must be one of the choices")
    return value


def _id_number(field: FormField, value: str) -> str:
    try:
        return check_id_number(value)
    except ValueError as exc:
        raise ValueError(f"{field.label}：公民身份号码有误 / {field.name}: {exc}") from None


def _phone(field: FormField, value: str) -> str:
    if not re.fullmatch(r"1[0-9]{10}|0[0-9]{2,3}-?[0-9]{7,8}(-[0-9]{1,6})?", value):
        raise ValueError(f"{field.label}：电话号码有误 / {field.name} is not a phone number")
    return value


def _region(field: FormField, value: str) -> str:
    if not re.fullmatch(r"[0-9]{6}", value):
        raise ValueError(f"{field.label}：行政区划代码为 6 位数字 / {field.name} must be a "
                         f"six-digit GB/T 2260 code")
    return value


def _yes_no(field: FormField, value: str) -> str:
    if value not in _YES_NO:
        raise ValueError(f"{field.label}：填“是”或“否” / {field.name} must be 是 or 否")
    return value


_KIND_CHECKS = {"number": _number, "date": _date, "choice": _choice, "id_number": _id_number,
                "phone": _phone, "region": _region, "yes_no": _yes_no}


class CatalogMaterial(Wire):
    """One material of the matter's list (表4 56–64 and the exchange schema's 材料目录)."""

    name: Name  # 材料名称
    form: MaterialForm = "paper"  # 材料形式
    necessity: MaterialNecessity = "required"  # 材料必要性 (是否必备材料)
    originals: int = Field(default=1, ge=0, le=99)  # 原件份数
    copies: int = Field(default=0, ge=0, le=99)  # 复印件份数
    standard: Text = ""  # 受理标准
    deferrable: bool = False  # 容缺: may be handed in later against a pledge
    source: MaterialSource = "applicant"  # 来源渠道
    issuer: Text = ""  # 出具机构 / 来源说明
    note: Text = ""  # 填报须知


class TimeLimit(Wire):
    """A time limit (法定 / 承诺办结时限) and its unit."""

    days: int = Field(ge=0, le=3650)
    unit: DayUnit = "working"
    note: Text = ""  # 说明


class Fee(Wire):
    charged: bool = False  # 是否收费
    standard: Text = ""  # 收费标准
    basis: Text = ""  # 收费依据


class CatalogEntry(Wire):
    """One 通办 matter of one region's catalog, at one version (GB/T 39046 表4)."""

    region: RegionCode  # 发布地区 (GB/T 2260)
    code: MatterCode  # 实施编码
    version: int = Field(ge=1, le=1_000_000)  # 事项版本
    status: EntryStatus = "active"
    effective_from: Date  # 生效日期
    effective_to: Date | None = None  # 取消日期
    basic_code: MatterCode  # 基本编码
    item_code: MatterCode | None = None  # 业务办理项编码
    name: Name  # 事项名称
    matter_type: MatterType  # 事项类型代码 (A.1)
    level: ExerciseLevel  # 行使层级代码 (A.2)
    authority: Name  # 实施主体
    authority_code: CreditCode  # 实施主体代码 (统一社会信用代码)
    authority_nature: AuthorityNature = 1  # 实施主体性质代码 (A.3)
    service_objects: tuple[ApplicantKind, ...] = Field(min_length=1, max_length=6)  # A.4
    handling_forms: tuple[HandlingForm, ...] = Field(min_length=1, max_length=5)  # A.5
    legal_basis: LongText = ""  # 设定依据
    conditions: LongText = ""  # 受理条件
    process: LongText = ""  # 办理流程
    legal_limit: TimeLimit  # 法定办结时限
    promised_limit: TimeLimit  # 承诺办结时限
    case_type: CaseType = 2  # 办件类型 (A.6)
    fee: Fee = Fee()
    result_type: ResultType = "licence"  # 审批结果类型
    result_name: Text = ""  # 结果名称
    express: bool = False  # 是否支持物流快递
    online: bool = False  # 是否网办
    appointment: bool = False  # 是否支持预约办理
    online_url: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None  # 网办地址
    location: Address = ""  # 办理地点
    hours: Text = ""  # 办理时间
    consult_phone: Phone | None = None  # 咨询电话
    supervise_phone: Phone | None = None  # 监督电话
    materials: tuple[CatalogMaterial, ...] = Field(default=(), max_length=200)
    # 通办
    scope: TongbanScope  # 通办范围
    modes: tuple[TongbanMode, ...] = Field(min_length=1, max_length=3)  # 全程网办/代收代办/多地联办
    acceptance: AcceptanceModel = "handling_decides"  # which side decides 受理
    joint_failure: JointFailure = "whole_case"  # 多地联办: a refused part ends the whole case?
    form: tuple[FormField, ...] = Field(default=(), max_length=200)  # 申请表

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.effective_to is not None and self.effective_to < self.effective_from:
            raise ValueError("effective_to is before effective_from")
        for what, names in (("material", [m.name for m in self.materials]),
                            ("form field", [f.name for f in self.form]),
                            ("mode", list(self.modes))):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"{what} {name!r} appears twice")
                seen.add(name)
        if self.promised_limit.days > self.legal_limit.days and (
                self.promised_limit.unit == self.legal_limit.unit):
            raise ValueError("the promised time limit is longer than the legal one")
        return self

    @property
    def key(self) -> str:
        """``<region>.<code>``: the entry's name in the circle's catalog bucket."""
        return f"{self.region}.{self.code}"

    def effective_on(self, day: str) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)

    def check_form(self, values: dict[str, str]) -> dict[str, str]:
        """Check an application's form values; ``ValueError`` listing every problem."""
        problems, checked = [], {}
        for field in self.form:
            try:
                checked[field.name] = field.check(values.get(field.name, ""))
            except ValueError as exc:
                problems.append(str(exc))
        unknown = sorted(set(values) - {f.name for f in self.form})
        if unknown:
            problems.append(f"表单没有这些字段 / the form has no fields {', '.join(unknown)}")
        if problems:
            raise ValueError("; ".join(problems))
        return checked


def entry_digest(entry: CatalogEntry) -> bytes:
    """The Merkle leaf a region signs for one entry."""
    return leaf_digest(TAG_CATALOG, entry.canonical_bytes)


class CatalogRecord(Wire):
    """A published entry: the entry and its region's signature (a catalog bucket value)."""

    entry: CatalogEntry
    sig: Signature
