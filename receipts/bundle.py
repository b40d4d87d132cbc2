"""Evidence bundles: everything an auditor needs to check one case offline.

A bundle is one canonical msgpack file (docs/protocol.md §9)::

    {"format": "tongban-bundle/1", "case": ..., "made_by": region, "made_at": ms,
     "keys":      [key record, ...],            public keys with validity and revocation
     "envelopes": [{"wire": bytes, "content_key": bytes, "plaintext": bytes}, ...],
     "receipts":  [receipt, ...],                both sides' receipts this node holds
     "events":    [{"event", "at", "index", "body"?}, ...]}   this node's local
                                                  events (docs/protocol.md §6.2)

``verify_bundle`` needs no private key. It checks, in this order, and stops at the
first broken link, which ``BundleError.link`` names:

1. every envelope's signature (key valid when sent), that its content key is the
   committed one and decrypts the payload to exactly the plaintext given, and that
   the receipts inside the payload are the ones listed;
2. each side's chain: indexes 0, 1, 2 … without gaps, each ``prev`` the digest of
   the one before, each signature valid for the key at the receipt's time;
3. each cross-link (``their``) points at a receipt of the other side that is in the
   bundle, and cross-links never go backwards;
4. each event record is the cause of one of the bundle maker's receipts, and each
   of the maker's receipts is caused by an envelope or one of its event records.
   The other side's receipts are caused by an envelope or by a local event that
   is re-derived from the body of a message it sent; a local event whose body
   never crossed (a window's own 补正 notice) is counted in ``causes_unchecked``
   and checked in the other side's own bundle.

The key records are those the bundle maker used; an auditor compares their ids
with the circle registry it trusts (``BundleReport.keys``).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from protocol.codec import decode, encode
from protocol.envelope import Envelope, Receipt, leaf_digest
from protocol.errors import ProtocolError
from protocol.machine import TAG_EVENT, event_digest, event_record
from protocol.states import LOCAL_EVENTS, TRANSITIONS
from protocol.wire import decode_envelope, decode_payload, receipt_from_fields
from receipts.errors import BundleError
from receipts.registry import KeyRecord, KeyRegistry
from receipts.sealing import open_payload
from receipts.signing import SignatureChecker

__all__ = ["BUNDLE_FORMAT", "BundleReport", "build_bundle", "verify_bundle"]

BUNDLE_FORMAT = "tongban-bundle/1"
MAX_BUNDLE_BYTES = 256 << 20

#: Receipt kind → the local events that sign it (from the transition table), to
#: re-derive the other side's event records from the bodies of its messages.
_EVENTS_OF_KIND: dict[str, set[str]] = {}
for (_role, _state, _event), _t in TRANSITIONS.items():
    if _t.receipt is not None and _event in LOCAL_EVENTS[_role]:
        _EVENTS_OF_KIND.setdefault(_t.receipt, set()).add(_event)


@dataclasses.dataclass(frozen=True)
class BundleReport:
    case: str
    made_by: str
    envelopes: int
    chains: dict[str, int]  # region -> receipts
    last_kinds: dict[str, str]  # region -> kind of its newest receipt
    keys: list[str]  # key ids the bundle relies on
    #: The same keys as "id (region purpose, valid from … until, revoked at)", to compare
    #: with the circle registry (or pass it as ``trusted``).
    key_records: list[str] = dataclasses.field(default_factory=list)
    #: The other side's receipts whose local cause is not in this bundle (an event
    #: whose body never reached us): their causes are checked in the other side's bundle.
    causes_unchecked: int = 0


def build_bundle(
    *,
    case: str,
    made_by: str,
    made_at: int,
    keys: Iterable[KeyRecord],
    envelopes: Iterable[tuple[bytes, bytes, bytes]],
    receipts: Iterable[Receipt],
    events: Iterable[dict[str, Any]],
) -> bytes:
    """``envelopes`` are ``(wire, content_key, plaintext)`` triples, in or out."""
    return encode({
        "format": BUNDLE_FORMAT,
        "case": case,
        "made_by": made_by,
        "made_at": made_at,
        "keys": [k.to_wire() for k in keys],
        "envelopes": [{"wire": w, "content_key": k, "plaintext": p} for w, k, p in envelopes],
        "receipts": [r.model_dump(exclude_none=True) for r in receipts],
        "events": list(events),
    })


def verify_bundle(data: bytes, trusted: KeyRegistry | None = None) -> BundleReport:
    """Check a bundle; raise ``BundleError`` naming the first broken link.

    With ``trusted`` (the circle registry the auditor relies on), every key the
    bundle lists must be a trusted key of the same region and purpose, and the
    signatures are checked against the trusted validity and revocation, not the
    bundle's. Without it, ``BundleReport.keys`` lists what the bundle claims, for the
    auditor to compare.
    """
    fields = _parse(data)
    registry = _registry(fields["keys"])
    if trusted is not None:
        registry = _trusted_view(registry, trusted)
    checker = SignatureChecker()
    case = fields["case"]

    receipts = _receipts(fields["receipts"], case)
    known = {r.digest for r in receipts}
    envelopes: list[tuple[Envelope, Any]] = []
    for i, item in enumerate(fields["envelopes"]):
        envelope, body, carried = _check_envelope(i, item, registry, checker)
        if envelope.case != case:
            raise BundleError(f"envelope {i}", f"belongs to case {envelope.case}")
        for receipt in carried:
            if receipt.digest not in known:
                raise BundleError(f"envelope {i}", f"carries receipt {_name(receipt)} not listed")
        envelopes.append((envelope, body))

    chains: dict[str, list[Receipt]] = defaultdict(list)
    for receipt in receipts:
        chains[receipt.actor].append(receipt)
    if len(chains) > 2:
        raise BundleError("bundle", f"receipts of {len(chains)} regions; a case has two sides")
    by_digest = {r.digest: r for r in receipts}
    for chain in chains.values():
        chain.sort(key=lambda r: r.index)
        _check_chain(chain, registry, checker)
        _check_cross_links(chain, by_digest)

    received_by: dict[str, set[bytes]] = defaultdict(set)  # actor -> envelopes it received
    for envelope, _ in envelopes:
        received_by[envelope.recipient].add(envelope.digest)
    bodies_by_actor: dict[str, list[Any]] = defaultdict(list)
    for envelope, body in envelopes:
        bodies_by_actor[envelope.sender].append(body)
    made_by = fields["made_by"]
    sides = set(chains) | {e.sender for e, _ in envelopes} | {e.recipient for e, _ in envelopes}
    if sides and made_by not in sides:
        raise BundleError("bundle", f"made_by {made_by} is not a side of the case")
    all_causes = {r.cause for r in receipts if r.actor == made_by}
    own_events: set[bytes] = set()
    for i, record in enumerate(fields["events"]):
        if not isinstance(record, dict) or not isinstance(record.get("at"), int):
            raise BundleError(f"event {i}", "an event record needs an integer 'at'")
        digest = leaf_digest(TAG_EVENT, encode(record))
        if digest not in all_causes or digest in own_events:
            raise BundleError(f"event {i} ({record.get('event')})", "is the cause of no receipt")
        own_events.add(digest)
    unchecked = 0
    for receipt in receipts:
        if receipt.cause in received_by[receipt.actor]:
            continue
        if receipt.actor == made_by:
            if receipt.cause in own_events:
                continue
            raise BundleError(f"cause {_name(receipt)}", "its cause is not in the bundle")
        if receipt.cause in _derived_causes(receipt, bodies_by_actor[receipt.actor]):
            continue  # the other side's local event, re-derived from the body it sent
        unchecked += 1

    return BundleReport(
        case=case,
        made_by=fields["made_by"],
        envelopes=len(envelopes),
        chains={actor: len(chain) for actor, chain in chains.items()},
        last_kinds={actor: chain[-1].kind for actor, chain in chains.items()},
        keys=(used := sorted({r.key for r in receipts} | {e.sig.key for e, _ in envelopes if e.sig})),
        key_records=[_describe(registry.record(k)) for k in used],
        causes_unchecked=unchecked,
    )


def _derived_causes(receipt: Receipt, bodies: list[Any]) -> set[bytes]:
    events = _EVENTS_OF_KIND.get(receipt.kind, set())
    candidates = {event_digest(event_record(e, receipt.at, receipt.index, None)) for e in events}
    for body in bodies:
        for event in events:
            candidates.add(event_digest(event_record(event, receipt.at, receipt.index, body)))
    return candidates


# ------------------------------------------------------------------ steps


def _parse(data: bytes) -> dict[str, Any]:
    try:
        fields = decode(data, max_bytes=MAX_BUNDLE_BYTES, max_depth=24)
    except ProtocolError as exc:
        raise BundleError("bundle", f"not a canonical bundle file: {exc.en}") from exc
    if not isinstance(fields, dict) or fields.get("format") != BUNDLE_FORMAT:
        raise BundleError("bundle", f"not a {BUNDLE_FORMAT} file")
    for name, kind in (("case", str), ("made_by", str), ("keys", tuple), ("envelopes", tuple),
                       ("receipts", tuple), ("events", tuple)):
        if not isinstance(fields.get(name), kind):
            raise BundleError("bundle", f"field {name!r} is missing or of the wrong type")
    return fields


def _registry(records: Sequence[Any]) -> KeyRegistry:
    registry = KeyRegistry()
    for i, record in enumerate(records):
        try:
            registry.add(KeyRecord.from_wire(dict(record)))
        except (TypeError, ValueError, KeyError) as exc:
            raise BundleError(f"key {i}", str(exc) or type(exc).__name__) from exc
    return registry


def _receipts(items: Sequence[Any], case: str) -> list[Receipt]:
    receipts = []
    for i, item in enumerate(items):
        try:
            receipt = receipt_from_fields(item)
        except ProtocolError as exc:
            raise BundleError(f"receipt {i}", exc.en) from exc
        if receipt.case != case:
            raise BundleError(f"receipt {_name(receipt)}", f"belongs to case {receipt.case}")
        receipts.append(receipt)
    return receipts


def _check_envelope(
    i: int, item: Any, registry: KeyRegistry, checker: SignatureChecker
) -> tuple[Envelope, Any, tuple[Receipt, ...]]:
    link = f"envelope {i}"
    if not isinstance(item, dict) or not all(
        isinstance(item.get(k), bytes) for k in ("wire", "content_key", "plaintext")
    ):
        raise BundleError(link, "needs wire, content_key and plaintext")
    try:
        envelope = decode_envelope(item["wire"])
        link = f"envelope {i} ({envelope.kind} {envelope.id})"
        if envelope.sig is None:
            raise BundleError(link, "unsigned")
        public = registry.signing_key(envelope.sig.key, envelope.sender, envelope.sent_at)
        checker.check(envelope.digest, envelope.sig, public)
        plaintext = open_payload(item["content_key"], envelope.enc.nonce, envelope.payload)
        if plaintext != item["plaintext"]:
            raise BundleError(link, "plaintext differs from the decrypted payload")
        body, carried = decode_payload(envelope.kind, plaintext)
    except ProtocolError as exc:
        raise BundleError(link, exc.en) from exc
    return envelope, body, carried


def _check_chain(chain: list[Receipt], registry: KeyRegistry, checker: SignatureChecker) -> None:
    previous: Receipt | None = None
    for position, receipt in enumerate(chain):
        link = f"receipt {_name(receipt)}"
        if receipt.index != position:
            raise BundleError(link, f"expected index {position}: a receipt is missing")
        if receipt.prev != (previous.digest if previous else None):
            raise BundleError(link, "does not link to the previous receipt")
        if receipt.sig is None or receipt.sig.key != receipt.key:
            raise BundleError(link, "is not signed by its actor key")
        try:
            public = registry.signing_key(receipt.key, receipt.actor, receipt.at)
            checker.check(receipt.digest, receipt.sig, public)
        except ProtocolError as exc:
            raise BundleError(link, exc.en) from exc
        previous = receipt


def _check_cross_links(chain: list[Receipt], by_digest: dict[bytes, Receipt]) -> None:
    last_seen = -1
    for receipt in chain:
        if receipt.their is None:
            if last_seen >= 0:
                raise BundleError(f"cross-link {_name(receipt)}", "drops its cross-link")
            continue
        other = by_digest.get(receipt.their)
        if other is None or other.actor == receipt.actor:
            raise BundleError(f"cross-link {_name(receipt)}", "points at no receipt of the other side")
        if other.index < last_seen:
            raise BundleError(f"cross-link {_name(receipt)}", "goes backwards")
        last_seen = other.index


def _trusted_view(claimed: KeyRegistry, trusted: KeyRegistry) -> KeyRegistry:
    """The trusted records of the keys the bundle lists (a later registry may have
    ended a key since the bundle was made: its own validity is what counts)."""
    view = KeyRegistry()
    for record in claimed.records():
        try:
            known = trusted.record(record.key_id)
        except ProtocolError:
            raise BundleError(f"key {record.key_id}", "is not in the trusted registry") from None
        if (known.region, known.purpose, known.public) != (record.region, record.purpose,
                                                           record.public):
            raise BundleError(f"key {record.key_id}",
                              f"differs from the trusted registry: {_describe(known)}")
        view.add(known)
    return view


def _describe(record: KeyRecord) -> str:
    until = record.valid_until if record.valid_until is not None else "…"
    revoked = f", revoked at {record.revoked_at}" if record.revoked_at is not None else ""
    return (f"{record.key_id} ({record.region} {record.purpose}, valid {record.valid_from} … "
            f"{until}{revoked})")


def _name(receipt: Receipt) -> str:
    return f"{receipt.actor}#{receipt.index}"
