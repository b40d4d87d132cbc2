"""A node's keys: Ed25519 for signing, X25519 for receiving encrypted payloads.

Key ids are ``<alg>:<first 8 bytes of SHA-256 of the raw public key, hex>``, so
anyone holding the public key can recompute the id.

On disk a node's private keys are two PKCS#8 PEM files written with mode 0600
(``sign.pem``, ``encrypt.pem``) and ``public.json``, the record a partner region
needs (region, key ids, public keys, validity). Loading refuses files that other
users could read, because a leaked signing key forges receipts.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from receipts.errors import KeyFileError

__all__ = ["NodeKeys", "key_id", "raw_public"]

SIGN_FILE = "sign.pem"
ENCRYPT_FILE = "encrypt.pem"
PUBLIC_FILE = "public.json"


def raw_public(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(alg: str, public: bytes) -> str:
    return f"{alg}:{hashlib.sha256(public).digest()[:8].hex()}"


@dataclasses.dataclass(frozen=True)
class NodeKeys:
    region: str
    signing: Ed25519PrivateKey
    encryption: X25519PrivateKey

    @classmethod
    def generate(cls, region: str) -> NodeKeys:
        return cls(region, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def sign_public(self) -> bytes:
        return raw_public(self.signing)

    @property
    def encrypt_public(self) -> bytes:
        return raw_public(self.encryption)

    @property
    def sign_key_id(self) -> str:
        return key_id("ed25519", self.sign_public)

    @property
    def encrypt_key_id(self) -> str:
        return key_id("x25519", self.encrypt_public)

    def __repr__(self) -> str:  # never print private material
        return f"NodeKeys({self.region}, {self.sign_key_id}, {self.encrypt_key_id})"

    def public_record(self, valid_from: int, valid_until: int | None = None) -> dict[str, object]:
        return {
            "region": self.region,
            "sign_key": self.sign_key_id,
            "sign_public": base64.b64encode(self.sign_public).decode(),
            "encrypt_key": self.encrypt_key_id,
            "encrypt_public": base64.b64encode(self.encrypt_public).decode(),
            "valid_from": valid_from,
            "valid_until": valid_until,
        }

    def save(self, directory: Path, valid_from: int) -> None:
        """Write the key files; refuses to overwrite existing keys."""
        directory.mkdir(parents=True, exist_ok=True)
        for name in (SIGN_FILE, ENCRYPT_FILE, PUBLIC_FILE):
            if (directory / name).exists():  # all or nothing: never a half-replaced key set
                raise KeyFileError(
                    f"{directory / name} already exists; move it away first (密钥文件已存在，请先移走)")
        for name, key in ((SIGN_FILE, self.signing), (ENCRYPT_FILE, self.encryption)):
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            path = directory / name
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                raise KeyFileError(
                    f"{path} already exists; move it away first (密钥文件已存在，请先移走)"
                ) from None
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
        public = directory / PUBLIC_FILE
        public.write_text(json.dumps(self.public_record(valid_from), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path, region: str) -> NodeKeys:
        signing = _load_private(directory / SIGN_FILE)
        encryption = _load_private(directory / ENCRYPT_FILE)
        if not isinstance(signing, Ed25519PrivateKey):
            raise KeyFileError(f"{directory / SIGN_FILE} holds a {type(signing).__name__}, "
                               f"not an Ed25519 key (密钥类型错误)")
        if not isinstance(encryption, X25519PrivateKey):
            raise KeyFileError(f"{directory / ENCRYPT_FILE} holds a {type(encryption).__name__}, "
                               f"not an X25519 key (密钥类型错误)")
        return cls(region, signing, encryption)


def _load_private(path: Path) -> PrivateKeyTypes:
    try:
        info = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(
            f"{path} does not exist; create keys with 'tongban keys new' (密钥文件不存在)"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{path} cannot be read: {exc.strerror} (密钥文件无法读取)") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} can be read by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run 'chmod 600 {path}' (私钥文件权限过宽)"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PKCS#8 PEM key (密钥文件格式错误)") from exc
    return key
