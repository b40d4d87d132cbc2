"""Evidence bundles from a real case between the loopback pair, and ``verify_bundle``
naming the first broken link of every tampering."""

from __future__ import annotations

import dataclasses
import functools
import random
from typing import Any

import pytest
from loopback import T0, Pair, thaw

from protocol import examples as ex
from protocol.codec import decode, encode
from protocol.envelope import Receipt
from receipts import BUNDLE_FORMAT, BatchSigner, BundleError, NodeKeys, verify_bundle
from receipts.keys import key_id

CASE = "ZZ-TB-20261123-0001"
C, H = ex.COLLECTING, ex.HANDLING
MIN = 60_000


@dataclasses.dataclass(frozen=True)
class Walk:
    pair: Pair
    bundles: dict[str, bytes]  # region of the maker -> bundle


@functools.cache
def walk() -> Walk:
    """collect → submit → accept → forwarded → step → conclude → deliver → evaluate."""
    pair = Pair()
    c, h = pair.collecting, pair.handling
    now = T0
    application = ex.application(now)
    c.local(CASE, "collect", application, now)
    now += MIN
    c.local(CASE, "submit", application, now)
    pair.pump(now)
    for side, event, body in ((h, "accept", ex.accept), (h, "forwarded", ex.forwarded),
                              (h, "step", ex.progress), (h, "conclude", ex.outcome),
                              (c, "deliver", ex.delivery), (c, "evaluate", ex.evaluation)):
        now += MIN
        side.local(CASE, event, body(now), now)
        pair.pump(now)
    assert pair.states(CASE) == ("evaluated", "evaluated")
    return Walk(pair, {C: c.bundle(CASE), H: h.bundle(CASE)})


def _fields(region: str) -> dict[str, Any]:
    return thaw(decode(walk().bundles[region], max_bytes=1 << 28, max_depth=24))




def _verify(data: bytes) -> BundleError | None:
    try:
        verify_bundle(data)
    except BundleError as exc:
        return exc
    return None


def _broken(fields: dict[str, Any]) -> BundleError:
    with pytest.raises(BundleError) as info:
        verify_bundle(encode(fields))
    return info.value


def _receipt_at(fields: dict[str, Any], actor: str, index: int) -> int:
    (position,) = [i for i, r in enumerate(fields["receipts"])
                   if r["actor"] == actor and r["index"] == index]
    return position


def _carried(fields: dict[str, Any]) -> set[tuple[str, int]]:
    """(actor, index) of every receipt some envelope in the bundle carries."""
    out = set()
    for item in fields["envelopes"]:
        for receipt in decode(item["plaintext"])["receipts"]:
            out.add((receipt["actor"], receipt["index"]))
    return out


