"""Materials (scans) encrypted in fixed-size chunks under a per-file key.

A 200 MB scan never sits in memory: the file is read, encrypted, stored and
decrypted one chunk at a time. Chunk i of a file with content key K is::

    nonce_i = 0x00000000 || uint64-be(i)
    aad_i   = "tongban/1 chunk\\0" || uint64-be(i) || (0x01 if last chunk else 0x00)
    chunk_i = AES-256-GCM(K, nonce_i, plaintext[i*size : (i+1)*size], aad_i)

Every chunk but the last holds exactly ``chunk_size`` plaintext bytes; an empty
file is one empty final chunk. The final flag stops truncation, the index stops
reordering, the per-file random key makes the counter nonces safe. The decryptor
also checks the plaintext's SHA-256 and size against the ``MaterialRef``.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocol.errors import Reason, RemoteProtocolError

__all__ = ["CHUNK_SIZE", "decrypt_chunks", "encrypt_chunks", "new_material_key", "rechunk"]

CHUNK_SIZE = 256 * 1024
_TAG = b"tongban/1 chunk\x00"


def new_material_key() -> bytes:
    return os.urandom(32)


def _nonce(index: int) -> bytes:
    return b"\x00\x00\x00\x00" + struct.pack(">Q", index)


def _aad(index: int, final: bool) -> bytes:
    return _TAG + struct.pack(">QB", index, final)


def rechunk(pieces: Iterable[bytes], size: int) -> Iterator[tuple[bytes, bool]]:
    """Regroup arbitrary pieces into ``size``-byte chunks, flagging the last one."""
    buffer = bytearray()
    pending: bytes | None = None
    for piece in pieces:
        buffer += piece
        while len(buffer) >= size:
            if pending is not None:
                yield pending, False
            pending = bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        if pending is not None:
            yield pending, False
        yield bytes(buffer), True
    else:
        yield (pending if pending is not None else b""), True


def encrypt_chunks(key: bytes, pieces: Iterable[bytes], chunk_size: int = CHUNK_SIZE,
                   ) -> Iterator[bytes]:
    """Encrypt a file given as any pieces; yields ciphertext chunks of chunk_size + 16."""
    aead = AESGCM(key)
    for index, (chunk, final) in enumerate(rechunk(pieces, chunk_size)):
        yield aead.encrypt(_nonce(index), chunk, _aad(index, final))


def decrypt_chunks(key: bytes, chunks: Iterable[bytes], sha256: bytes, size: int,
                   chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Decrypt ciphertext chunks (each exactly as ``encrypt_chunks`` made them).

    Raises ``RemoteProtocolError(DECRYPTION_FAILED)`` on a tampered, reordered,
    truncated or extended file, or one whose digest or size does not match.
    """
    aead = AESGCM(key)
    digest = hashlib.sha256()
    total = 0
    finished = False
    for index, chunk in enumerate(chunks):
        if finished:
            raise RemoteProtocolError(Reason.DECRYPTION_FAILED, "data after the final chunk")
        plain = None
        for final in (True,) if len(chunk) - 16 < chunk_size else (False, True):
            try:
                plain = aead.decrypt(_nonce(index), chunk, _aad(index, final))
            except InvalidTag:
                continue
            finished = final
            break
        if plain is None:
            raise RemoteProtocolError(Reason.DECRYPTION_FAILED, f"chunk {index}")
        digest.update(plain)
        total += len(plain)
        yield plain
    if not finished:
        raise RemoteProtocolError(Reason.DECRYPTION_FAILED, "the file is truncated")
    if total != size or digest.digest() != sha256:
        raise RemoteProtocolError(Reason.DECRYPTION_FAILED, "size or SHA-256 does not match")
