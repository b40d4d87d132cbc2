"""Masking personal data for print and logs: ``张*丰``, ``3701**********1234``, ``138****5678``.

A masked value lets the person it belongs to recognise it (the printed 收件回执 in their
hand, a line in a log an operator reads) without telling a stranger who found it
anything they could use. GB/T 35273-2020 (个人信息安全规范) §3.14 calls this
去标识化; the visible parts follow what Chinese government service receipts usually
print: the first and last character of a name, the first and last four characters of
a 公民身份号码 (the region and the check digits), the first three and last four digits
of a mobile number.

Each function keeps at most about half of a short value visible, so a two-character
value never shows whole. Pure functions, no I/O.
"""

from __future__ import annotations

__all__ = ["MASK", "mask_id_number", "mask_name", "mask_phone"]

MASK = "*"
#: Separators in names that stay visible (阿卜杜拉·艾力 → 阿***·**力): they are not personal.
_NAME_SEPARATORS = frozenset("·•・ ")


def mask_name(name: str) -> str:
    """A person's name: the first and the last character stay (``张三丰`` → ``张*丰``, ``李四``
    → ``李*``, ``王`` → ``*``)."""
    name = name.strip()
    if len(name) <= 1:
        return MASK * len(name)
    if len(name) == 2:
        return name[0] + MASK
    middle = "".join(c if c in _NAME_SEPARATORS else MASK for c in name[1:-1])
    return name[0] + middle + name[-1]


def _keep_ends(value: str, head: int, tail: int) -> str:
    hidden = len(value) - head - tail
    return value[:head] + MASK * hidden + (value[-tail:] if tail else "")


def mask_id_number(id_number: str) -> str:
    """A 证件号码: up to four characters stay at each end, never more than a quarter of it
    each (``370102199003071234`` → ``3701**********1234``, a 9-character passport number
    ``E12345678`` → ``E1*****78``, anything under four characters → all masked)."""
    id_number = id_number.strip()
    keep = min(4, len(id_number) // 4)
    return _keep_ends(id_number, keep, keep)


def mask_phone(phone: str) -> str:
    """A phone number: the last four digits stay, and the first three of a mobile or
    longer number (``13812345678`` → ``138****5678``, ``0531-8888888`` → ``053*****8888``,
    a short one shows at most its last two)."""
    phone = phone.strip()
    if len(phone) >= 11:
        return _keep_ends(phone, 3, 4)
    if len(phone) >= 8:
        return _keep_ends(phone, 0, 4)
    return _keep_ends(phone, 0, min(2, len(phone) * 2 // 5))
