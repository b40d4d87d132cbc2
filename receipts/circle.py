"""Signing and checking the circle registry, and the key records a node trusts from it.

``check_registry`` is what every node runs before it trusts a member key: the
registry must be signed by the convener with a key the node was configured with
(the anchor), be for the node's circle, and be newer than the one it holds.
``key_records`` turns a checked registry into ``KeyRecord`` s: a suspended or
revoked member's keys are revoked from its ``status_at`` on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol.circle import (
    CircleRegistry,
    JoinRequest,
    Member,
    SignedJoinRequest,
    SignedRegistry,
    join_digest,
    registry_digest,
)
from protocol.errors import Reason, RemoteProtocolError
from receipts.registry import KeyRecord, KeyRegistry
from receipts.signing import BatchSigner, SignatureChecker

__all__ = ["approve", "check_join", "check_registry", "key_records", "sign_join", "sign_registry"]


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


def sign_join(signer: BatchSigner, request: JoinRequest) -> SignedJoinRequest:
    if signer.key != request.sign_key.key:
        raise ValueError("a join request is signed with the signing key it brings")
    [sig] = signer.sign([join_digest(request)])
    return SignedJoinRequest(request=request, sig=sig)


def check_join(signed: SignedJoinRequest, *, circle: str) -> JoinRequest:
    """The request, if it is for our circle and signed by the key it brings."""
    request = signed.request
    if request.circle != circle:
        raise RemoteProtocolError(Reason.INVALID_FIELD, f"a request to join {request.circle}")
    if signed.sig.key != request.sign_key.key:
        raise RemoteProtocolError(Reason.BAD_SIGNATURE, "not signed with the key it brings")
    SignatureChecker().check(join_digest(request), signed.sig,
                             Ed25519PublicKey.from_public_bytes(request.sign_key.public))
    return request


def approve(registry: CircleRegistry, request: JoinRequest, now: int) -> CircleRegistry:
    """The next registry: the requester a joined member (a member already listed gets
    the keys it brings added, for a rotation or after a suspension)."""
    members = {m.region: m for m in registry.members}
    old = members.get(request.region)
    if old is None:
        members[request.region] = request.member(now)
    else:
        members[request.region] = old.model_copy(update={
            "sign_keys": _merged(old.sign_keys, request.sign_key),
            "encrypt_keys": _merged(old.encrypt_keys, request.encrypt_key),
            "status": "joined", "status_at": now, "contact": request.contact,
            "nats_account": request.nats_account or old.nats_account})
    return CircleRegistry(circle=registry.circle, convener=registry.convener,
                          version=registry.version + 1, issued_at=now,
                          members=tuple(members[r] for r in sorted(members)))


def _merged(keys: tuple[Any, ...], new: Any) -> tuple[Any, ...]:
    kept = tuple(k for k in keys if k.key != new.key)
    return (*kept, new)[-4:]
