"""The envelope, the receipt, the signature and the digests that tie them together.

An **envelope** is what crosses NATS: a clear header (who, to whom, which case,
which kind), the encrypted **payload** and a **signature**. The payload holds the
body of the message and the sender's receipts for the case that the recipient has
not had yet.

A **receipt** records one state change of one side: ``{case, index, kind, actor,
key, prev, cause, their, at, data}`` signed by the actor. ``prev`` chains a side's
receipts; ``their`` cross-links the newest receipt seen from the other side, so the
two chains of a case interleave without ever forking.

Signatures are Merkle-batched (docs/protocol.md §4): a node signs the root of a
tree over many items once, and each item carries its audit path. A batch of one is
an ordinary Ed25519 signature over a one-leaf tree. The item's **digest** is its
Merkle leaf hash::

    digest = SHA-256(0x00 || tag || canonical(item without "sig"))

with ``tag`` one of the ``TAG_*`` constants below. Digests name envelopes (dedup,
``cause``, acknowledgements) and receipts (``prev``, ``their``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any, Literal, Self

from pydantic import Field

from protocol.codec import canonical, encode, repack
from protocol.fields import CaseId, Digest, KeyId, MessageId, Millis, RegionCode, Wire

__all__ = [
    "KINDS",
    "PROTOCOL_VERSION",
    "TAG_ENVELOPE",
    "TAG_RECEIPT",
    "EncryptionHeader",
    "Envelope",
    "Kind",
    "Receipt",
    "Signature",
    "leaf_digest",
]

PROTOCOL_VERSION = 1

TAG_ENVELOPE = b"tongban/1 envelope\x00"
TAG_RECEIPT = b"tongban/1 receipt\x00"


Kind = Literal[
    "application",
    "received",
    "decision",
    "supplement",
    "withdrawal",
    "withdrawn",
    "forwarded",
    "progress",
    "outcome",
    "outcome_ack",
    "delivery",
    "evaluation",
    "rejection",
    "video_check",
]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]


class _Signed(Wire):
    """A model whose digest (and header bytes) are computed once and cached.

    The cache survives ``model_copy(update={"sig": ...})`` (the signature is outside
    what the digest covers); a new payload drops the digest, any other update all.
    """

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copy = super().model_copy(update=update, deep=deep)  # drops canonical_bytes on change
        changed = set(update or ()) - {"sig"}
        if changed:
            stale = ("digest",) if changed == {"payload"} else ("digest", "header_map", "header_bytes")
            for cached in stale:
                copy.__dict__.pop(cached, None)
        return copy


class Signature(Wire):
    """A Merkle-batched Ed25519 signature (RFC 9162 §2.1 tree, audit path)."""

    key: KeyId  # signing key
    size: int = Field(ge=1, le=1 << 20)  # leaves in the signed tree
    index: int = Field(ge=0)  # this item's leaf
    path: tuple[Digest, ...] = Field(default=(), max_length=20)  # audit path, leaf to root
    sig: Annotated[bytes, Field(min_length=64, max_length=64)]  # Ed25519 over the root statement


class EncryptionHeader(Wire):
    """How the payload is encrypted to the recipient (docs/protocol.md §5)."""

    alg: Literal["X25519-HKDF-SHA256-A256GCM"] = "X25519-HKDF-SHA256-A256GCM"
    to: KeyId  # recipient's X25519 key
    epk: Annotated[bytes, Field(min_length=32, max_length=32)]  # sender's ephemeral public key
    nonce: Annotated[bytes, Field(min_length=12, max_length=12)]


class Envelope(_Signed):
    """One message between two regions. ``payload`` is ciphertext."""

    v: Literal[1] = 1
    id: MessageId
    kind: Kind
    sender: RegionCode
    recipient: RegionCode
    case: CaseId
    seq: int = Field(ge=1, le=(1 << 63) - 1)  # per-sender sequence, for operators' gap checks
    sent_at: Millis
    enc: EncryptionHeader
    payload: Annotated[bytes, Field(max_length=1 << 20)]
    sig: Signature | None = None

    def header_fields(self) -> dict[str, Any]:
        """The clear header the encryption is bound to (everything but payload and sig)."""
        return {
            "v": self.v,
            "id": self.id,
            "kind": self.kind,
            "sender": self.sender,
            "recipient": self.recipient,
            "case": self.case,
            "seq": self.seq,
            "sent_at": self.sent_at,
            "enc": self.enc.model_dump(),
        }

    def signed_fields(self) -> dict[str, Any]:
        fields = self.header_fields()
        fields["payload"] = self.payload
        return fields

    # The header is canonicalised once; digest and wire bytes are packed from it.

    @cached_property
    def header_map(self) -> dict[str, Any]:
        return canonical(self.header_fields())  # type: ignore[no-any-return]

    @cached_property
    def header_bytes(self) -> bytes:
        """Canonical bytes of ``header_fields()``: the HKDF info binds these."""
        return repack(self.header_map)

    @cached_property
    def digest(self) -> bytes:
        return leaf_digest(TAG_ENVELOPE, repack(_with(self.header_map, payload=self.payload)))

    def to_wire(self) -> bytes:
        """The canonical bytes of the whole envelope, signature included."""
        extra: dict[str, Any] = {"payload": self.payload}
        if self.sig is not None:
            extra["sig"] = canonical(self.sig.model_dump())
        return repack(_with(self.header_map, **extra))


class Receipt(_Signed):
    """A signed record of one state change of one side of a case."""

    case: CaseId
    index: int = Field(ge=0, le=1 << 20)  # position in the actor's chain, from 0
    kind: Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")]
    actor: RegionCode
    key: KeyId  # actor's signing key
    prev: Digest | None = None  # digest of the actor's previous receipt; none for index 0
    cause: Digest  # digest of the envelope or local event that caused the change
    their: Digest | None = None  # newest receipt seen from the other side (cross-link)
    at: Millis
    data: dict[str, str | int | bool] = Field(default_factory=dict, max_length=16)
    sig: Signature | None = None

    def signed_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude={"sig"}, exclude_none=True)

    @cached_property
    def digest(self) -> bytes:
        return leaf_digest(TAG_RECEIPT, encode(self.signed_fields()))


def leaf_digest(tag: bytes, data: bytes) -> bytes:
    """The Merkle leaf hash of an item's canonical bytes: SHA-256(0x00 || tag || bytes)."""
    return hashlib.sha256(b"\x00" + tag + data).digest()


def _with(canonical_map: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A canonical map with more (already canonical) fields, keys kept in order."""
    return dict(sorted({**canonical_map, **fields}.items()))

