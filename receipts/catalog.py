"""Signing and checking published catalog entries (docs/protocol.md §12).

A region signs its whole catalog as one Merkle batch (one Ed25519 signature, a
short audit path per entry), so checking a partner's 865 entries costs one
verification and a few hashes each. ``check_record`` works on the decoded map,
not on a validated model: a node taking in a circle's 361,570 entries checks the
signature and the fields its index needs; the full model is validated when an
entry is used.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from protocol.catalog import TAG_CATALOG, CatalogEntry, CatalogRecord, entry_digest
from protocol.codec import decode, decode_unchecked, raw_fields
from protocol.codes import ENTRY_STATUSES, MATTER_TYPES, TONGBAN_MODES, TONGBAN_SCOPES
from protocol.envelope import Signature, leaf_digest
from protocol.errors import ProtocolError, Reason, RemoteProtocolError
from receipts.registry import KeyRegistry
from receipts.signing import BatchSigner, SignatureChecker

__all__ = ["CheckedRecord", "check_record", "sign_entries"]


def sign_entries(signer: BatchSigner, entries: Sequence[CatalogEntry]) -> list[CatalogRecord]:
    signatures = signer.sign([entry_digest(e) for e in entries])
    return [CatalogRecord(entry=e, sig=s) for e, s in zip(entries, signatures, strict=True)]


@dataclasses.dataclass(frozen=True)
class CheckedRecord:
    """A record whose signature holds: the entry's indexed fields, its bytes and digest."""

    entry: dict[str, Any]
    digest: bytes
    record: bytes  # the canonical record, as received


#: What the index takes from an entry (searchable text: name, materials, conditions;
#: 基本编码 and 通办范围 for routing).
_PARSED = ("region", "code", "basic_code", "scope", "version", "status", "name", "matter_type",
           "modes", "effective_from", "effective_to", "materials", "conditions")
_REGION = re.compile(r"[0-9]{6}([0-9]{3}|[0-9]{6})?")
_CODE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._\-]{0,63}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _text(value: Any, longest: int, shortest: int = 0) -> bool:
    return (isinstance(value, str) and shortest <= len(value) <= longest
            and (value.isascii() or unicodedata.is_normalized("NFC", value)))


def _date(value: Any) -> bool:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _indexed_problem(entry: dict[str, Any]) -> str | None:
    """What is wrong with the fields the index takes (the rest is checked on use)."""
    version, modes, materials = entry.get("version"), entry.get("modes"), entry.get("materials", ())
    checks = (
        ("region", isinstance(entry.get("region"), str) and _REGION.fullmatch(entry["region"])),
        ("code", isinstance(entry.get("code"), str) and _CODE.fullmatch(entry["code"])
         and ".." not in entry["code"] and not entry["code"].endswith(".")),
        ("basic_code", isinstance(entry.get("basic_code"), str)
         and _CODE.fullmatch(entry["basic_code"])),
        ("scope", entry.get("scope") in TONGBAN_SCOPES),
        ("version", type(version) is int and 1 <= version <= 1_000_000),
        ("status", entry.get("status") in ENTRY_STATUSES),
        ("name", _text(entry.get("name"), 200, 1)),
        ("matter_type", entry.get("matter_type") in MATTER_TYPES),
        ("modes", isinstance(modes, tuple) and 1 <= len(modes) <= 3 and len(set(modes)) == len(modes)
         and all(m in TONGBAN_MODES for m in modes)),
        ("effective_from", _date(entry.get("effective_from"))),
        ("effective_to", "effective_to" not in entry or (
            _date(entry["effective_to"]) and entry["effective_to"] >= entry.get("effective_from", ""))),
        ("materials", isinstance(materials, tuple) and len(materials) <= 200 and all(
            isinstance(m, dict) and _text(m.get("name"), 200, 1) for m in materials)),
        ("conditions", _text(entry.get("conditions", ""), 20_000)),
    )
    bad = [name for name, ok in checks if not ok]
    return f"entry fields {', '.join(bad)}" if bad else None


def check_record(data: bytes, key: str, registry: KeyRegistry, checker: SignatureChecker,
                 now: int) -> CheckedRecord:
    """Check one catalog bucket value published under ``key`` (``<region>.<code>``).

    The signature is checked over the entry's bytes as they came; the entry is parsed
    with ``decode_unchecked`` (the full canonical-form walk and the model come when the
    entry is used). Raises ``RemoteProtocolError``: malformed, not the entry its key
    names, signed by a key that is not an active member's (unknown, expired,
    revoked), or a bad signature.
    """
    try:
        fields = raw_fields(data)
        if list(fields) != ["entry", "sig"]:  # in this order: canonical maps are sorted
            raise RemoteProtocolError(Reason.INVALID_FIELD, "a catalog record is {entry, sig}")
        # Only the fields the index needs are parsed; the rest waits for use.
        parts = raw_fields(fields["entry"])
        entry = {name: decode_unchecked(parts[name]) for name in _PARSED if name in parts}
        sig_fields = decode(fields["sig"])
    except ProtocolError as exc:
        raise RemoteProtocolError(exc.reason, exc.detail) from None
    problem = _indexed_problem(entry)
    if problem is not None:
        raise RemoteProtocolError(Reason.INVALID_FIELD, problem)
    if key != f"{entry['region']}.{entry['code']}":
        raise RemoteProtocolError(Reason.INVALID_FIELD, f"an entry of {entry['region']}."
                                  f"{entry['code']} published as {key}")
    try:
        sig = Signature.model_validate(sig_fields)
    except ValidationError as exc:
        raise RemoteProtocolError(Reason.INVALID_FIELD, f"signature: {exc.error_count()} errors") from None
    public = registry.signing_key(sig.key, entry["region"], now, now=now)
    digest = leaf_digest(TAG_CATALOG, fields["entry"])
    checker.check(digest, sig, public)
    return CheckedRecord(entry=entry, digest=digest, record=bytes(data))
