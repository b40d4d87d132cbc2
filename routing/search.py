"""Catalog search queries: what a window clerk types, as terms the index matches.

Chinese is written without spaces, so a query is not split into words: each run
of characters between spaces or punctuation is one term that must appear as it
is (the index matches any three consecutive characters; shorter terms by
substring). ``户口 迁移`` finds 户口迁移（迁入）; so does ``户口迁移``.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_TERMS", "parse_query"]

MAX_TERMS = 8
_SEPARATORS = re.compile(r"[\s,，、;；:：。.!！?？\"“”'‘’()（）\[\]【】《》<>]+")


def parse_query(query: str) -> list[str]:
    """The distinct terms of a query, in order; at most ``MAX_TERMS`` of 50 characters."""
    text = unicodedata.normalize("NFKC", query)  # full-width Latin and digits become plain
    text = unicodedata.normalize("NFC", text)
    terms: list[str] = []
    for term in _SEPARATORS.split(text):
        term = term.strip()[:50]
        if term and term not in terms:
            terms.append(term)
    return terms[:MAX_TERMS]
