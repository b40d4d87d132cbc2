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
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from protocol.catalog import TAG_CATALOG, CatalogEntry, CatalogRecord, entry_digest
from protocol.codec import decode, decode_unchecked, raw_fields
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


_INDEXED = {"region": str, "code": str, "version": int, "status": str, "name": str,
            "matter_type": str, "modes": tuple, "effective_from": str}
#: What the index takes from an entry (searchable text: name, materials, conditions).
_PARSED = (*_INDEXED, "effective_to", "materials", "conditions")


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
        if set(fields) != {"entry", "sig"}:
            raise RemoteProtocolError(Reason.INVALID_FIELD, "a catalog record is {entry, sig}")
        # Only the fields the index needs are parsed; the rest waits for use.
        parts = raw_fields(fields["entry"])
        entry = {name: decode_unchecked(parts[name]) for name in _PARSED if name in parts}
        sig_fields = decode(fields["sig"])
    except ProtocolError as exc:
        raise RemoteProtocolError(exc.reason, exc.detail) from None
    for name, kind in _INDEXED.items():
        if not isinstance(entry.get(name), kind) or isinstance(entry.get(name), bool):
            raise RemoteProtocolError(Reason.INVALID_FIELD, f"entry field {name}")
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
