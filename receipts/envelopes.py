"""Sealing and opening envelopes: the cryptographic half of sending and receiving.

``Postmaster`` holds one node's keys, the key registry and the caches, and turns
``Letter`` s (what the case machine wants to send) into signed, encrypted wire
bytes, and wire bytes back into a checked ``Opened`` message:

    seal:  payload = canonical {body, receipts}  →  encrypt to the recipient
           → envelope → one Merkle-batched signature over the whole batch
    open:  decode → addressed to us? → sender's key valid now? → signature
           → decrypt → decode payload → every receipt's signature

Signing receipts is separate (``sign_receipts``) and comes first, because the
envelopes carry signed receipts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from protocol.envelope import Envelope, Receipt
from protocol.errors import Reason, RemoteProtocolError
from protocol.wire import decode_envelope, decode_payload, encode_envelope, encode_payload
from receipts.keys import NodeKeys
from receipts.registry import KeyRegistry
from receipts.sealing import Opener, Sealer, content_key, open_payload, seal_payload
from receipts.signing import BatchSigner, SignatureChecker

__all__ = ["Letter", "Opened", "Postmaster", "Sealed"]


@dataclasses.dataclass(frozen=True)
class Letter:
    """A message to send, before encryption and signing."""

    id: str
    kind: str
    recipient: str
    case: str
    seq: int
    sent_at: int
    body: Any
    receipts: tuple[Receipt, ...]


@dataclasses.dataclass(frozen=True)
class Sealed:
    envelope: Envelope
    wire: bytes
    content_key: bytes  # for the evidence bundle
    plaintext: bytes


@dataclasses.dataclass(frozen=True)
class Opened:
    envelope: Envelope
    body: Any
    receipts: tuple[Receipt, ...]
    content_key: bytes
    plaintext: bytes


class Postmaster:
    def __init__(self, keys: NodeKeys, registry: KeyRegistry) -> None:
        self.keys = keys
        self.registry = registry
        self.signer = BatchSigner(keys.signing, keys.sign_key_id)
        self.checker = SignatureChecker()
        self.sealer = Sealer()
        self.opener = Opener(keys.encryption)

    def __repr__(self) -> str:
        return f"<Postmaster {self.keys.region} {self.signer.stats()} {self.checker.stats()}>"

    # ---------------------------------------------------------------- sending

    def sign_receipts(self, receipts: Sequence[Receipt]) -> list[Receipt]:
        signatures = self.signer.sign([r.digest for r in receipts])
        return [r.model_copy(update={"sig": s}) for r, s in zip(receipts, signatures, strict=True)]

    def seal(self, letters: Sequence[Letter]) -> list[Sealed]:
        """Encrypt and sign a batch of letters with one signature."""
        drafts = []
        for letter in letters:
            to, recipient_public = self.registry.encryption_key(letter.recipient, letter.sent_at)
            enc, shared = self.sealer.header(to, recipient_public, letter.sent_at)
            draft = Envelope(
                id=letter.id, kind=letter.kind, sender=self.keys.region,  # type: ignore[arg-type]
                recipient=letter.recipient, case=letter.case, seq=letter.seq,
                sent_at=letter.sent_at, enc=enc, payload=b"",
            )
            key = content_key(shared, enc.epk, recipient_public.public_bytes_raw(),
                              draft.header_bytes)
            plaintext = encode_payload(letter.body, letter.receipts)
            draft = draft.model_copy(update={"payload": seal_payload(key, enc.nonce, plaintext)})
            drafts.append((draft, key, plaintext))
        signatures = self.signer.sign([d.digest for d, _, _ in drafts])
        sealed = []
        for (draft, key, plaintext), sig in zip(drafts, signatures, strict=True):
            envelope = draft.model_copy(update={"sig": sig})
            sealed.append(Sealed(envelope, encode_envelope(envelope), key, plaintext))
        return sealed

    # ---------------------------------------------------------------- receiving

    def open(self, wire: bytes, now: int) -> Opened:
        """Check and decrypt a message addressed to us. Raises ``RemoteProtocolError``."""
        envelope = decode_envelope(wire)
        if envelope.recipient != self.keys.region:
            raise RemoteProtocolError(Reason.WRONG_RECIPIENT, envelope.recipient)
        if envelope.sig is None:
            raise RemoteProtocolError(Reason.BAD_SIGNATURE, "unsigned envelope")
        public = self.registry.signing_key(envelope.sig.key, envelope.sender,
                                           envelope.sent_at, now=now)
        self.checker.check(envelope.digest, envelope.sig, public)
        if envelope.enc.to != self.keys.encrypt_key_id:
            # A message encrypted to one of our earlier keys: the registry knows it,
            # but this node only holds the current private key.
            raise RemoteProtocolError(Reason.DECRYPTION_FAILED, f"encrypted to {envelope.enc.to}")
        key = self.opener.content_key(envelope.enc, envelope.header_bytes)
        plaintext = open_payload(key, envelope.enc.nonce, envelope.payload)
        body, receipts = decode_payload(envelope.kind, plaintext)
        for receipt in receipts:
            self.check_receipt(receipt)
        return Opened(envelope, body, receipts, key, plaintext)

    def check_receipt(self, receipt: Receipt) -> None:
        if receipt.sig is None or receipt.sig.key != receipt.key:
            raise RemoteProtocolError(Reason.BAD_SIGNATURE, f"receipt {receipt.index} unsigned")
        public = self.registry.signing_key(receipt.key, receipt.actor, receipt.at)
        self.checker.check(receipt.digest, receipt.sig, public)
