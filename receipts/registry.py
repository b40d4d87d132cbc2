"""Which public keys belong to which region, and when they may be used.

A ``KeyRecord`` is valid from ``valid_from`` until ``valid_until`` (rotation: the
old and the new key overlap for a while) unless it is revoked. Two questions are
asked of it, with different answers on purpose:

* a message arriving *now* (``signing_key(..., now=now)``): may this key sign it?
  Not once the key is revoked, whatever time the message claims (a stolen key can
  backdate).
* a receipt made at time ``t`` (``signing_key(key, region, t)``): did this key
  validly sign it? Yes if ``t`` falls in its validity and before any revocation, so
  receipts made before a revocation still verify afterwards.

The circle registry (``routing``) fills a ``KeyRegistry`` from the signed member list.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterable
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from protocol.errors import LocalProtocolError, Reason, RemoteProtocolError
from receipts.errors import KeyFileError
from receipts.keys import NodeKeys, key_id

__all__ = ["KeyRecord", "KeyRegistry", "records_from_public_json"]


@dataclasses.dataclass(frozen=True)
class KeyRecord:
    key_id: str
    region: str
    purpose: Literal["sign", "encrypt"]
    public: bytes
    valid_from: int
    valid_until: int | None = None
    revoked_at: int | None = None

    def __post_init__(self) -> None:
        if self.purpose not in ("sign", "encrypt"):
            raise ValueError(f"purpose {self.purpose!r} is neither sign nor encrypt")
        if not isinstance(self.public, bytes) or len(self.public) != 32:
            raise ValueError("a public key has 32 bytes")
        for name in ("valid_from", "valid_until", "revoked_at"):
            value = getattr(self, name)
            if value is not None and type(value) is not int:
                raise ValueError(f"{name} must be integer milliseconds")
        if type(self.valid_from) is not int:
            raise ValueError("valid_from must be integer milliseconds")
        if not isinstance(self.key_id, str) or not isinstance(self.region, str):
            raise ValueError("key_id and region are strings")
        alg = "ed25519" if self.purpose == "sign" else "x25519"
        if key_id(alg, self.public) != self.key_id:
            raise ValueError(f"key id {self.key_id} does not match its public key")

    def usable_at(self, at: int) -> bool:
        return (
            self.valid_from <= at
            and (self.valid_until is None or at < self.valid_until)
            and (self.revoked_at is None or at < self.revoked_at)
        )

    def to_wire(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_wire(cls, fields: dict[str, Any]) -> KeyRecord:
        return cls(**fields)


class KeyRegistry:
    """Key id → record, with the checks a receiver and a verifier make."""

    def __init__(self, records: Iterable[KeyRecord] = ()) -> None:
        self._records: dict[str, KeyRecord] = {}
        self._sign_cache: dict[str, Ed25519PublicKey] = {}
        for record in records:
            self.add(record)

    def add(self, record: KeyRecord) -> None:
        self._records[record.key_id] = record
        self._sign_cache.pop(record.key_id, None)

    def add_node(self, keys: NodeKeys, valid_from: int, valid_until: int | None = None) -> None:
        """Register both public keys of a node (tests, demo, a node's own keys)."""
        self.add(KeyRecord(keys.sign_key_id, keys.region, "sign", keys.sign_public,
                           valid_from, valid_until))
        self.add(KeyRecord(keys.encrypt_key_id, keys.region, "encrypt", keys.encrypt_public,
                           valid_from, valid_until))

    def replace(self, records: Iterable[KeyRecord]) -> None:
        """Trust exactly these records from now on (a new circle registry)."""
        self._records = {}
        self._sign_cache = {}
        for record in records:
            self.add(record)

    def revoke(self, key: str, at: int) -> None:
        self.add(dataclasses.replace(self.record(key), revoked_at=at))

    def record(self, key: str) -> KeyRecord:
        try:
            return self._records[key]
        except KeyError:
            raise RemoteProtocolError(Reason.UNKNOWN_KEY, key) from None

    def records(self) -> list[KeyRecord]:
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"<KeyRegistry {len(self._records)} keys>"

    def signing_key(self, key: str, region: str, at: int, *, now: int | None = None) -> Ed25519PublicKey:
        """The Ed25519 key ``key`` of ``region``, if it may sign something made at ``at``.

        With ``now`` (a message arriving now), a revoked key is refused even for an
        ``at`` before the revocation.
        """
        record = self.record(key)
        if record.purpose != "sign" or record.region != region:
            raise RemoteProtocolError(Reason.UNKNOWN_KEY, f"{key} is not a signing key of {region}")
        if not record.usable_at(at) or (now is not None and record.revoked_at is not None
                                        and record.revoked_at <= now):
            raise RemoteProtocolError(Reason.KEY_NOT_VALID, f"{key} at {at}")
        public = self._sign_cache.get(key)
        if public is None:
            public = self._sign_cache[key] = Ed25519PublicKey.from_public_bytes(record.public)
        return public

    def encryption_key(self, region: str, at: int) -> tuple[str, X25519PublicKey]:
        """The region's newest X25519 key usable at ``at``, to encrypt to."""
        usable = [r for r in self._records.values()
                  if r.region == region and r.purpose == "encrypt" and r.usable_at(at)]
        if not usable:  # our side cannot send: not the peer's fault
            raise LocalProtocolError(Reason.NOT_A_MEMBER, f"no usable encryption key of {region}")
        newest = max(usable, key=lambda r: r.valid_from)
        return newest.key_id, X25519PublicKey.from_public_bytes(newest.public)


def records_from_public_json(fields: Any) -> list[KeyRecord]:
    """The two records of a partner's ``public.json`` (``NodeKeys.public_record``).

    Raises ``KeyFileError`` naming what is wrong."""
    try:
        common = {"region": fields["region"], "valid_from": fields["valid_from"],
                  "valid_until": fields.get("valid_until")}
        return [
            KeyRecord(fields["sign_key"], purpose="sign",
                      public=base64.b64decode(fields["sign_public"], validate=True), **common),
            KeyRecord(fields["encrypt_key"], purpose="encrypt",
                      public=base64.b64decode(fields["encrypt_public"], validate=True), **common),
        ]
    except KeyError as exc:
        raise KeyFileError(f"public.json lacks {exc} (公钥文件缺少字段)") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise KeyFileError(f"public.json is not valid: {exc} (公钥文件无效)") from exc
