"""Materials (scans) at a node: encrypted on arrival, encrypted at rest, decrypted on view.

Theory of operation
-------------------
A clerk's upload is encrypted chunk by chunk as it streams in
(``receipts.materials.ChunkEncryptor``) under a fresh per-file key, into
``<data_dir>/materials/<object>.enc``; its key, digest and size go in the
``materials`` table, never back to the browser. The application then carries a
``MaterialRef`` with the key, inside its encrypted body, and the material relay
puts the ciphertext file into the handling region's object store (``TB_MAT_<region>``)
under the random object name. The handling node fetches it into its own folder
and decrypts it chunk by chunk when a reviewer opens it. At no point does a whole
file sit in memory, and the object store only ever holds ciphertext.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from protocol import bodies as b
from receipts.materials import CHUNK_SIZE, ChunkDecryptor, ChunkEncryptor, new_material_key

__all__ = ["MaterialShelf", "MaterialTooLarge"]


class MaterialTooLarge(Exception):
    """An upload larger than ``limits.max_material_bytes``."""


class MaterialShelf:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, obj: str) -> Path:
        return self.folder / f"{obj}.enc"

    async def intake(self, pieces: AsyncIterator[bytes], name: str, media_type: str) -> dict[str, Any]:
        """Encrypt an upload as it streams in; return its ``materials`` row (state local)."""
        obj = "m-" + secrets.token_hex(12)
        key = new_material_key()
        encryptor = ChunkEncryptor(key, CHUNK_SIZE)
        partial = self.path(obj).with_suffix(".part")
        try:
            with open(partial, "wb") as out:  # noqa: ASYNC230 (chunks written in a thread)
                async for piece in pieces:
                    if encryptor.total + len(piece) > self.max_bytes:
                        raise MaterialTooLarge(f"{encryptor.total + len(piece)} > {self.max_bytes}")
                    for chunk in encryptor.update(piece):
                        await asyncio.to_thread(out.write, chunk)
                await asyncio.to_thread(out.write, encryptor.finish())
                await asyncio.to_thread(os.fsync, out.fileno())
            partial.rename(self.path(obj))
        except BaseException:
            partial.unlink(missing_ok=True)  # nothing half-written stays behind
            raise
        return {"object": obj, "state": "local", "name": name, "media_type": media_type,
                "size": encryptor.total, "sha256": encryptor.sha256, "key": key,
                "chunk_size": CHUNK_SIZE}

    async def plaintext(self, row: dict[str, Any]) -> AsyncIterator[bytes]:
        """Decrypt a stored material chunk by chunk, checking it at the end."""
        decryptor = ChunkDecryptor(row["key"], row["sha256"], row["size"], row["chunk_size"])
        sealed_size = row["chunk_size"] + 16
        with open(self.path(row["object"]), "rb") as source:  # noqa: ASYNC230
            while chunk := await asyncio.to_thread(source.read, sealed_size):
                yield decryptor.chunk(chunk)
        decryptor.close()

    async def check(self, row: dict[str, Any]) -> None:
        """Decrypt the whole file without keeping it: raises if anything is wrong."""
        async for _ in self.plaintext(row):
            pass


def material_ref(row: dict[str, Any], *, trust: str = "C") -> b.MaterialRef:
    """The ``MaterialRef`` an application carries for a stored material."""
    return b.MaterialRef(
        name=row["name"], collected=True, mode="electronic", count=1, trust=trust,  # type: ignore[arg-type]
        sha256=row["sha256"], size=row["size"], media_type=row["media_type"], key=row["key"],
        chunk_size=row["chunk_size"], object=row["object"])


def material_row(ref: b.MaterialRef, case_id: str, peer: str, state: str) -> dict[str, Any]:
    """The ``materials`` row of a material named by a message."""
    return {"object": ref.object, "case_id": case_id, "peer": peer, "state": state,
            "name": ref.name, "media_type": ref.media_type, "size": ref.size,
            "sha256": ref.sha256, "key": ref.key, "chunk_size": ref.chunk_size}
