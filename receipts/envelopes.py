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

Keys come from a ``KeyRing`` (receipts.keys), which may switch to a new pair while
the node runs (a rotation, docs/protocol.md §13.1): envelopes are signed with the
current signing key; a receipt with the key it names (a case begun under the
previous key, during the overlap); a message opens with whichever held encryption
key its ``enc.to`` names.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from protocol.envelope import Envelope, Receipt
from protocol.errors import Reason, RemoteProtocolError
from protocol.wire import decode_envelope, decode_payload, encode_envelope, encode_payload
from receipts.keys import KeyRing, NodeKeys
from receipts.registry import KeyRegistry
from receipts.sealing import Opener, Sealer, content_key, open_payload, seal_payload
from receipts.signing import BatchSigner, SignatureChecker

__all__ = ["Letter", "Opened", "Postmaster", "Sealed"]

log = logging.getLogger("tongban.receipts")


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
    def __init__(self, keys: NodeKeys | KeyRing, registry: KeyRegistry) -> None:
        self.keys = keys if isinstance(keys, KeyRing) else KeyRing.of(keys)
        self.registry = registry
        self.checker = SignatureChecker()
        self.sealer = Sealer()
        self._openers: dict[str, Opener] = {}  # by our encryption key id

    @property
    def signer(self) -> BatchSigner:
        """The signer of our current signing key (it changes at a key switch)."""
        return self.keys.signer

    def __repr__(self) -> str:
        return f"<Postmaster {self.keys.region} {self.signer.stats()} {self.checker.stats()}>"

    # ---------------------------------------------------------------- sending

    def sign_receipts(self, receipts: Sequence[Receipt]) -> list[Receipt]:
        """Sign each receipt with the key it names (``receipt.key`` is part of what is
        signed): one Merkle batch per key, so one signature in the usual case."""
        by_key: dict[str, list[int]] = {}
        for i, receipt in enumerate(receipts):
            by_key.setdefault(receipt.key, []).append(i)
        signed = list(receipts)
        for key, positions in by_key.items():
            signer = self.keys.signer_for(key)
            if signer is None:  # a case begun under a key retired since: it cannot verify
                log.error("receipts name %s, a signing key this node no longer holds; signing "
                          "with %s, the peer will refuse them", key, self.signer.key)
                signer = self.signer
            signatures = signer.sign([receipts[i].digest for i in positions])
            for i, sig in zip(positions, signatures, strict=True):
                signed[i] = receipts[i].model_copy(update={"sig": sig})
        return signed

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
        self._check_sender(envelope, now)
        # Sealed to our current key, or to an earlier one still held (a sender that
        # sealed it before it took in the registry of our rotation, §13.1), or to the
        # next one (a sender that took it in before us).
        key = self._opener(envelope.enc.to).content_key(envelope.enc, envelope.header_bytes)
        plaintext = open_payload(key, envelope.enc.nonce, envelope.payload)
        body, receipts = decode_payload(envelope.kind, plaintext)
        for receipt in receipts:
            self.check_receipt(receipt)
        return Opened(envelope, body, receipts, key, plaintext)

    def authenticate(self, wire: bytes, now: int) -> Envelope:
        """A message for another region (to relay): its header, once its sender's
        signature holds. The payload stays sealed. Raises ``RemoteProtocolError``."""
        envelope = decode_envelope(wire)
        self._check_sender(envelope, now)
        return envelope

    def _check_sender(self, envelope: Envelope, now: int) -> None:
        if envelope.sig is None:
            raise RemoteProtocolError(Reason.BAD_SIGNATURE, "unsigned envelope")
        public = self.registry.signing_key(envelope.sig.key, envelope.sender,
                                           envelope.sent_at, now=now)
        self.checker.check(envelope.digest, envelope.sig, public)

    def _opener(self, to: str) -> Opener:
        private = self.keys.decryption_key(to)  # asked each time: a retired key is let go
        if private is None:
            self._openers.pop(to, None)
            raise RemoteProtocolError(Reason.DECRYPTION_FAILED, f"encrypted to {to}, a key "
                                      f"this node does not hold (retired, or not ours)")
        opener = self._openers.get(to)
        if opener is None:
            opener = self._openers[to] = Opener(private)
        return opener

    def check_receipt(self, receipt: Receipt) -> None:
        if receipt.sig is None or receipt.sig.key != receipt.key:
            raise RemoteProtocolError(Reason.BAD_SIGNATURE, f"receipt {receipt.index} unsigned")
        public = self.registry.signing_key(receipt.key, receipt.actor, receipt.at)
        self.checker.check(receipt.digest, receipt.sig, public)
