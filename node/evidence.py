"""Evidence bundles of stored cases (receipts.bundle does the format and checking)."""

from __future__ import annotations

from node.store import Store
from protocol import decode
from protocol.wire import receipt_from_fields
from receipts import KeyRegistry, build_bundle

__all__ = ["bundle_for"]


def bundle_for(store: Store, registry: KeyRegistry, region: str, case_id: str, now: int) -> bytes:
    """The evidence bundle of one case as this node holds it."""
    receipts = [receipt_from_fields(decode(raw)) for raw in store.receipts(case_id)]
    keys = {r.key for r in receipts}
    row = store.case_row(case_id)
    # Every signing key of both regions: an envelope may be signed with a key no receipt
    # names (a region switched keys during the case).
    regions = {region} if row is None else {region, row["peer"]}
    return build_bundle(
        case=case_id,
        made_by=region,
        made_at=now,
        keys=[k for k in registry.records() if k.key_id in keys or (k.purpose == "sign"
              and k.region in regions)],
        envelopes=store.envelopes(case_id),
        receipts=receipts,
        events=[decode(e) for e in store.events(case_id)],
    )
