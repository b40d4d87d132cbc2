"""Field types shared by every message: codes, identifiers, times, personal data.

Sizes follow GB/T 39046-2020 where it gives one, widened to what regions' systems
really carry (the national exchange schema uses varchar(36) for 实施编码 where the
standard says an..24, and Sichuan's 实施编码 are 51 characters long).

Times are integer milliseconds since the Unix epoch (UTC); calendar dates, which
have no time zone, are ``YYYY-MM-DD`` strings. Strings are normalised to NFC when a
model is built locally; on the wire the codec refuses anything else.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from protocol.codec import encode

__all__ = [
    "MILLIS_MAX",
    "MILLIS_MIN",
    "Address",
    "CaseId",
    "CreditCode",
    "Date",
    "Digest",
    "DocNumber",
    "IdNumber",
    "KeyId",
    "LongText",
    "MatterCode",
    "MessageId",
    "Millis",
    "Name",
    "Phone",
    "RegionCode",
    "RequiredText",
    "Text",
    "Wire",
    "check_credit_code",
    "check_id_number",
    "credit_check_char",
    "date_of",
    "end_of_day",
]


def _nfc(value: str) -> str:
    return value if value.isascii() else unicodedata.normalize("NFC", value)


class Wire(BaseModel):
    """Base of every model that crosses between regions: immutable, strict, closed.

    ``canonical_bytes`` (its canonical msgpack) is computed once per instance; a
    ``model_copy`` with changes starts without it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    @cached_property
    def canonical_bytes(self) -> bytes:
        return encode(self.model_dump(exclude_none=True))

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copy = super().model_copy(update=update, deep=deep)
        if update:
            copy.__dict__.pop("canonical_bytes", None)
        return copy


def _text(max_length: int, min_length: int = 0) -> Any:
    """A free-text type: normalised to NFC when a model is built, within these lengths."""
    return Annotated[
        str,
        AfterValidator(_nfc),
        StringConstraints(min_length=min_length, max_length=max_length),
    ]


#: Free text of a person (names of matters, opinions, reasons): at most 2,000 characters.
Text = _text(2000)
#: The same, where something must be said (a refusal's reason and legal basis).
RequiredText = _text(2000, 1)
#: Long prose of a catalog entry (受理条件, 办理流程, 设定依据): at most 20,000 characters.
LongText = _text(20_000)
#: A short label (a person's or organisation's name, a code's name): 1..200 characters.
Name = _text(200, 1)
#: Document numbers and identifiers written by people (受理文书编号, 收件编号, 证照编号).
DocNumber = _text(100, 1)
#: An address (通讯地址).
Address = _text(200)

#: GB/T 2260 administrative division code: 6 digits, or the 9- and 12-digit forms
#: (township, statistical) seen in practice (GB/T 39046 行政区划 n..9).
#: GB/T 2260 行政区划代码: 6 digits, or 9/12 with the township and village.
REGION_PATTERN = r"^[0-9]{6}([0-9]{3}|[0-9]{6})?$"
RegionCode = Annotated[str, StringConstraints(pattern=REGION_PATTERN)]

#: 实施编码 / 基本编码 / 业务办理项编码 and other codes of the catalog.
MATTER_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z._\-]{0,63}$"
MatterCode = Annotated[str, StringConstraints(pattern=MATTER_PATTERN)]

#: Cross-node application id (跨域办件编号) and message ids: opaque, URL-safe.
CaseId = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z][0-9A-Za-z._\-]{7,79}$")]
MessageId = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z][0-9A-Za-z._\-]{7,79}$")]

#: A key id: algorithm and the first 8 bytes of SHA-256 of the raw public key, in hex.
KeyId = Annotated[str, StringConstraints(pattern=r"^(ed25519|x25519):[0-9a-f]{16}$")]

#: A SHA-256 digest.
Digest = Annotated[bytes, Field(min_length=32, max_length=32)]
#: A remote virtual-window session (远程虚拟窗口): ``vs-<caller region>-<random>``.
SESSION_PATTERN = r"^vs-[0-9]{6,12}-[0-9A-Za-z_-]{16,32}$"
SessionId = Annotated[str, StringConstraints(pattern=SESSION_PATTERN)]

MILLIS_MIN, MILLIS_MAX = 946_684_800_000, 7_258_118_400_000
#: Milliseconds since 1970-01-01T00:00:00Z; anything before 2000 or after 2200 is a bug.
Millis = Annotated[int, Field(ge=MILLIS_MIN, le=MILLIS_MAX)]

_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _valid_date(value: str) -> str:
    if not _DATE.match(value):
        raise ValueError("date must be written YYYY-MM-DD")
    dt.date.fromisoformat(value)  # raises ValueError for 2026-02-30
    return value


#: A calendar date (日期型), ``YYYY-MM-DD``.
Date = Annotated[str, AfterValidator(_valid_date)]

#: Certificate number (证件号码): up to 50 characters of letters, digits and hyphens.
IdNumber = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z\-()（）]{1,50}$")]

#: A phone number: mobile (11 digits) or landline with area code, optional extension.
Phone = Annotated[str, StringConstraints(
    pattern=r"^(1[0-9]{10}|0[0-9]{2,3}-?[0-9]{7,8}(-[0-9]{1,6})?|\+?[0-9]{6,20})$")]

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def check_id_number(number: str) -> str:
    """Validate an 18-character 公民身份号码 (GB 11643-1999), check digit included."""
    upper = number.upper()
    if not re.fullmatch(r"[0-9]{17}[0-9X]", upper):
        raise ValueError("公民身份号码 must be 17 digits and a check digit (0-9 or X)")
    total = sum(int(digit) * weight for digit, weight in zip(upper, _ID_WEIGHTS, strict=False))
    if _ID_CHECK[total % 11] != upper[-1]:
        raise ValueError("公民身份号码 check digit does not match (GB 11643)")
    return upper


_CREDIT_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def credit_check_char(first17: str) -> str:
    """The check character of a 统一社会信用代码 (GB 32100-2015) from its first 17."""
    total = sum(_CREDIT_CHARS.index(c) * w for c, w in zip(first17, _CREDIT_WEIGHTS, strict=True))
    return _CREDIT_CHARS[(31 - total % 31) % 31]


def check_credit_code(code: str) -> str:
    """Validate an 18-character 统一社会信用代码 (GB 32100-2015), check character included."""
    if len(code) != 18 or any(c not in _CREDIT_CHARS for c in code):
        raise ValueError("统一社会信用代码 has 18 characters from 0-9 and A-Y without I, O, S, V, Z")
    if credit_check_char(code[:17]) != code[17]:
        raise ValueError("统一社会信用代码 check character does not match (GB 32100)")
    return code


#: 统一社会信用代码 (GB 32100): 18 characters, check character verified.
CreditCode = Annotated[str, AfterValidator(check_credit_code)]

_CST = dt.timezone(dt.timedelta(hours=8), "CST")


def date_of(millis: int) -> dt.date:
    """The calendar date in China Standard Time of an instant, for working-day clocks."""
    return dt.datetime.fromtimestamp(millis / 1000, _CST).date()


def clock_text(millis: int, *, seconds: bool = False) -> str:
    """An instant as people here read it (北京时间), e.g. ``2026-06-01 14:35`` (with
    ``seconds``: ``2026-06-01 14:35:07``)."""
    return dt.datetime.fromtimestamp(millis / 1000, _CST).strftime(
        "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def end_of_day(day: dt.date) -> int:
    """The last millisecond of ``day`` in China Standard Time."""
    start = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), _CST)
    return int(start.timestamp() * 1000) - 1
