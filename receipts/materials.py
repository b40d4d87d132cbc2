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

__all__ = ["CHUNK_SIZE", "ChunkDecryptor", "ChunkEncryptor", "decrypt_chunks", "encrypt_chunks",
           "new_material_key"]

CHUNK_SIZE = 256 * 1024
_TAG = b"tongban/1 chunk\x00"


def new_material_key() -> bytes:
    return os.urandom(32)


def _nonce(index: int) -> bytes:
    return b"\x00\x00\x00\x00" + struct.pack(">Q", index)


def _aad(index: int, final: bool) -> bytes:
    return _TAG + struct.pack(">QB", index, final)


class ChunkEncryptor:
    """Incremental encryption of one file: feed plaintext in any pieces, get chunks out.

    Also hashes the plaintext, so the ``MaterialRef`` can be filled in at the end.
    """

    def __init__(self, key: bytes, chunk_size: int = CHUNK_SIZE) -> None:
        self._aead = AESGCM(key)
        self._size = chunk_size
        self._buffer = bytearray()
        self._index = 0
        self._digest = hashlib.sha256()
        self.total = 0

    def update(self, piece: bytes) -> list[bytes]:
        """Ciphertext chunks that are complete; the last full chunk is held back,
        because only ``finish`` knows whether it is the final one."""
        self._digest.update(piece)
        self.total += len(piece)
        self._buffer += piece
        out = []
        while len(self._buffer) > self._size:
            out.append(self._seal(bytes(self._buffer[:self._size]), final=False))
            del self._buffer[:self._size]
        return out

    def finish(self) -> bytes:
        """The final chunk (possibly empty)."""
        return self._seal(bytes(self._buffer), final=True)

    @property
    def sha256(self) -> bytes:
        return self._digest.digest()

    def _seal(self, chunk: bytes, final: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._index), chunk, _aad(self._index, final))
        self._index += 1
        return sealed


class ChunkDecryptor:
    """Incremental decryption of one file's ciphertext chunks, checked at the end.

    Each chunk is authentic on its own, but only ``close`` proves the file complete
    and the one its ``MaterialRef`` names: callers that pass plaintext on must be
    ready to abort the output when ``close`` raises."""

    def __init__(self, key: bytes, sha256: bytes, size: int, chunk_size: int = CHUNK_SIZE) -> None:
        self._aead = AESGCM(key)
        self._chunk_size = chunk_size
        self._expected = (sha256, size)
        self._digest = hashlib.sha256()
        self._index = 0
        self._total = 0
        self.finished = False

    def chunk(self, sealed: bytes) -> bytes:
        """Decrypt the next ciphertext chunk (``chunk_size`` + 16 bytes, the last shorter)."""
        if self.finished:
            raise RemoteProtocolError(Reason.DECRYPTION_FAILED, "data after the final chunk")
        for final in (True,) if len(sealed) - 16 < self._chunk_size else (False, True):
            try:
                plain = self._aead.decrypt(_nonce(self._index), sealed, _aad(self._index, final))
            except InvalidTag:
                continue
            self.finished = final
            break
        else:
            raise RemoteProtocolError(Reason.DECRYPTION_FAILED, f"chunk {self._index}")
        self._index += 1
        self._digest.update(plain)
        self._total += len(plain)
        return plain

    def close(self) -> None:
        """Check that the file was complete and is the one the ``MaterialRef`` names."""
        if not self.finished:
            raise RemoteProtocolError(Reason.DECRYPTION_FAILED, "the file is truncated")
        if (self._digest.digest(), self._total) != self._expected:
            raise RemoteProtocolError(Reason.DECRYPTION_FAILED, "size or SHA-256 does not match")


def encrypt_chunks(key: bytes, pieces: Iterable[bytes], chunk_size: int = CHUNK_SIZE,
                   ) -> Iterator[bytes]:
    """Encrypt a file given as any pieces; yields ciphertext chunks of chunk_size + 16."""
    encryptor = ChunkEncryptor(key, chunk_size)
    for piece in pieces:
        yield from encryptor.update(piece)
    yield encryptor.finish()


def decrypt_chunks(key: bytes, chunks: Iterable[bytes], sha256: bytes, size: int,
                   chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Decrypt ciphertext chunks (each exactly as ``encrypt_chunks`` made them).

    Raises ``RemoteProtocolError(DECRYPTION_FAILED)`` on a tampered, reordered,
    truncated or extended file, or one whose digest or size does not match.
    """
    decryptor = ChunkDecryptor(key, sha256, size, chunk_size)
    for chunk in chunks:
        yield decryptor.chunk(chunk)
    decryptor.close()
