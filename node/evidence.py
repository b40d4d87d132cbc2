"""Evidence bundles of stored cases (receipts.bundle does the format and checking)."""

from __future__ import annotations

from protocol import Receipt, decode
from receipts import KeyRegistry, build_bundle
from node.store import Store

__all__ = ["bundle_for"]


def bundle_for(store: Store, registry: KeyRegistry, region: str, case_id: str, now: int) -> bytes:
    """The evidence bundle of one case as this node holds it."""
    receipts = [Receipt.model_validate(decode(raw)) for raw in store.receipts(case_id)]
    keys = {r.key for r in receipts}
    return build_bundle(
        case=case_id,
        made_by=region,
        made_at=now,
        keys=[k for k in registry.records() if k.key_id in keys or k.purpose == "sign"
              and k.region == region],
        envelopes=store.envelopes(case_id),
        receipts=receipts,
        events=[decode(e) for e in store.events(case_id)],
    )
