"""The node's logs: one JSON object a line, personal data masked.

Theory of operation
-------------------
``configure`` gives the root logger one handler on standard error, with

* a ``MaskingFilter``: every record that reaches the handler has its message (its
  arguments already filled in), its exception text and its stack masked before any
  formatter sees it: 公民身份号码 (18 characters, the last may be ``X``, and the old
  15-digit ones) as ``3701**********1234``, mainland mobile numbers (``+86`` or not,
  with or without separators) as ``138****5678``, landlines with their area code as
  ``053*****8888``, and pydantic's ``input_value=…`` echoes as ``input_value=***``.
  A person's name cannot be told from other text, so code that logs one passes it
  wrapped, ``log.info("收件 %s", Personal.name(applicant))``, and it prints masked
  (``张*丰``; the wrapper never holds the name itself). The functions are
  ``protocol.masking``'s, the same the printed 收件回执 uses (GB/T 35273-2020 §3.14);
* a formatter: ``JsonFormatter`` (``--log-format json``) writes ``{"time": ISO-8601
  with the zone, "level", "logger", "message", "region" (when known), "exception"}``
  one a line, for a log collector; ``text`` writes the usual
  ``time level logger: message`` lines for a person at a terminal.

Which format: ``tongban node`` logs JSON by default (it runs as a service: Docker,
systemd, a collector reads its standard error); ``tongban demo``, the benchmarks
and every other command log text (a person reads them). ``--log-format`` or
``TONGBAN_LOG_FORMAT`` chooses otherwise.

The region: ``Node.run`` sets ``current_region`` for its tasks (several nodes share
one process in ``tongban demo`` and the tests), and a formatter given a region
(``tongban node``) uses it for records logged elsewhere (the web server's).

The patterns are fixed-width or bounded (``{1,2}``, ``{6,7}``), delimited by
lookarounds on ASCII letters and digits, with no nested repetition: matching is
linear in the line's length, whatever it holds. An identifier of the node's own
(case ids ``370100-20260601-000001``, message ids, region codes, millisecond
times, hex digests) does not look like any of them and stays as it is.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
from typing import IO, Any

from protocol.masking import mask_id_number, mask_name, mask_phone

__all__ = ["FORMATS", "JsonFormatter", "MaskingFilter", "Personal", "configure", "current_region",
           "mask_text"]

#: The region whose node logs in this task (``Node.run`` sets it).
current_region: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tongban_region", default=None)

FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_EDGE_BEFORE = r"(?<![0-9A-Za-z])"
_EDGE_AFTER = r"(?![0-9A-Za-z])"
_DATE = r"(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
#: 公民身份号码 (GB 11643-1999): region, birth date (YYYYMMDD), sequence, check digit;
#: the old 15-digit form has a two-digit year and no check digit.
_ID_NUMBER = re.compile(
    _EDGE_BEFORE + r"(?:[1-9][0-9]{5}(?:18|19|20)[0-9]{2}" + _DATE + r"[0-9]{3}[0-9Xx]"
    r"|[1-9][0-9]{5}[0-9]{2}" + _DATE + r"[0-9]{3})" + _EDGE_AFTER)
#: Mobile numbers: 1[3-9] and nine digits, optionally +86 / 86 first and separated 3-4-4.
_MOBILE = re.compile(
    _EDGE_BEFORE + r"(?P<prefix>(?:\+?86[ -]?)?)(?P<number>1[3-9][0-9](?:[ -]?[0-9]{4}){2})"
    + _EDGE_AFTER)
#: Landlines: area code 0xx / 0xxx (in parentheses or not), then 7 or 8 digits.
_LANDLINE = re.compile(
    _EDGE_BEFORE + r"(?:\(0[1-9][0-9]{1,2}\)|0[1-9][0-9]{1,2})[ -]?[2-9][0-9]{6,7}" + _EDGE_AFTER)
#: pydantic's error text quotes the value it refused.
_INPUT_VALUE = re.compile(r"input_value=(?:'[^'\n]{0,2000}'|\"[^\"\n]{0,2000}\"|[^,\]\n]{0,2000})")


def mask_text(text: str) -> str:
    """``text`` with every 身份证号, phone number and pydantic input value masked."""
    if not any(c.isdigit() for c in text) and "input_value=" not in text:
        return text  # most lines: nothing to look for
    text = _INPUT_VALUE.sub("input_value=***", text)
    text = _ID_NUMBER.sub(lambda m: mask_id_number(m.group(0)), text)
    text = _MOBILE.sub(lambda m: m.group("prefix") + mask_phone(m.group("number")), text)
    return _LANDLINE.sub(lambda m: mask_phone(m.group(0)), text)


class Personal:
    """A personal value handed to a log call: it prints masked, whatever the format
    (``%s``, ``%r``, f-strings). It keeps only the masked form."""

    __slots__ = ("_shown",)

    def __init__(self, shown: str) -> None:
        self._shown = shown

    @classmethod
    def name(cls, value: str) -> Personal:
        """A person's name (申请人, 代办人, staff): ``张三丰`` → ``张*丰``."""
        return cls(mask_name(value))

    @classmethod
    def id_number(cls, value: str) -> Personal:
        """Any 证件号码, including those no pattern knows (passports, 港澳通行证)."""
        return cls(mask_id_number(value))

    @classmethod
    def phone(cls, value: str) -> Personal:
        return cls(mask_phone(value))

    def __str__(self) -> str:
        return self._shown

    def __repr__(self) -> str:
        return repr(self._shown)

    def __format__(self, spec: str) -> str:
        return format(self._shown, spec)


_PLAIN = logging.Formatter()


class MaskingFilter(logging.Filter):
    """Masks personal data in a record's message, exception and stack (a handler's
    filter: it sees the records of every logger that reach the handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: show both, masked
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = mask_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _PLAIN.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        if getattr(record, "region", None) is None:
            record.region = current_region.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line (see the module docstring); masks again what it writes,
    so it is safe without the filter too."""

    def __init__(self, region: str | None = None) -> None:
        super().__init__()
        self.region = region

    def format(self, record: logging.LogRecord) -> str:
        moment = dt.datetime.fromtimestamp(record.created).astimezone()
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_text(record.getMessage()),
        }
        region = getattr(record, "region", None) or current_region.get() or self.region
        if region:
            entry["region"] = region
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = mask_text(record.exc_text)
        if record.stack_info:
            entry["stack"] = mask_text(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(log_format: str = "text", *, level: int = logging.WARNING, region: str | None = None,
              stream: IO[str] | None = None) -> logging.Handler:
    """The process's logging: one masked handler on ``stream`` (standard error), in
    ``log_format`` (``json`` or ``text``); replaces any handler set up before."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {FORMATS}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(MaskingFilter())
    handler.setFormatter(JsonFormatter(region) if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return handler
