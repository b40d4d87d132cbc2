"""Bytes ⇄ envelopes and payloads. Every failure is a ``DecodeError`` with a reason.

An envelope on the wire is the canonical msgpack map of ``Envelope`` (signature
included). Its ``payload``, once decrypted, is the canonical map
``{"body": <body of the kind>, "receipts": [<receipt>, ...]}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from protocol.bodies import BODY_TYPES
from protocol.codec import Raw, decode, encode, repack
from protocol.envelope import (
    KINDS,
    PROTOCOL_VERSION,
    TAG_ENVELOPE,
    TAG_RECEIPT,
    EncryptionHeader,
    Envelope,
    Receipt,
    leaf_digest,
)
from protocol.errors import DecodeError, Reason

__all__ = [
    "decode_envelope",
    "decode_payload",
    "encode_envelope",
    "encode_payload",
    "receipt_from_fields",
    "validation_detail",
]

_ENVELOPE_FIELDS = set(Envelope.model_fields) - {"sig"}
_ENC_FIELDS = set(EncryptionHeader.model_fields)
_BODY_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    kind: TypeAdapter(model) for kind, model in BODY_TYPES.items()
}


def encode_envelope(envelope: Envelope) -> bytes:
    return envelope.to_wire()


def decode_envelope(data: bytes) -> Envelope:
    """Parse and validate an envelope; its signature is checked by ``receipts``."""
    fields = decode(data)
    if not isinstance(fields, dict):
        raise DecodeError(Reason.MALFORMED, "an envelope is a map")
    version = fields.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise DecodeError(
            Reason.UNSUPPORTED_VERSION,
            f"version {version!r}; this node speaks version {PROTOCOL_VERSION}",
        )
    if fields.get("kind") not in KINDS:
        raise DecodeError(Reason.UNKNOWN_KIND, repr(fields.get("kind"))[:60])
    try:
        envelope = Envelope.model_validate(fields)
    except ValidationError as exc:
        raise DecodeError(Reason.INVALID_FIELD, validation_detail(exc)) from exc
    # The decoded fields are canonical already: derive the digest and the header bytes
    # from them instead of encoding the model again (the cached properties).
    signed = {k: v for k, v in fields.items() if k != "sig"}
    if set(signed) != _ENVELOPE_FIELDS or set(fields["enc"]) != _ENC_FIELDS:
        raise DecodeError(Reason.NON_CANONICAL, "envelope: every field with a value is written")
    envelope.__dict__["digest"] = leaf_digest(TAG_ENVELOPE, repack(signed))
    del signed["payload"]
    envelope.__dict__["header_bytes"] = repack(signed)
    return envelope


def encode_payload(body: Any, receipts: Sequence[Receipt]) -> bytes:
    return encode({
        "body": Raw(body.canonical_bytes),
        "receipts": [Raw(r.canonical_bytes) for r in receipts],
    })


def decode_payload(kind: str, data: bytes) -> tuple[Any, tuple[Receipt, ...]]:
    """Parse a decrypted payload of a message of ``kind``: its body and receipts."""
    if kind not in _BODY_ADAPTERS:
        raise DecodeError(Reason.UNKNOWN_KIND, repr(kind)[:60])
    fields = decode(data)
    if not isinstance(fields, dict) or set(fields) != {"body", "receipts"}:
        raise DecodeError(Reason.MALFORMED, "a payload is a map of body and receipts")
    raw_receipts = fields.get("receipts", ())
    if not isinstance(raw_receipts, tuple):
        raise DecodeError(Reason.INVALID_FIELD, "receipts: an array")
    try:
        body = _BODY_ADAPTERS[kind].validate_python(fields["body"])
    except ValidationError as exc:
        raise DecodeError(Reason.INVALID_FIELD, validation_detail(exc)) from exc
    # What the sender encrypted is what counts: the body's canonical bytes are the ones
    # received (event digests are re-derived from them), not a re-encoding of the model.
    body.__dict__["canonical_bytes"] = repack(fields["body"])
    return body, tuple(receipt_from_fields(raw) for raw in raw_receipts)


def receipt_from_fields(fields: Any) -> Receipt:
    """A receipt from its decoded (canonical) map; its digest is that of exactly the
    fields that were signed, even where a sender left out a field at its default."""
    try:
        receipt = Receipt.model_validate(fields)
    except ValidationError as exc:
        raise DecodeError(Reason.INVALID_FIELD, "receipt: " + validation_detail(exc)) from exc
    signed = {k: v for k, v in fields.items() if k != "sig"}
    if len(signed) != len(receipt.signed_fields()):
        # A field left out at its default: the bytes signed would not be the bytes stored.
        raise DecodeError(Reason.NON_CANONICAL, "receipt: every field with a value is written")
    receipt.__dict__["digest"] = leaf_digest(TAG_RECEIPT, repack(signed))
    receipt.__dict__["canonical_bytes"] = repack(fields)
    return receipt


def validation_detail(exc: ValidationError) -> str:
    """A short, safe description of the first problems (never echoes values)."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "(message)"
        message = error["msg"]
        if error["type"] == "union_tag_invalid":
            context = error.get("ctx") or {}
            message = (f"unknown {context.get('discriminator', 'tag')}; expected one of "
                       f"{context.get('expected_tags', '')}")
        shown = error.get("input")
        if isinstance(shown, str | bytes | int) and str(shown) in message:
            message = error["type"]  # the message would quote the value
        parts.append(f"{where}: {message}")
    return "; ".join(parts)
