"""The circle at a node: which member keys to trust, from the convener's signed registry.

Theory of operation
-------------------
A node configured with a circle (``config.circle``) trusts only its own keys and
those the newest verified registry lists; the convener's public key (the anchor)
is the one key set by hand. The registry lives in the circle bucket
(``TB_CIRCLE``, key ``registry``); ``follow`` watches it and adopts each newer
version that checks (receipts.circle), live: the node's key registry is replaced
in place, so the next message is judged by it. A registry that does not check is
ignored and remembered in ``refused``, for operators.

The adopted registry is also kept in the data directory, so a restarted node
trusts the same members before it reaches NATS.

Joining: a new region's node puts its ``JoinRequest`` (its keys, account,
contact and, for a region reached through a provincial hub, its relay 经由; signed
with the signing key it brings) in the same bucket under
``join.<region>``. The convener's node keeps the requests that check in
``requests``; its operator approves (the next registry, signed and published, so
every node takes the newcomer in at once) or refuses (the request is removed).
Both decisions are kept in ``decisions``.

Rotating keys (docs/protocol.md §13.1): a member whose key folder holds a prepared
pair (``tongban keys rotate``) asks with those keys, endorsed by its current
signing key. Each registry adopted is handed to the node's ``KeyRing``: once it
lists the prepared signing key, the node signs with it from then on (and the ring
tells its observers: the catalog signs its entries anew); earlier encryption keys
keep opening messages until their keys ended, plus a grace period, when the pair
is retired. ``_keep_keys`` asks the ring again every few minutes, since keys end
with time, not only with a new registry. The convener signs registries with the
anchor key every node is configured with, whatever pair it signs the rest with.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

from config import ConfigError
from config.models import CircleConfig
from node.transport import CIRCLE_BUCKET, CatalogUpdate, Transport
from protocol.circle import (
    CircleRegistry,
    Contact,
    JoinRequest,
    Member,
    MemberKey,
    SignedJoinRequest,
)
from protocol.codec import decode
from protocol.errors import ProtocolError
from protocol.fields import MILLIS_MIN
from receipts import BatchSigner, KeyRecord, KeyRegistry, NodeKeys
from receipts.circle import (
    approve,
    check_join,
    check_registry,
    decode_registry,
    key_records,
    reissued,
    sign_join,
    sign_registry,
    with_status,
)
from receipts.errors import KeyFileError
from receipts.keys import KeyRing
from receipts.registry import records_from_public_json
from routing.regions import official_name, unofficial_names

__all__ = ["Circle", "RelayError"]

log = logging.getLogger("tongban.circle")

REGISTRY_KEY = "registry"
DAY_MS = 86_400_000
JOIN_PREFIX = "join."
KEY_CHECK_S = 300  # how often the key ring looks again whether a key ended
KEY_SETTLE_CHECK_S = 5  # ... and while new keys wait for approval and to settle


class RelayError(ValueError):
    """A join request names a relay (经由) that cannot relay for the region; ``zh``/``en``."""

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(en)
        self.zh = zh
        self.en = en


class Circle:
    def __init__(self, config: CircleConfig, own: KeyRing | NodeKeys, keys: KeyRegistry,
                 transport: Transport, clock: Callable[[], int], saved: Path,
                 signer: BatchSigner | None = None) -> None:
        """``signer`` is not needed any more (the key ring signs, and changes at a
        rotation); it is accepted so that callers passing one keep working."""
        self.config = config
        # Our key pairs: the current one, earlier ones kept, the prepared one.
        self.own = own if isinstance(own, KeyRing) else KeyRing.of(own)
        self.keys = keys  # the node's key registry, replaced in place by each registry
        self.transport = transport
        self.clock = clock
        self.saved = saved
        try:
            self.anchor = KeyRegistry(records_from_public_json(
                json.loads(config.anchor.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyFileError) as exc:
            raise ConfigError(f"通办圈牵头单位的公钥无法读取 / circle.anchor {config.anchor} is not "
                              f"the convener's public.json: {exc}") from exc
        self.current: CircleRegistry | None = None
        self._records: dict[Member, list[KeyRecord]] = {}  # of the registry held, by member
        self._members_seen: dict[bytes, Member] = {}  # of the registry last decoded, by bytes
        self._held: bytes | None = None  # the adopted registry as it came
        #: Set once the bucket's values present at start were all seen (the inbox waits).
        self.caught_up = asyncio.Event()
        #: Called after a newer registry was adopted (the catalog checks again what it refused).
        self.observers: list[Callable[[CircleRegistry], None]] = []
        #: Join requests waiting for the convener's decision, by region (convener only).
        self.requests: dict[str, JoinRequest] = {}
        #: Decisions taken here: (region, "approved" | "refused" | a status, reason, at).
        self.decisions: list[tuple[str, str, str, int]] = []
        self._issuing = asyncio.Lock()  # one new registry version at a time
        self._refused: dict[str, None] = {}  # an ordered set: the same refusal is kept once
        self.keys.replace(self._with_own([]))
        if saved.exists():
            try:
                self._adopt(saved.read_bytes(), save=False)
            except (ProtocolError, ValueError) as exc:
                log.error("the saved circle registry %s does not check (%s); waiting for the "
                          "bucket's", saved, exc)

    def __repr__(self) -> str:
        version = self.current.version if self.current else None
        return f"<Circle {self.config.id} version={version} refused={len(self._refused)}>"

    @property
    def refused(self) -> list[str]:
        """Registries and join requests ignored (newest 100), for operators."""
        return list(self._refused)

    def _refuse(self, what: str) -> None:
        self._refused.pop(what, None)
        self._refused[what] = None
        while len(self._refused) > 100:
            del self._refused[next(iter(self._refused))]

    async def follow(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.transport.watch_bucket(CIRCLE_BUCKET, self._take))
            tasks.create_task(self._keep_keys())
            if self.convening:
                tasks.create_task(self._keep_fresh())

    @property
    def signer(self) -> BatchSigner:
        """What this node signs circle documents with: the registry, as the convener,
        with the anchor key every node trusts; anything else with the current key."""
        if self.convening:
            anchor = next((r.key_id for r in self.anchor.records() if r.purpose == "sign"), "")
            held = self.own.signer_for(anchor)
            if held is not None:
                return held
        return self.own.signer

    async def publish(self, data: bytes) -> CircleRegistry:
        """Check a signed registry as every node will, and its members' official names
        (GB/T 2260), then put it in the bucket."""
        registry = self._check(data)
        problems = unofficial_names({m.region: m.name for m in registry.members})
        if problems:
            raise ValueError("名册未发布 / the registry was not published: " + "; ".join(problems))
        await self.transport.put_values(CIRCLE_BUCKET, [(REGISTRY_KEY, data)])
        return registry

    @property
    def convening(self) -> bool:
        return self.own.region == self.config.convener

    # ---------------------------------------------------------------- joining

    def join_request(self, contact: Contact, nats_account: str | None = None,
                     relay: str | None = None) -> SignedJoinRequest:
        """This node's request to join, signed with the key it brings. A member with a
        prepared pair (``tongban keys rotate``) brings that one, endorsed by its current
        signing key: a rotation (§13.1). ``relay`` (经由, §14.2): the member whose node
        passes this region's messages on; checked here so that a mistake is said to the
        operator who made it, not found by the convener when the registry will not sign."""
        self.check_relay(relay)
        now = self.clock()
        try:
            self.own.refresh()  # the prepared pair may have been written while we run
        except KeyFileError as exc:
            log.error("the prepared keys cannot be used, the request brings the current ones: "
                      "%s", exc)
        member = self.current.member(self.own.region) if self.current else None
        brought = self.own.prepared if member is not None and self.own.prepared else self.own.current
        request = JoinRequest(
            circle=self.config.id, region=self.own.region,
            name=official_name(self.own.region) or self.own.region, node_id=f"tb-{self.own.region}",
            sign_key=MemberKey(key=brought.sign_key_id, public=brought.sign_public, valid_from=now),
            encrypt_key=MemberKey(key=brought.encrypt_key_id, public=brought.encrypt_public,
                                  valid_from=now),
            nats_account=nats_account, relay=relay, contact=contact, requested_at=now)
        signer = self.own.signer_for(brought.sign_key_id)
        assert signer is not None  # a held pair
        return sign_join(signer, request, endorser=self.own.signer if member else None)

    def check_relay(self, relay: str | None) -> None:
        """Raise ``RelayError`` unless ``relay`` may relay for
        this region: another region, and, as far as the registry held here says, a member
        that delivers directly (a path has one hop at most). Before any registry is held,
        the convener's approval checks the rest."""
        if relay is None:
            return
        if relay == self.own.region:
            raise RelayError(f"经由地区不能是本地区 {relay}",
                             f"the relay cannot be this region {relay} itself")
        if self.current is None:
            return
        hub = self.current.member(relay)
        if hub is None or hub.status == "revoked":
            raise RelayError(f"经由地区 {relay} 不是通办圈成员",
                             f"the relay {relay} is not a member of circle {self.config.id}")
        if hub.relay is not None:
            raise RelayError(f"经由地区 {relay} 本身经由 {hub.relay} 中转，只允许一跳",
                             f"the relay {relay} is itself reached through {hub.relay}; a path "
                             f"has one hop")

    async def request_join(self, contact: Contact, nats_account: str | None = None,
                           relay: str | None = None) -> JoinRequest:
        signed = self.join_request(contact, nats_account, relay)
        await self.transport.put_values(CIRCLE_BUCKET, [(f"{JOIN_PREFIX}{self.own.region}",
                                                          signed.canonical_bytes)])
        return signed.request

    async def approve(self, region: str, key: str) -> CircleRegistry:
        """The convener admits a region that asked, with the signing key ``key`` its
        operator confirmed with the region (out of band): the next registry, signed
        and published. A request changed since (another key) is not approved."""
        request = self._pending(region)
        if request.sign_key.key != key:
            raise LookupError(f"the waiting request of {region} brings {request.sign_key.key}, "
                              f"not {key}")
        now = self.clock()
        overlap = self.config.rotation_overlap_days * DAY_MS
        async with self._issuing:
            registry = await self._issue(approve(self.current or self._founding(), request, now,
                                                 overlap))
        del self.requests[region]
        self.decisions.append((region, "approved", "", now))
        await self.transport.delete_value(CIRCLE_BUCKET, f"{JOIN_PREFIX}{region}")
        log.info("%s joined circle %s (registry version %d)", region, registry.circle,
                 registry.version)
        return registry

    async def set_status(self, region: str, status: str) -> CircleRegistry:
        """(Convener) suspend, revoke or reinstate a member: at once for new messages,
        while what it signed before still verifies."""
        if not self.convening:
            raise PermissionError(f"only the convener {self.config.convener} changes members")
        if self.current is None:
            raise LookupError("there is no registry yet")
        async with self._issuing:
            registry = await self._issue(with_status(self.current, region, status, self.clock()))
        self.decisions.append((region, status, "", self.clock()))
        log.warning("member %s is now %s (registry version %d)", region, status, registry.version)
        return registry

    async def _issue(self, registry: CircleRegistry) -> CircleRegistry:
        """Sign, publish and adopt the next registry."""
        data = sign_registry(self.signer, registry).canonical_bytes
        published = await self.publish(data)
        self._adopt(data)  # at once here; the bucket brings it to every other node
        return published

    async def refuse(self, region: str, reason: str) -> None:
        self._pending(region)
        del self.requests[region]
        self.decisions.append((region, "refused", reason, self.clock()))
        await self.transport.delete_value(CIRCLE_BUCKET, f"{JOIN_PREFIX}{region}")
        log.warning("join request of %s refused: %s", region, reason)

    def _pending(self, region: str) -> JoinRequest:
        if not self.convening:
            raise PermissionError(f"only the convener {self.config.convener} decides who joins")
        request = self.requests.get(region)
        if request is None:
            raise LookupError(f"no join request of {region} is waiting")
        return request

    def _founding(self) -> CircleRegistry:
        """The convener's first registry: itself alone."""
        own = JoinRequest(
            circle=self.config.id, region=self.own.region,
            name=official_name(self.own.region) or self.own.region, node_id=f"tb-{self.own.region}",
            sign_key=MemberKey(key=self.own.sign_key_id, public=self.own.sign_public,
                               valid_from=MILLIS_MIN),  # the anchor: valid for all it signed
            encrypt_key=MemberKey(key=self.own.encrypt_key_id, public=self.own.encrypt_public,
                                  valid_from=MILLIS_MIN),
            contact=Contact(name="牵头单位"), requested_at=self.clock())
        return CircleRegistry(circle=self.config.id, convener=self.own.region, version=1,
                              issued_at=self.clock(), members=(own.member(self.clock()),))

    # ---------------------------------------------------------------- following the bucket

    async def _take(self, updates: list[CatalogUpdate], caught_up: bool) -> None:
        adopted = None
        for key, value in updates:
            if key.startswith(JOIN_PREFIX):
                self._take_request(key[len(JOIN_PREFIX):], value)
            elif key == REGISTRY_KEY and value is not None and value != self._held:
                try:
                    adopted = self._adopt(value, notify=False)
                except (ProtocolError, ValueError) as exc:  # forged, stale, replayed, a fork
                    log.warning("circle registry refused: %s", exc)
                    self._refuse(f"registry: {str(exc)[:300]}")
        if adopted is not None:  # once per batch, not once per version caught up with
            self._notify(adopted)
        if caught_up:
            self.caught_up.set()

    def _take_request(self, region: str, value: bytes | None) -> None:
        if value is None:
            self.requests.pop(region, None)  # decided (or withdrawn)
            return
        if not self.convening:
            return
        try:
            request = check_join(SignedJoinRequest.model_validate(decode(value)),
                                 circle=self.config.id, members=self.keys, now=self.clock())
            if request.region != region:
                raise ValueError(f"a request of {request.region} filed as {region}")
        except (ProtocolError, ValueError) as exc:
            log.warning("join request of %s ignored: %s", region, exc)
            self._refuse(f"join {region}: {str(exc)[:300]}")
            return
        self.requests[region] = request
        log.info("join request of %s %s is waiting for a decision", region, request.name)

    def _check(self, data: bytes) -> CircleRegistry:
        signed = decode_registry(data, self._members_seen)
        now = self.clock()
        registry = check_registry(signed, self.anchor, circle=self.config.id, now=now,
                                  held=self.current)
        if registry.convener != self.config.convener:
            raise ValueError(f"a registry convened by {registry.convener}, not "
                             f"{self.config.convener}")
        if now - registry.issued_at > self.config.registry_max_age_days * DAY_MS:
            raise ValueError(f"registry version {registry.version} is older than "
                             f"{self.config.registry_max_age_days} days (a replay?)")
        return registry

    def _adopt(self, data: bytes, *, save: bool = True, notify: bool = True) -> CircleRegistry:
        registry = self._check(data)
        if save:  # first: a node that trusts it will find it again after a restart
            try:
                partial = self.saved.with_suffix(".part")
                partial.write_bytes(data)
                partial.replace(self.saved)
            except OSError as exc:
                log.error("the circle registry could not be kept in %s: %s", self.saved, exc)
        self.keys.replace(self._with_own(key_records(registry.members, self._records)))
        self.current, self._held = registry, data
        log.info("circle %s registry version %d adopted: %d members", registry.circle,
                 registry.version, len(registry.members))
        self._follow_keys()
        if notify:
            self._notify(registry)
        return registry

    def _follow_keys(self) -> None:
        """Let our key ring follow the registry: switch to the approved pair, retire
        ended ones (never the anchor key, which signs the registry)."""
        anchor = [r.key_id for r in self.anchor.records()]
        for done in self.own.update(self.keys.records(), self.clock(), keep=anchor):
            log.warning("keys: %s", done)

    async def _keep_keys(self) -> None:
        while True:  # more often while approved keys may be settling
            await asyncio.sleep(KEY_SETTLE_CHECK_S if self.own.prepared else KEY_CHECK_S)
            self._follow_keys()

    def _notify(self, registry: CircleRegistry) -> None:
        for observer in self.observers:
            observer(registry)

    async def _keep_fresh(self) -> None:
        """(Convener) re-issue the registry before it grows old: an old one is refused,
        so a registry replayed into the bucket long after cannot bring back a key."""
        while True:
            now = self.clock()
            if self.current is not None and (
                    now - self.current.issued_at > self.config.registry_max_age_days * DAY_MS / 2):
                async with self._issuing:
                    await self._issue(reissued(self.current, now))
                log.info("circle registry re-issued as version %d", self.current.version)
            await asyncio.sleep(600)

    def _with_own(self, records: list[KeyRecord]) -> list[KeyRecord]:
        """Our own keys are always known to us, listed or not (before we have joined)."""
        if any(r.region == self.own.region for r in records):
            return records
        mine = KeyRegistry()
        mine.add_node(self.own.current, valid_from=0)
        return records + mine.records()
