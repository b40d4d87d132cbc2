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
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from config import ConfigError
from config.models import CircleConfig
from node.transport import CIRCLE_BUCKET, CatalogUpdate, Transport
from protocol.circle import CircleRegistry, SignedRegistry
from protocol.codec import decode
from protocol.errors import ProtocolError
from receipts import KeyRecord, KeyRegistry, NodeKeys
from receipts.circle import check_registry, key_records
from receipts.errors import KeyFileError
from receipts.registry import records_from_public_json
from routing.regions import unofficial_names

__all__ = ["Circle"]

log = logging.getLogger("tongban.circle")

REGISTRY_KEY = "registry"


class Circle:
    def __init__(self, config: CircleConfig, own: NodeKeys, keys: KeyRegistry,
                 transport: Transport, clock: Callable[[], int], saved: Path) -> None:
        self.config = config
        self.own = own
        self.keys = keys
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
        self.refused: list[str] = []
        #: Called after a newer registry was adopted (the catalog checks again what it refused).
        self.observers: list[Callable[[CircleRegistry], None]] = []
        self.keys.replace(self._with_own([]))
        if saved.exists():
            try:
                self._adopt(saved.read_bytes(), save=False)
            except (ProtocolError, ValueError) as exc:
                log.error("the saved circle registry %s does not check (%s); waiting for the "
                          "bucket's", saved, exc)

    def __repr__(self) -> str:
        version = self.current.version if self.current else None
        return f"<Circle {self.config.id} version={version} refused={len(self.refused)}>"

    async def follow(self) -> None:
        await self.transport.watch_bucket(CIRCLE_BUCKET, self._take)

    async def publish(self, data: bytes) -> CircleRegistry:
        """Check a signed registry as every node will, and its members' official names
        (GB/T 2260), then put it in the bucket."""
        registry = self._check(data)
        problems = unofficial_names({m.region: m.name for m in registry.members})
        if problems:
            raise ValueError("名册未发布 / the registry was not published: " + "; ".join(problems))
        await self.transport.put_values(CIRCLE_BUCKET, [(REGISTRY_KEY, data)])
        return registry

    async def _take(self, updates: list[CatalogUpdate], caught_up: bool) -> None:
        for key, value in updates:
            if key != REGISTRY_KEY or value is None:
                continue
            try:
                self._adopt(value)
            except (ProtocolError, ValueError) as exc:
                if self.current is not None and str(exc).find("not newer") >= 0:
                    continue  # an older registry again (the bucket keeps some history)
                log.warning("circle registry refused: %s", exc)
                self.refused.append(str(exc)[:300])

    def _check(self, data: bytes) -> CircleRegistry:
        signed = SignedRegistry.model_validate(decode(data))
        registry = check_registry(signed, self.anchor, circle=self.config.id, now=self.clock(),
                                  held=self.current)
        if registry.convener != self.config.convener:
            raise ValueError(f"a registry convened by {registry.convener}, not "
                             f"{self.config.convener}")
        return registry

    def _adopt(self, data: bytes, *, save: bool = True) -> None:
        registry = self._check(data)
        self.keys.replace(self._with_own(key_records(registry.members)))
        self.current = registry
        if save:
            partial = self.saved.with_suffix(".part")
            partial.write_bytes(data)
            partial.replace(self.saved)
        log.info("circle %s registry version %d adopted: %d members", registry.circle,
                 registry.version, len(registry.members))
        for observer in self.observers:
            observer(registry)

    def _with_own(self, records: list[KeyRecord]) -> list[KeyRecord]:
        """Our own keys are always known to us, listed or not (before we have joined)."""
        if any(r.region == self.own.region for r in records):
            return records
        mine = KeyRegistry()
        mine.add_node(self.own, valid_from=0)
        return records + mine.records()
