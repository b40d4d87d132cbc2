"""Payload encryption: ephemeral-static X25519, HKDF-SHA256 bound to the header, AES-256-GCM.

For a message to region R (docs/protocol.md §5)::

    shared  = X25519(ephemeral private, R's X25519 public)
    info    = "tongban/1 payload\\0" || canonical(envelope header incl. enc)
    k       = HKDF-SHA256(ikm=shared, salt=epk || R's public, info, 32 bytes)
    payload = SHA-256("tongban/1 key\\0" || k) || AES-256-GCM(k, nonce, plaintext, no AAD)

``k`` is the message's *content key*. The 32-byte commitment in front of the
ciphertext is covered by the envelope signature, so the content key an evidence
bundle reveals is provably the one the sender used (AES-GCM alone does not commit
to its key).

Because ``info`` holds the whole header (message id included), every message gets
its own key even when the sender reuses an ephemeral key for a short while:
``Sealer`` keeps one per recipient key for ``reuse`` messages or ``ttl_ms``,
which saves two X25519 operations per message. The receiver's ``Opener`` caches
shared secrets by ephemeral key for the same reason.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.envelope import EncryptionHeader
from protocol.errors import Reason, RemoteProtocolError

__all__ = ["COMMIT_TAG", "PAYLOAD_TAG", "Opener", "Sealer", "content_key", "open_payload",
           "seal_payload"]

PAYLOAD_TAG = b"tongban/1 payload\x00"
COMMIT_TAG = b"tongban/1 key\x00"


def content_key(shared: bytes, epk: bytes, recipient_public: bytes, header: bytes) -> bytes:
    """HKDF-SHA256 over the shared secret; ``header`` is the canonical header bytes."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=epk + recipient_public,
        info=PAYLOAD_TAG + header,
    ).derive(shared)


def seal_payload(key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    return hashlib.sha256(COMMIT_TAG + key).digest() + AESGCM(key).encrypt(nonce, plaintext, None)


def open_payload(key: bytes, nonce: bytes, payload: bytes) -> bytes:
    """Decrypt with a known content key; raises ``RemoteProtocolError(DECRYPTION_FAILED)``."""
    if len(payload) < 48 or payload[:32] != hashlib.sha256(COMMIT_TAG + key).digest():
        raise RemoteProtocolError(Reason.DECRYPTION_FAILED, "key commitment does not match")
    try:
        return AESGCM(key).decrypt(nonce, payload[32:], None)
    except InvalidTag:
        raise RemoteProtocolError(Reason.DECRYPTION_FAILED, "authentication tag") from None


class Sealer:
    """Encrypts payloads to recipients, reusing an ephemeral key briefly per recipient."""

    def __init__(self, reuse: int = 1000, ttl_ms: int = 60_000) -> None:
        self._reuse = reuse
        self._ttl_ms = ttl_ms
        # recipient key id -> (epk, shared secret, uses left, expires at)
        self._ephemeral: dict[str, tuple[bytes, bytes, int, int]] = {}

    def header(self, to: str, recipient: X25519PublicKey, now: int) -> tuple[EncryptionHeader, bytes]:
        """A fresh encryption header for a message to ``to``, and the shared secret."""
        cached = self._ephemeral.get(to)
        if cached is None or cached[2] <= 0 or cached[3] <= now:
            private = X25519PrivateKey.generate()
            epk = private.public_key().public_bytes_raw()
            cached = (epk, private.exchange(recipient), self._reuse, now + self._ttl_ms)
        epk, shared, uses, expires = cached
        self._ephemeral[to] = (epk, shared, uses - 1, expires)
        return EncryptionHeader(to=to, epk=epk, nonce=os.urandom(12)), shared


class Opener:
    """Derives content keys for payloads addressed to our X25519 key."""

    def __init__(self, private: X25519PrivateKey, capacity: int = 1024) -> None:
        self._private = private
        self.public = private.public_key().public_bytes_raw()
        self._shared: OrderedDict[bytes, bytes] = OrderedDict()
        self._capacity = capacity

    def content_key(self, enc: EncryptionHeader, header: bytes) -> bytes:
        shared = self._shared.get(enc.epk)
        if shared is None:
            try:
                shared = self._private.exchange(X25519PublicKey.from_public_bytes(enc.epk))
            except ValueError as exc:  # all-zero shared secret: a low-order point
                raise RemoteProtocolError(Reason.DECRYPTION_FAILED, "ephemeral key") from exc
            self._shared[enc.epk] = shared
            if len(self._shared) > self._capacity:
                self._shared.popitem(last=False)
        return content_key(shared, enc.epk, self.public, header)