def _resign(fields: dict[str, Any], position: int, keys: NodeKeys, **update: Any) -> None:
    """Replace receipt ``position`` by an updated copy signed by ``keys``."""
    raw = {k: v for k, v in fields["receipts"][position].items() if k != "sig"} | update
    unsigned = Receipt.model_validate(_freeze(raw))
    (signature,) = BatchSigner(keys.signing, keys.sign_key_id).sign([unsigned.digest])
    fields["receipts"][position] = Receipt.model_validate(
        _freeze(raw) | {"sig": signature}).model_dump(exclude_none=True)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _freeze(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


# ------------------------------------------------------------------ the genuine bundles


@pytest.mark.parametrize("region", [C, H])
def test_both_sides_bundles_verify(region: str) -> None:
    report = verify_bundle(walk().bundles[region])
    pair = walk().pair
    assert report.case == CASE
    assert report.made_by == region
    assert report.envelopes == 9
    assert report.chains[C] == 9
    assert report.chains[H] == (5 if region == C else 8)  # H's last receipts never travel
    assert report.last_kinds == {C: "evaluated", H: "concluded" if region == C else "evaluated"}
    assert report.keys == sorted([pair.collecting.keys.sign_key_id, pair.handling.keys.sign_key_id])
    assert report.causes_unchecked == 0


def test_bundle_shape() -> None:
    fields = _fields(C)
    assert fields["format"] == BUNDLE_FORMAT
    assert [e["event"] for e in fields["events"]] == ["collect", "submit", "deliver", "evaluate"]
    assert [e["event"] for e in _fields(H)["events"]] == ["accept", "forwarded", "step", "conclude"]
    assert {k["purpose"] for k in fields["keys"]} == {"sign", "encrypt"}


# ------------------------------------------------------------------ byte positions


def _spans(data: bytes) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Byte range of every map entry (key and value) and array item, by path."""
    spans: dict[tuple[Any, ...], tuple[int, int]] = {}

    def length(pos: int, size: int) -> tuple[int, int]:
        return int.from_bytes(data[pos:pos + size], "big"), pos + size

    def value(pos: int, path: tuple[Any, ...]) -> int:
        tag = data[pos]
        pos += 1
        if tag <= 0x7F or tag >= 0xE0 or tag in (0xC2, 0xC3):
            return pos
        if 0xCC <= tag <= 0xD3:
            return pos + (1, 2, 4, 8)[(tag - 0xCC) % 4]
        if 0xA0 <= tag <= 0xBF:
            return pos + (tag & 0x1F)
        if tag in (0xC4, 0xC5, 0xC6, 0xD9, 0xDA, 0xDB):
            n, pos = length(pos, {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}[tag])
            return pos + n
        if 0x90 <= tag <= 0x9F or tag in (0xDC, 0xDD):
            n, pos = (tag & 0x0F, pos) if tag <= 0x9F else length(pos, 2 if tag == 0xDC else 4)
            for i in range(n):
                start, pos = pos, value(pos, (*path, i))
                spans[(*path, i)] = (start, pos)
            return pos
        if 0x80 <= tag <= 0x8F or tag in (0xDE, 0xDF):
            n, pos = (tag & 0x0F, pos) if tag <= 0x8F else length(pos, 2 if tag == 0xDE else 4)
            for _ in range(n):
                start = pos
                key_end = value(pos, path)
                key = decode(data[start:key_end])
                pos = value(key_end, (*path, key))
                spans[(*path, key)] = (start, pos)
            return pos
        raise AssertionError(f"unexpected msgpack tag {tag:#x}")

    assert value(0, ()) == len(data)
    return spans


def test_spans_find_the_fields() -> None:
    data = walk().bundles[C]
    spans = _spans(data)
    start, end = spans[("made_by",)]
    assert data[start:end] == encode("made_by") + encode(C)
    start, end = spans[("events", 2, "event")]
    assert data[start:end] == encode("event") + encode("deliver")
    small = _spans(encode({"a": [1, {"b": b"x" * 300}]}))
    assert small[("a", 1)] == (5, 311)
    assert small[("a", 1, "b")] == (6, 311)
    assert small[("a",)] == (1, 311)


def _uncovered(data: bytes) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Spans verify_bundle documents as not covered, and spans it leaves uncovered by a bug.

    Mutations there may go unnoticed; everywhere else they must raise BundleError.
    """
    fields = decode(data, max_bytes=1 << 28, max_depth=24)
    spans = _spans(data)
    documented = [spans[("made_at",)]]
    # The bundle format documents event names as "for people", outside the digest
    # (the event digest now covers the whole record, so these are caught anyway).
    documented += [spans[("events", i, "event")] for i in range(len(fields["events"]))]
    for i, record in enumerate(fields["keys"]):
        # Key records are the maker's copy; only key id ↔ public key is bound (the
        # auditor compares the ids with the registry it trusts). Validity may move
        # as long as it still covers the signatures; encryption keys are not used.
        names = ["valid_from", "valid_until", "revoked_at"]
        if record["purpose"] == "encrypt":
            names += ["purpose", "region"]
        documented += [spans[("keys", i, n)] for n in names if ("keys", i, n) in spans]
    # made_by is only bound through the event records, which test_foreign_event_record
    # shows are not tied to the maker's own receipts.
    bug = [spans[("made_by",)]]
    return documented, bug


@pytest.mark.parametrize("region", [C, H])
def test_single_byte_mutations(region: str) -> None:
    data = walk().bundles[region]
    documented, bug = _uncovered(data)
    tail = _spans(data)[("events",)][0]  # events, keys, made_*, receipts: after the envelopes
    rng = random.Random(f"bundle-{region}")
    positions = [rng.randrange(len(data)) for _ in range(900)]
    positions += [rng.randrange(tail, len(data)) for _ in range(900)]
    passed = 0
    for position in positions:
        mutated = bytearray(data)
        mutated[position] ^= rng.randrange(1, 256)
        error = _verify(bytes(mutated))
        if error is not None:
            assert error.link
            assert error.problem
            continue
        passed += 1
        where = [s for s in documented + bug if s[0] <= position < s[1]]
        context = data[max(0, position - 16):position + 8]
        assert where, f"mutating byte {position} ({context!r}) went unnoticed"
    assert passed < len(positions) // 10


@pytest.mark.parametrize("region", [C, H])
def test_every_metadata_byte(region: str) -> None:
    """Every byte of the small unsigned parts (key records, bundle header, event
    names and times), flipped in its lowest bit."""
    data = walk().bundles[region]
    documented, bug = _uncovered(data)
    spans = _spans(data)
    fields = decode(data, max_bytes=1 << 28, max_depth=24)
    targets = [spans[(name,)] for name in ("keys", "made_at", "made_by", "format", "case")]
    for i in range(len(fields["events"])):
        targets += [spans[("events", i, "event")], spans[("events", i, "at")]]
    unnoticed = []
    for start, end in targets:
        for position in range(start, end):
            mutated = bytearray(data)
            mutated[position] ^= 0x01
            if _verify(bytes(mutated)) is None:
                unnoticed.append(position)
    assert unnoticed, "some documented-as-uncovered bytes are expected here"
    stray = [p for p in unnoticed if not any(s <= p < e for s, e in documented + bug)]
    assert not stray, [data[p - 8:p + 4] for p in stray]


# ------------------------------------------------------------------ targeted tampering


def test_bundle_error_attributes() -> None:
    error = BundleError("receipt 370100#4", "does not link to the previous receipt")
    assert error.link == "receipt 370100#4"
    assert error.problem == "does not link to the previous receipt"
    assert str(error) == "receipt 370100#4: does not link to the previous receipt"


def test_dropped_receipt_in_the_middle_of_a_chain() -> None:
    fields = _fields(H)
    assert (H, 6) not in _carried(fields)  # so no envelope notices first
    del fields["receipts"][_receipt_at(fields, H, 6)]
    error = _broken(fields)
    assert error.link == f"receipt {H}#7"
    assert "missing" in error.problem


def test_dropped_receipt_that_an_envelope_carries() -> None:
    fields = _fields(C)
    assert (H, 2) in _carried(fields)
    del fields["receipts"][_receipt_at(fields, H, 2)]
    error = _broken(fields)
    assert error.link.startswith("envelope ")
    assert f"{H}#2" in error.problem
    assert "not listed" in error.problem


def test_swapped_plaintexts() -> None:
    fields = _fields(C)
    envelopes = fields["envelopes"]
    envelopes[1]["plaintext"], envelopes[3]["plaintext"] = (envelopes[3]["plaintext"],
                                                            envelopes[1]["plaintext"])
    error = _broken(fields)
    assert error.link.startswith("envelope 1 (")
    assert "plaintext differs" in error.problem


def test_swapped_content_keys() -> None:
    fields = _fields(H)
    envelopes = fields["envelopes"]
    envelopes[0]["content_key"], envelopes[2]["content_key"] = (envelopes[2]["content_key"],
                                                                envelopes[0]["content_key"])
    error = _broken(fields)
    assert error.link.startswith("envelope 0 (")
    assert "decrypted" in error.problem


def test_changed_receipt_data() -> None:
    fields = _fields(H)
    position = _receipt_at(fields, H, 6)
    assert fields["receipts"][position]["data"]["mode"] == "post"
    fields["receipts"][position]["data"]["mode"] = "electronic"
    error = _broken(fields)
    assert error.link == f"receipt {H}#6"
    assert "signature" in error.problem


def test_changed_data_of_a_carried_receipt() -> None:
    fields = _fields(C)
    position = _receipt_at(fields, H, 1)
    fields["receipts"][position]["data"]["promised_date"] = "2027-01-01"
    error = _broken(fields)
    assert error.link.startswith("envelope ")
    assert f"{H}#1" in error.problem


def test_removed_event_record() -> None:
    fields = _fields(C)
    assert fields["events"][2]["event"] == "deliver"
    del fields["events"][2]
    error = _broken(fields)
    assert error.link == f"cause {C}#7"
    assert "cause" in error.problem


@pytest.mark.parametrize(
    "extra",
    [{"event": "bogus", "at": T0 + 5}, {"event": "collect", "at": T0 + 5, "body": {"x": 1}}],
)
def test_extra_unreferenced_event_record(extra: dict[str, Any]) -> None:
    fields = _fields(C)
    fields["events"].append(extra)
    error = _broken(fields)
    assert error.link == f"event 4 ({extra['event']})"
    assert "cause of no receipt" in error.problem


def test_duplicated_event_record() -> None:
    fields = _fields(H)
    fields["events"].append(dict(fields["events"][1]))
    error = _broken(fields)
    assert error.link == "event 4 (forwarded)"


def test_event_record_without_time() -> None:
    fields = _fields(H)
    del fields["events"][0]["at"]
    assert _broken(fields).link == "event 0"


def test_receipt_signed_with_a_key_not_in_the_bundle() -> None:
    fields = _fields(H)
    stranger = NodeKeys.generate(H)
    position = _receipt_at(fields, H, 7)
    _resign(fields, position, stranger, key=stranger.sign_key_id)
    error = _broken(fields)
    assert error.link == f"receipt {H}#7"
    assert "not registered" in error.problem


def test_receipt_signed_by_another_key_than_it_names() -> None:
    fields = _fields(H)
    stranger = NodeKeys.generate(H)
    _resign(fields, _receipt_at(fields, H, 7), stranger)  # still names the real key
    error = _broken(fields)
    assert error.link == f"receipt {H}#7"


def test_missing_key_record() -> None:
    fields = _fields(C)
    sender_key = walk().pair.collecting.keys.sign_key_id
    fields["keys"] = [k for k in fields["keys"] if k["key_id"] != sender_key]
    error = _broken(fields)
    assert error.link.startswith("envelope 0 (application ")
    assert "not registered" in error.problem


def test_key_record_with_a_wrong_id() -> None:
    fields = _fields(C)
    fields["keys"][0]["public"] = bytes(32)
    assert _broken(fields).link == "key 0"


def test_cross_links_checked() -> None:
    handling = walk().pair.handling.keys
    fields = _fields(H)
    _resign(fields, _receipt_at(fields, H, 7), handling, their=bytes(32))
    error = _broken(fields)
    assert error.link == f"cross-link {H}#7"
    assert "no receipt of the other side" in error.problem

    fields = _fields(H)
    first_of_c = fields["receipts"][_receipt_at(fields, C, 0)]
    digest = Receipt.model_validate(_freeze(first_of_c)).digest
    _resign(fields, _receipt_at(fields, H, 7), handling, their=digest)
    error = _broken(fields)
    assert error.link == f"cross-link {H}#7"
    assert "backwards" in error.problem


def test_chain_link_checked() -> None:
    handling = walk().pair.handling.keys
    fields = _fields(H)
    _resign(fields, _receipt_at(fields, H, 7), handling, prev=bytes(32))
    error = _broken(fields)
    assert error.link == f"receipt {H}#7"
    assert "previous" in error.problem


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", encode({"format": "tongban-bundle/2"}), encode([1, 2]),
     encode({"format": BUNDLE_FORMAT, "case": CASE})],
)
def test_not_a_bundle(data: bytes) -> None:
    with pytest.raises(BundleError) as info:
        verify_bundle(data)
    assert info.value.link == "bundle"


