"""Signing and checking the circle registry, and the key records a node trusts from it.

``check_registry`` is what every node runs before it trusts a member key: the
registry must be signed by the convener with a key the node was configured with
(the anchor), be for the node's circle, and be newer than the one it holds.
``key_records`` turns a checked registry into ``KeyRecord`` s: a suspended or
revoked member's keys are revoked from its ``status_at`` on.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protocol.circle import (
    CircleRegistry,
    JoinRequest,
    Member,
    MemberKey,
    SignedJoinRequest,
    SignedRegistry,
    join_digest,
    registry_digest,
)
from protocol.errors import Reason, RemoteProtocolError
from receipts.registry import KeyRecord, KeyRegistry
from receipts.signing import BatchSigner, SignatureChecker

__all__ = ["approve", "check_join", "check_registry", "key_records", "sign_join", "sign_registry",
           "with_status"]


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


def approve(registry: CircleRegistry, request: JoinRequest, now: int,
            overlap_ms: int) -> CircleRegistry:
    """The next registry: the requester a joined member. A member already listed that
    brings new keys is rotating: its earlier keys stay valid for ``overlap_ms`` more."""
    members = {m.region: m for m in registry.members}
    old = members.get(request.region)
    if old is None:
        members[request.region] = request.member(now)
    else:
        members[request.region] = old.model_copy(update={
            "sign_keys": _rotated(old.sign_keys, request.sign_key, now + overlap_ms),
            "encrypt_keys": _rotated(old.encrypt_keys, request.encrypt_key, now + overlap_ms),
            "status": "joined", "status_at": now, "contact": request.contact,
            "nats_account": request.nats_account or old.nats_account})
    return _next(registry, members, now)


def with_status(registry: CircleRegistry, region: str, status: str, now: int) -> CircleRegistry:
    """The next registry with a member suspended, revoked or joined again."""
    members = {m.region: m for m in registry.members}
    if region not in members:
        raise LookupError(f"{region} is not a member")
    if region == registry.convener:
        raise ValueError("the convener cannot change its own status")
    members[region] = members[region].model_copy(update={"status": status, "status_at": now})
    return _next(registry, members, now)


def _next(registry: CircleRegistry, members: dict[str, Member], now: int) -> CircleRegistry:
    return CircleRegistry(circle=registry.circle, convener=registry.convener,
                          version=registry.version + 1, issued_at=now,
                          members=tuple(members[r] for r in sorted(members)))


def _rotated(keys: tuple[MemberKey, ...], new: MemberKey, old_until: int) -> tuple[MemberKey, ...]:
    """The new key added; each earlier one ends at ``old_until`` (or sooner, as it was).
    At most four are kept, the newest."""
    if any(k.key == new.key for k in keys):
        return keys
    ended = tuple(k.model_copy(update={"valid_until": min(k.valid_until or old_until, old_until)})
                  for k in keys if (k.valid_until or old_until) > k.valid_from)
    return (*ended, new)[-4:]
