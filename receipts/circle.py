"""Signing and checking the circle registry, and the key records a node trusts from it.

``check_registry`` is what every node runs before it trusts a member key: the
registry must be signed by the convener with a key the node was configured with
(the anchor), be for the node's circle, and be newer than the one it holds.
``key_records`` turns a checked registry into ``KeyRecord`` s: a suspended or
revoked member's keys are revoked from its ``status_at`` on.
"""

from __future__ import annotations

from collections.abc import Iterable

from protocol.circle import CircleRegistry, Member, SignedRegistry, registry_digest
from protocol.errors import Reason, RemoteProtocolError
from receipts.registry import KeyRecord, KeyRegistry
from receipts.signing import BatchSigner, SignatureChecker

__all__ = ["check_registry", "key_records", "sign_registry"]


def sign_registry(signer: BatchSigner, registry: CircleRegistry) -> SignedRegistry:
    [sig] = signer.sign([registry_digest(registry)])
    return SignedRegistry(registry=registry, sig=sig)


def check_registry(signed: SignedRegistry, anchor: KeyRegistry, *, circle: str, now: int,
                   held: CircleRegistry | None = None) -> CircleRegistry:
    """The registry, if the convener signed it with an anchor key valid now, for our
    circle, newer than ``held``. Raises ``RemoteProtocolError`` otherwise."""
    registry = signed.registry
    if registry.circle != circle:
        raise RemoteProtocolError(Reason.INVALID_FIELD, f"a registry of circle {registry.circle}, "
                                  f"not {circle}")
    public = anchor.signing_key(signed.sig.key, registry.convener, now, now=now)
    SignatureChecker().check(registry_digest(registry), signed.sig, public)
    if held is not None and registry.version <= held.version:
        raise RemoteProtocolError(Reason.INVALID_FIELD, f"registry version {registry.version} is "
                                  f"not newer than {held.version}")
    return registry


def key_records(members: Iterable[Member]) -> list[KeyRecord]:
    records = []
    for member in members:
        revoked_at = None if member.status == "joined" else member.status_at
        for purpose, keys in (("sign", member.sign_keys), ("encrypt", member.encrypt_keys)):
            records += [KeyRecord(key.key, member.region, purpose, key.public, key.valid_from,  # type: ignore[arg-type]
                                  key.valid_until, revoked_at) for key in keys]
    return records