def test_receipts_of_a_third_region() -> None:
    fields = _fields(H)
    stranger = NodeKeys.generate("110000")
    receipt = dict(fields["receipts"][_receipt_at(fields, H, 7)])
    fields["receipts"].append(receipt | {"actor": "110000"})
    _resign(fields, len(fields["receipts"]) - 1, stranger, key=stranger.sign_key_id)
    assert _broken(fields).link in ("bundle", "receipt 110000#7")


# ------------------------------------------------------------------ known gaps


def test_foreign_event_record() -> None:
    fields = _fields(C)
    fields["events"].append(_fields(H)["events"][0])  # H's own "accept" record
    assert _broken(fields).link.startswith("event 4")


def test_made_by_is_a_side_of_the_case() -> None:
    fields = _fields(C)
    fields["made_by"] = "999999"
    _broken(fields)


@pytest.mark.parametrize(("name", "value"), [("valid_from", "0"), ("valid_until", b"\x00"),
                                             ("revoked_at", [1])])
def test_key_record_field_types(name: str, value: Any) -> None:
    fields = _fields(C)
    fields["keys"][0][name] = value
    _broken(fields)


def test_malformed_public_key_in_a_key_record() -> None:
    fields = _fields(C)
    public = b"\x01" * 31
    kid = key_id("ed25519", public)
    fields["keys"].append({"key_id": kid, "region": C, "purpose": "sign", "public": public,
                           "valid_from": 0})
    envelope = thaw(decode(fields["envelopes"][0]["wire"]))
    envelope["sig"]["key"] = kid  # the signature is outside what the digest covers
    fields["envelopes"][0]["wire"] = encode(envelope)
    _broken(fields)



def test_a_region_cannot_sign_for_the_other_side_against_the_trusted_registry() -> None:
    """The bundle's own key records relabel 410100's key as 370100's: only a trusted
    registry exposes it."""
    pair = Pair()
    case = "410100-20261123-000009"
    pair.collecting.local(case, "collect", ex.application(T0), T0)
    pair.collecting.local(case, "submit", ex.application(T0), T0 + 1)
    pair.pump(T0 + 2)
    fields = decode(pair.collecting.bundle(case))
    keys = [dict(k) for k in fields["keys"]]
    for record in keys:
        if record["region"] == ex.COLLECTING and record["purpose"] == "sign":
            record["region"] = ex.HANDLING  # the forger's claim
    forged = encode({**fields, "keys": keys})
    with pytest.raises(BundleError) as caught:
        verify_bundle(forged, trusted=pair.registry)
    assert "differs from the trusted registry" in caught.value.problem
    genuine = verify_bundle(pair.collecting.bundle(case), trusted=pair.registry)
    assert all(ex.COLLECTING in r or ex.HANDLING in r for r in genuine.key_records)
