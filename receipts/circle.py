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
from protocol.codec import MAX_MESSAGE_BYTES, decode, raw_fields, raw_items, same_as_parts
from protocol.envelope import Signature
from protocol.errors import Reason, RemoteProtocolError
from receipts.registry import KeyRecord, KeyRegistry
from receipts.signing import BatchSigner, SignatureChecker

__all__ = ["approve", "check_join", "check_registry", "decode_registry", "key_records", "reissued",
           "sign_join", "sign_registry", "with_status"]


def sign_registry(signer: BatchSigner, registry: CircleRegistry) -> SignedRegistry:
    [sig] = signer.sign([registry_digest(registry)])
    return SignedRegistry(registry=registry, sig=sig)


def decode_registry(data: bytes, known: dict[bytes, Member] | None = None) -> SignedRegistry:
    """A signed registry as it came from the bucket.

    Hundreds of members, of which a new version usually changes one: a member whose
    bytes are in ``known`` (the members of the registry held, by their encoding) is
    taken from there; the others are decoded and validated, and ``known`` is refilled
    with this registry's members. The whole is canonical when its parts are and it is
    exactly their concatenation. The registry's canonical bytes are its own slice of
    ``data``, so checking the signature encodes nothing again. Raises ``ProtocolError``
    or ``pydantic.ValidationError``."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(Reason.TOO_LARGE, f"registry of {len(data)} bytes")
    outer = raw_fields(data)
    if list(outer) != ["registry", "sig"]:
        raise RemoteProtocolError(Reason.INVALID_FIELD, "a signed registry is {registry, sig}")
    fields = raw_fields(outer["registry"])
    items = raw_items(fields.get("members", b"\x90"))
    if not (same_as_parts(data, outer) and same_as_parts(outer["registry"], fields)
            and same_as_parts(fields.get("members", b"\x90"), items)):
        raise RemoteProtocolError(Reason.NON_CANONICAL, "the registry is not in canonical form")
    earlier = dict(known or {})
    members = [earlier.get(raw) or _member(raw) for raw in items]
    if known is not None:
        known.clear()
        known.update(zip(items, members, strict=True))
    registry = CircleRegistry.model_validate(
        {**{k: decode(v) for k, v in fields.items() if k != "members"}, "members": tuple(members)})
    if set(fields) != set(registry.model_dump(exclude_none=True)):  # a default left out
        raise RemoteProtocolError(Reason.NON_CANONICAL, "the registry leaves out a field")
    registry.__dict__["canonical_bytes"] = outer["registry"]
    return SignedRegistry(registry=registry, sig=Signature.model_validate(decode(outer["sig"])))


def _member(raw: bytes) -> Member:
    member = Member.model_validate(decode(raw))
    if member.canonical_bytes != raw:  # e.g. a field with its default left out
        raise RemoteProtocolError(Reason.NON_CANONICAL, f"member {member.region} is not "
                                  "encoded as its model is")
    return member


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


def key_records(members: Iterable[Member],
                known: dict[Member, list[KeyRecord]] | None = None) -> list[KeyRecord]:
    """The key records of ``members``. ``known``: the records of the registry held
    before, by member; a member listed unchanged reuses them (a new registry usually
    changes one member of hundreds), and ``known`` is refilled for the next time."""
    earlier = dict(known or {})
    if known is not None:
        known.clear()
    records = []
    for member in members:
        mine = earlier.get(member)
        if mine is None:
            revoked_at = None if member.status == "joined" else member.status_at
            mine = [KeyRecord(key.key, member.region, purpose, key.public, key.valid_from,  # type: ignore[arg-type]
                              key.valid_until, revoked_at)
                    for purpose, keys in (("sign", member.sign_keys), ("encrypt", member.encrypt_keys))
                    for key in keys]
        if known is not None:
            known[member] = mine
        records += mine
    return records


def sign_join(signer: BatchSigner, request: JoinRequest,
              endorser: BatchSigner | None = None) -> SignedJoinRequest:
    """``endorser``: a member rotating its keys signs with its current key too."""
    if signer.key != request.sign_key.key:
        raise ValueError("a join request is signed with the signing key it brings")
    [sig] = signer.sign([join_digest(request)])
    endorsement = None if endorser is None else endorser.sign([join_digest(request)])[0]
    return SignedJoinRequest(request=request, sig=sig, endorsement=endorsement)


def check_join(signed: SignedJoinRequest, *, circle: str, members: KeyRegistry | None = None,
               now: int = 0) -> JoinRequest:
    """The request, if it is for our circle and signed by the key it brings; from a
    region already a member, only with an endorsement by one of its keys valid now."""
    request = signed.request
    if request.circle != circle:
        raise RemoteProtocolError(Reason.INVALID_FIELD, f"a request to join {request.circle}")
    if signed.sig.key != request.sign_key.key:
        raise RemoteProtocolError(Reason.BAD_SIGNATURE, "not signed with the key it brings")
    checker = SignatureChecker()
    checker.check(join_digest(request), signed.sig,
                  Ed25519PublicKey.from_public_bytes(request.sign_key.public))
    known = members is not None and any(r.region == request.region for r in members.records())
    if known:
        assert members is not None
        if signed.endorsement is None:
            raise RemoteProtocolError(Reason.BAD_SIGNATURE, f"{request.region} is a member: new "
                                      f"keys need an endorsement by one of its current keys")
        public = members.signing_key(signed.endorsement.key, request.region, now, now=now)
        checker.check(join_digest(request), signed.endorsement, public)
    return request


def approve(registry: CircleRegistry, request: JoinRequest, now: int,
            overlap_ms: int) -> CircleRegistry:
    """The next registry: a new region joined, or a member's new keys added (a rotation,
    its earlier keys valid for ``overlap_ms`` more). A member's status is not changed
    here; a revoked member stays revoked."""
    members = {m.region: m for m in registry.members}
    old = members.get(request.region)
    if old is None:
        members[request.region] = request.member(now)
    elif old.status == "revoked":
        raise ValueError(f"{request.region} was revoked: revocation is final")
    else:
        members[request.region] = old.model_copy(update={
            "sign_keys": _rotated(old.sign_keys, request.sign_key, now + overlap_ms),
            "encrypt_keys": _rotated(old.encrypt_keys, request.encrypt_key, now + overlap_ms),
            "contact": request.contact, "nats_account": request.nats_account or old.nats_account,
            "relay": request.relay or old.relay})
    return _next(registry, members, now)


def with_status(registry: CircleRegistry, region: str, status: str, now: int) -> CircleRegistry:
    """The next registry with a member suspended, revoked or joined again."""
    members = {m.region: m for m in registry.members}
    if region not in members:
        raise LookupError(f"{region} is not a member")
    if region == registry.convener:
        raise ValueError("the convener cannot change its own status")
    if members[region].status == "revoked":
        raise ValueError(f"{region} was revoked: revocation is final")
    members[region] = members[region].model_copy(update={"status": status, "status_at": now})
    return _next(registry, members, now)


def reissued(registry: CircleRegistry, now: int) -> CircleRegistry:
    """The same members under the next version, issued now (registries age out)."""
    return _next(registry, {m.region: m for m in registry.members}, now)


def _next(registry: CircleRegistry, members: dict[str, Member], now: int) -> CircleRegistry:
    return CircleRegistry(circle=registry.circle, convener=registry.convener,
                          version=registry.version + 1, issued_at=now,
                          members=tuple(members[r] for r in sorted(members)))


def _rotated(keys: tuple[MemberKey, ...], new: MemberKey, old_until: int) -> tuple[MemberKey, ...]:
    """The new key added; each earlier one ends at ``old_until`` (or sooner, as it was)
    and stays listed, so what it signed still verifies."""
    if any(k.key == new.key for k in keys):
        return keys
    ended = tuple(k.model_copy(update={"valid_until": max(k.valid_from + 1,
                                                          min(k.valid_until or old_until, old_until))})
                  for k in keys)
    return (*ended, new)
