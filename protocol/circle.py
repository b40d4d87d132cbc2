"""The circle registry (通办圈成员名册): who the members are and which keys are theirs.

The convening region (牵头单位) publishes one ``SignedRegistry``: every member
region with its official name, node id, signing and encryption public keys (each
with its validity, so a rotation overlaps), NATS account, status and contact,
under a ``version`` that only grows. Nodes trust a member's key only as the
newest registry they have verified lists it; the convener's own signing key is
the one thing a node is configured with (the trust anchor).

Status: ``joined`` members exchange messages; ``suspended`` and ``revoked`` ones
may not send anything new from ``status_at`` on, while receipts they signed
before still verify (receipts.registry).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from protocol.envelope import Signature, leaf_digest
from protocol.fields import KeyId, Millis, Name, Phone, RegionCode, Wire

__all__ = ["TAG_JOIN", "TAG_REGISTRY", "CircleRegistry", "Contact", "JoinRequest", "Member",
           "MemberKey", "SignedJoinRequest", "SignedRegistry", "join_digest", "registry_digest"]

TAG_REGISTRY = b"tongban/1 registry\x00"
TAG_JOIN = b"tongban/1 join\x00"

MemberStatus = Literal["joined", "suspended", "revoked"]
MEMBER_STATUSES = {"joined": "已加入", "suspended": "已暂停", "revoked": "已撤销"}
#: An NKey account public key (decentralized JWT): "A" and 55 base32 characters.
NatsAccount = Annotated[str, StringConstraints(pattern=r"^A[A-Z2-7]{55}$")]
NodeId = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z][0-9A-Za-z._\-]{0,63}$")]
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]{1,64}@[^@\s]{1,190}$")]


class MemberKey(Wire):
    key: KeyId
    public: Annotated[bytes, Field(min_length=32, max_length=32)]
    valid_from: Millis
    valid_until: Millis | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.valid_until is not None and self.valid_until <= self.valid_from:
            raise ValueError(f"key {self.key}: valid_until is not after valid_from")
        algorithm = self.key.split(":", 1)[0]
        if self.key != f"{algorithm}:{hashlib.sha256(self.public).digest()[:8].hex()}":
            raise ValueError(f"key id {self.key} does not name this public key (docs/protocol.md §4.7)")
        return self


class Contact(Wire):
    name: Name  # 联系人
    phone: Phone | None = None
    email: Email | None = None


class Member(Wire):
    region: RegionCode  # GB/T 2260
    name: Name  # official name of the region (行政区划名称)
    node_id: NodeId
    # Every key a member ever had stays listed (expired ones with their valid_until), so
    # what it signed long ago still verifies.
    sign_keys: tuple[MemberKey, ...] = Field(min_length=1, max_length=64)
    encrypt_keys: tuple[MemberKey, ...] = Field(min_length=1, max_length=64)
    nats_account: NatsAccount | None = None
    # 经由: the member whose node relays this region's messages (a provincial hub) when
    # senders have no direct path to its inbox; None: deliver directly.
    relay: RegionCode | None = None
    status: MemberStatus = "joined"
    status_at: Millis  # when the status took effect
    contact: Contact

    @model_validator(mode="after")
    def _keys(self) -> Self:
        for purpose, keys, prefix in (("signing", self.sign_keys, "ed25519:"),
                                      ("encryption", self.encrypt_keys, "x25519:")):
            if any(not k.key.startswith(prefix) for k in keys):
                raise ValueError(f"{self.region}: a {purpose} key must be {prefix}…")
            if len({k.key for k in keys}) != len(keys):
                raise ValueError(f"{self.region}: a {purpose} key is listed twice")
        return self


class CircleRegistry(Wire):
    circle: NodeId  # the circle's id, e.g. "huanghe-2026"
    convener: RegionCode  # 牵头单位
    version: int = Field(ge=1)
    issued_at: Millis
    members: tuple[Member, ...] = Field(min_length=1, max_length=5000)

    @model_validator(mode="after")
    def _members(self) -> Self:
        regions = [m.region for m in self.members]
        if len(set(regions)) != len(regions):
            raise ValueError("a region is listed twice")
        if list(regions) != sorted(regions):
            raise ValueError("members are listed in order of their region codes")
        if self.convener not in regions:
            raise ValueError(f"the convener {self.convener} is not a member")
        relays = {m.region: m.relay for m in self.members}
        for member in self.members:
            if member.relay is None:
                continue
            if member.relay == member.region or member.relay not in relays:
                raise ValueError(f"{member.region}: relay {member.relay} is not another member")
            if relays[member.relay] is not None:  # one hop: a relay delivers directly
                raise ValueError(f"{member.region}: its relay {member.relay} has a relay itself")
        return self

    def member(self, region: str) -> Member | None:
        return next((m for m in self.members if m.region == region), None)


def registry_digest(registry: CircleRegistry) -> bytes:
    return leaf_digest(TAG_REGISTRY, registry.canonical_bytes)


class SignedRegistry(Wire):
    """The registry as published (the circle's registry bucket), signed by the convener."""

    registry: CircleRegistry
    sig: Signature


class JoinRequest(Wire):
    """A region asking the convener to join: its keys, account and contact. Signed with
    the new signing key itself, which proves the requester holds it."""

    circle: NodeId
    region: RegionCode
    name: Name
    node_id: NodeId
    sign_key: MemberKey
    encrypt_key: MemberKey
    nats_account: NatsAccount | None = None
    relay: RegionCode | None = None  # 经由: the hub member the region is reached through
    contact: Contact
    requested_at: Millis

    def member(self, now: int) -> Member:
        """The member this request becomes once approved."""
        return Member(region=self.region, name=self.name, node_id=self.node_id,
                      sign_keys=(self.sign_key,), encrypt_keys=(self.encrypt_key,),
                      nats_account=self.nats_account, relay=self.relay, status="joined",
                      status_at=now,
                      contact=self.contact)


def join_digest(request: JoinRequest) -> bytes:
    return leaf_digest(TAG_JOIN, request.canonical_bytes)


class SignedJoinRequest(Wire):
    """``sig`` by the signing key the request brings (it holds it); for a member bringing
    new keys (a rotation), ``endorsement`` by one of its current signing keys as well
    (it is that member)."""

    request: JoinRequest
    sig: Signature
    endorsement: Signature | None = None
