"""Partner health: heartbeats out, heartbeats in, and who has gone silent.

Theory of operation
-------------------
Every ``[health] heartbeat_seconds`` the node sends a signed heartbeat
(``protocol.health``) to ``tb.<region>.health`` on core NATS, and it listens to
``tb.*.health``. A heartbeat is taken when it is fresh, newer than the last one taken from its region,
came on its region's own subject, and is signed by a key the registry holds for that
region, a joined member (``receipts.rtc``); it records
when that partner was last heard from (our clock) and when its node started.

A partner is **silent** (无心跳) when nothing came from it for its threshold
(``silent_after_seconds``, or ``thresholds[region]``), counted from the last
heartbeat, or from our own start if none came yet. ``partners()`` is the table the
operators' dashboard and the alerts read: each member with its last heartbeat, its
threshold, whether it is silent, and the messages we still hold for it (the outbox:
written, not yet stored in its inbox). ``changed`` events are set whenever a partner
turns silent or healthy, so live pages and alerts need not poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Callable

from config.models import HealthConfig
from node.metrics import subject_labels
from node.store import Store
from node.transport import Transport
from protocol import ProtocolError
from protocol.health import Heartbeat
from receipts.keys import KeyRing
from receipts.registry import KeyRegistry
from receipts.rtc import open_heartbeat, seal_heartbeat
from routing.regions import official_name
from routing.router import Router

__all__ = ["PartnerHealth", "PartnerState"]

log = logging.getLogger("tongban.health")


@dataclasses.dataclass(frozen=True)
class PartnerState:
    region: str
    name: str  # e.g. 济南市
    last_seen: int | None  # ms (our clock) of its last heartbeat; None: none since we started
    started_at: int | None  # when the partner's node started (its heartbeat says)
    threshold_s: int  # silent after this long without a heartbeat
    silent: bool
    queued: int  # our messages for it not yet stored in its inbox
    oldest_queued: int | None  # ms: when the oldest of them was written


class PartnerHealth:
    def __init__(self, region: str, config: HealthConfig, transport: Transport, keys: KeyRing,
                 registry: KeyRegistry, router: Router, store: Store,
                 clock: Callable[[], int]) -> None:
        self.region = region
        self.config = config
        self.transport = transport
        self.keys = keys
        self.registry = registry
        self.router = router
        self.store = store
        self.clock = clock
        self.started_at = clock()
        self.last_seen: dict[str, int] = {}
        self.their_start: dict[str, int] = {}
        #: Set when a partner turns silent or healthy.
        self.changed: set[asyncio.Event] = set()
        #: Called with (region, at) for every heartbeat taken (node.metrics).
        self.observers: list[Callable[[str, int], None]] = []
        self._silent: set[str] = set()
        self._last_at: dict[str, int] = {}  # the sender's clock of the last heartbeat taken

    def __repr__(self) -> str:
        return f"<PartnerHealth {self.region} heard={len(self.last_seen)} silent={self._silent}>"

    async def listen(self) -> None:
        """Take partners' heartbeats from now on (the transport is connected)."""
        self.started_at = self.clock()
        await self.transport.listen_heartbeats(self._on_heartbeat)

    def threshold_s(self, region: str) -> int:
        return self.config.thresholds.get(region, self.config.silent_after_seconds)

    def partners(self) -> list[PartnerState]:
        now = self.clock()
        queued: dict[str, tuple[int, int]] = {}
        for subject, count, oldest in self.store.outbox_pending_by_subject():
            region, _ = subject_labels(subject)
            held, first = queued.get(region, (0, oldest))
            queued[region] = (held + count, min(first, oldest))
        found = []
        for region in self.router.partners():
            held, first = queued.get(region, (0, 0))
            found.append(PartnerState(
                region=region, name=official_name(region) or region,
                last_seen=self.last_seen.get(region), started_at=self.their_start.get(region),
                threshold_s=self.threshold_s(region), silent=self._is_silent(region, now),
                queued=held, oldest_queued=first if held else None))
        return found

    def check(self) -> None:
        """Flag partners that went silent since the last look (the beat loop calls it)."""
        now = self.clock()
        silent = {r for r in self.router.partners() if self._is_silent(r, now)}
        if silent != self._silent:
            for region in sorted(silent - self._silent):
                log.warning("partner %s silent: no heartbeat for %d s", region,
                            self.threshold_s(region))
            for region in sorted(self._silent - silent):
                log.info("partner %s heard from again", region)
            self._silent = silent
            self._changed()

    def _is_silent(self, region: str, now: int) -> bool:
        since = self.last_seen.get(region, self.started_at)
        return now - since > self.threshold_s(region) * 1000

    async def beat(self) -> None:
        """Send a heartbeat every ``heartbeat_seconds`` and look for silent partners,
        until cancelled (a task of the node's)."""
        while True:
            heartbeat = Heartbeat(region=self.region, at=self.clock(),
                                  nonce=secrets.token_bytes(16), started_at=self.started_at,
                                  interval_s=self.config.heartbeat_seconds,
                                  outbox=self.store.outbox_backlog())
            current = self.keys.current
            # NATS down: the partners will see us silent, which is the truth.
            with contextlib.suppress(ConnectionError):
                await self.transport.send_heartbeat(
                    seal_heartbeat(heartbeat, current.signing, current.sign_key_id))
            self.check()
            await asyncio.sleep(self.config.heartbeat_seconds)

    async def _on_heartbeat(self, subject: str, data: bytes) -> None:
        now = self.clock()
        try:
            heartbeat = open_heartbeat(data, self.registry, now)
        except ProtocolError as exc:
            log.warning("heartbeat refused: %s", exc)
            return
        region = heartbeat.region
        if (subject != f"tb.{region}.health" or region == self.region
                or not self.router.reaches(region)):
            return
        if heartbeat.at <= self._last_at.get(region, 0):
            return  # not newer than the last one taken: a replay keeps nobody alive
        self._last_at[region] = heartbeat.at
        previous = self.their_start.get(region)
        if previous is not None and heartbeat.started_at != previous:
            log.info("partner %s restarted", region)
        self.last_seen[region] = now
        self.their_start[region] = heartbeat.started_at
        for observer in self.observers:
            observer(region, now)
        if region in self._silent:
            self.check()

    def _changed(self) -> None:
        for event in self.changed:
            event.set()
