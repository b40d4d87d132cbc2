"""Fuzzing the decoders with random bytes and mutations of real messages.

Whatever the input, ``protocol.codec.decode``, ``protocol.wire.decode_envelope`` and
``protocol.wire.decode_payload`` may only raise ``DecodeError``, and
``receipts.envelopes.Postmaster.open`` only ``RemoteProtocolError``. Anything that
``decode`` accepts must be canonical: packing it again gives the same bytes.

The corpus is real traffic from the loopback pair: four cases that between them
send a message of every kind, both directions. Mutations are byte-level (bit flips,
byte sets, truncations, insertions, deletions, duplications, splices) and
structural (a field of the decoded message replaced, removed or added, then the
message re-encoded and, for payloads, properly encrypted and signed again so that
``Postmaster.open`` gets past the signature to the payload decoder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import T0, Pair, thaw

from protocol import examples as ex
from protocol.codec import decode, encode
from protocol.envelope import KINDS
from protocol.errors import DecodeError, LocalProtocolError, RemoteProtocolError
from protocol.wire import decode_envelope, decode_payload
from receipts import Letter, Postmaster

MIN = 60_000
NOW = T0 + 30 * ex.DAY  # when the fuzzed messages "arrive"


# ------------------------------------------------------------------ corpus


@dataclasses.dataclass(frozen=True)
class Sample:
    wire: bytes
    kind: str
    sender: str
    recipient: str
    case: str
    plaintext: bytes


@dataclasses.dataclass(frozen=True)
class Corpus:
    samples: tuple[Sample, ...]
    postmasters: dict[str, Postmaster]  # region -> its postmaster


def _walk(case: str, steps: list[tuple[str, str, Callable[[int], Any]]], pair: Pair) -> None:
    c, h = pair.collecting, pair.handling
    now = T0
    application = ex.application(now, window_no=case[-8:])
    c.local(case, "collect", application, now)
    c.local(case, "submit", application, now + 1)
    pair.pump(now + 1)
    for who, event, body in steps:
        now += MIN
        side = c if who == "c" else h
        if event == "withdraw+accept":  # the decision and the withdrawal cross
            h.local(case, "accept", ex.accept(now), now)
            c.local(case, "withdraw", ex.withdrawal(now), now)
        else:
            side.local(case, event, body(now), now)
        pair.pump(now)


@functools.cache
def corpus() -> Corpus:
    pair = Pair()
    walks: dict[str, list[tuple[str, str, Callable[[int], Any]]]] = {
        "ZZ-TB-20261120-0001": [
            ("h", "video_check", ex.video_check),
            ("h", "accept", ex.accept), ("h", "forwarded", ex.forwarded), ("h", "step", ex.progress),
            ("h", "suspend", lambda t: ex.progress(t, "suspend")),
            ("h", "resume", lambda t: ex.progress(t, "resume")),
            ("h", "conclude", ex.outcome), ("c", "deliver", ex.delivery),
            ("c", "evaluate", ex.evaluation),
        ],
        "ZZ-TB-20261120-0002": [
            ("h", "request_supplement", ex.supplement_request), ("c", "supplement", ex.supplement),
            ("h", "refuse", ex.refuse),
        ],
        "ZZ-TB-20261120-0003": [("c", "withdraw", ex.withdrawal)],
        "ZZ-TB-20261120-0004": [("c", "withdraw+accept", ex.withdrawal)],
    }
    for case, steps in walks.items():
        _walk(case, steps, pair)
    samples: dict[bytes, Sample] = {}
    for side in (pair.collecting, pair.handling):
        for case, envelopes in side.envelopes.items():
            for wire, _, plaintext in envelopes:
                fields = decode(wire)
                samples[wire] = Sample(wire, fields["kind"], fields["sender"], fields["recipient"],
                                       case, plaintext)
    assert {s.kind for s in samples.values()} == set(KINDS)
    return Corpus(tuple(samples.values()), {
        pair.collecting.region: pair.collecting.postmaster,
        pair.handling.region: pair.handling.postmaster,
    })


def test_the_corpus_opens() -> None:
    data = corpus()
    for sample in data.samples:
        opened = data.postmasters[sample.recipient].open(sample.wire, NOW)
        assert opened.plaintext == sample.plaintext
        assert opened.envelope.kind == sample.kind
        body, _ = decode_payload(sample.kind, sample.plaintext)
        assert body == opened.body


# ------------------------------------------------------------------ oracles


def _only(errors: type[Exception], what: str, call: Callable[[], Any], data: Any) -> Any:
    try:
        return call()
    except errors:
        return None
    except Exception as exc:  # the point of the fuzzer: nothing else may escape
        raise AssertionError(f"{what} raised {type(exc).__name__}: {exc} on {data!r}") from exc


def check_decoders(data: bytes, kinds: tuple[str, ...] = KINDS) -> None:
    """decode / decode_envelope / decode_payload raise only DecodeError."""
    value = _only(DecodeError, "decode", lambda: decode(data), data)
    decoded = value is not None  # decode never returns None: nil is refused
    if decoded:
        assert encode(value) == data, "decode accepted a non-canonical encoding"
    _only(DecodeError, "decode_envelope", lambda: decode_envelope(data), data)
    # If the bytes do not decode, every kind fails the same way: one is enough.
    for kind in kinds if decoded else kinds[:1]:
        _only(DecodeError, f"decode_payload({kind})", lambda k=kind: decode_payload(k, data), data)


def check_open(recipient: str, data: bytes) -> None:
    postmaster = corpus().postmasters[recipient]
    _only(RemoteProtocolError, "Postmaster.open", lambda: postmaster.open(data, NOW), data)


# ------------------------------------------------------------------ mutations

_INTERESTING = b"\x00\x01\x7f\x80\xff\x90\x9f\xa0\xbf\xc0\xc1\xc2\xc3\xc4\xc5\xc6\xc7\xca\xcb" \
               b"\xcc\xcf\xd0\xd3\xd4\xd8\xd9\xdb\xdc\xdd\xde\xdf\xe0"
OPS = ("flip", "set", "interesting", "truncate", "insert", "delete", "duplicate", "splice",
       "add", "swap")


def mutate(data: bytes, op: str, a: int, b: int, extra: bytes, other: bytes) -> bytes:
    """One mutation of ``data``; ``a``, ``b`` pick positions, ``extra`` and ``other``
    give bytes to insert and a second message to splice with."""
    n = len(data)
    if n == 0:
        return extra
    i, j = sorted((a % n, b % n))
    if op == "flip":
        return data[:i] + bytes([data[i] ^ (1 << (b % 8))]) + data[i + 1:]
    if op == "set":
        return data[:i] + bytes([b % 256]) + data[i + 1:]
    if op == "interesting":
        return data[:i] + bytes([_INTERESTING[b % len(_INTERESTING)]]) + data[i + 1:]
    if op == "truncate":
        return data[:i]
    if op == "insert":
        return data[:i] + (extra or b"\x00") + data[i:]
    if op == "delete":
        return data[:i] + data[j + 1:]
    if op == "duplicate":
        return data[:j] + data[i:j] + data[j:]
    if op == "splice":
        return data[:i] + other[b % max(1, len(other)):]
    if op == "add":
        return data[:i] + bytes([(data[i] + (1 if b % 2 else -1)) % 256]) + data[i + 1:]
    if op == "swap":
        return data[:i] + data[j:j + 1] + data[i + 1:j] + data[i:i + 1] + data[j + 1:]
    raise AssertionError(op)


_ODD_VALUES: list[Any] = [
    0, 1, -1, 255, 256, 1 << 31, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, -(1 << 63),
    True, False, "", "x", "0" * 81, "张三", "\U0001f600", "1" * 2001, "2026-02-30", "410100",
    "ed25519:0000000000000000", "x25519:0000000000000000", b"", bytes(12), bytes(31), bytes(32),
    bytes(33), bytes(64), [], [1], [[]], {}, {"a": 1}, {"outcome": "accept"}, {"body": {}},
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, tuple | list):
        for index, item in enumerate(value):
            out.extend(_paths(item, (*prefix, index)))
    return out




def restructure(value: Any, rng: random.Random, donors: list[Any]) -> Any:
    """Replace, remove or add one field somewhere in a decoded message."""
    value = thaw(value)
    path = rng.choice(_paths(value))
    replacement = rng.choice([*_ODD_VALUES, thaw(rng.choice(donors))])
    if not path:
        return replacement
    parent = value
    for step in path[:-1]:
        parent = parent[step]
    action = rng.random()
    if isinstance(parent, dict) and action < 0.2:
        del parent[path[-1]]
    elif isinstance(parent, dict) and action < 0.35:
        parent[rng.choice(["zz", "sig", "data", "receipts", "v", path[-1] + "_"])] = replacement
    elif isinstance(parent, list) and action < 0.35:
        if action < 0.2:
            parent.pop(path[-1])
        else:
            parent.insert(path[-1], replacement)
    else:
        parent[path[-1]] = replacement
    return value


def _donors() -> list[Any]:
    """Values lifted from real messages (whole bodies, receipts, signatures)."""
    donors: list[Any] = []
    for sample in corpus().samples[:8]:
        payload = decode(sample.plaintext)
        donors.append(payload["body"])
        donors.extend(payload["receipts"][:1])
        donors.append(decode(sample.wire)["sig"])
    return donors


@dataclasses.dataclass(frozen=True)
class _Raw:
    """Lets ``Postmaster.seal`` encrypt and sign a payload of our choosing."""

    fields: Any

    def model_dump(self, **_: Any) -> Any:
        return self.fields

    @property
    def canonical_bytes(self) -> bytes:
        return encode(self.fields)


_SEQ = iter(range(1, 1 << 40))


def reseal(sample: Sample, payload: Any) -> bytes | None:
    """A properly encrypted and signed envelope around an arbitrary payload value."""
    if not isinstance(payload, dict):
        return None
    receipts = payload.get("receipts", [])
    seq = next(_SEQ)
    letter = Letter(
        id=f"fz-{seq:010d}", kind=sample.kind, recipient=sample.recipient, case=sample.case,
        seq=seq, sent_at=NOW - 1000, body=_Raw(payload.get("body")),
        receipts=tuple(_Raw(r) for r in receipts) if isinstance(receipts, list) else (),
    )
    try:
        (sealed,) = corpus().postmasters[sample.sender].seal([letter])
    except LocalProtocolError:  # not encodable (a None body, a non-NFC string ...)
        return None
    return sealed.wire


# ------------------------------------------------------------------ Hypothesis

_BASE = settings(deadline=None, suppress_health_check=list(HealthCheck))


def _fuzz(examples: int) -> settings:
    return settings(_BASE, max_examples=examples)


_MUTATIONS = st.lists(
    st.tuples(st.sampled_from(OPS), st.integers(0, 1 << 16), st.integers(0, 1 << 16),
              st.binary(max_size=9), st.integers(0, 1000)),
    min_size=1, max_size=4,
)


@_fuzz(800)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    check_decoders(data)
    check_open(ex.HANDLING, data)


@_fuzz(300)
@given(st.binary(min_size=1, max_size=40).map(lambda b: bytes([b[0] | 0x80]) + b[1:]))
def test_random_bytes_starting_like_a_container(data: bytes) -> None:
    check_decoders(data)


def _apply(data: bytes, mutations: list[tuple[str, int, int, bytes, int]]) -> bytes:
    samples = corpus().samples
    for op, a, b, extra, other in mutations:
        data = mutate(data, op, a, b, extra, samples[other % len(samples)].wire)
    return data


@_fuzz(900)
@given(st.integers(0, 1000), _MUTATIONS)
def test_mutated_envelopes(index: int, mutations: list[tuple[str, int, int, bytes, int]]) -> None:
    sample = corpus().samples[index % len(corpus().samples)]
    data = _apply(sample.wire, mutations)
    check_decoders(data, kinds=(sample.kind,))
    check_open(sample.recipient, data)


@_fuzz(900)
@given(st.integers(0, 1000), _MUTATIONS)
def test_mutated_payloads(index: int, mutations: list[tuple[str, int, int, bytes, int]]) -> None:
    sample = corpus().samples[index % len(corpus().samples)]
    check_decoders(_apply(sample.plaintext, mutations))


@_fuzz(400)
@given(st.integers(0, 1000), st.randoms(use_true_random=False))
def test_restructured_messages(index: int, rng: random.Random) -> None:
    sample = corpus().samples[index % len(corpus().samples)]
    donors = _donors()
    envelope = restructure(decode(sample.wire), rng, donors)
    try:
        data = encode(envelope)
    except LocalProtocolError:
        data = None
    if data is not None:
        check_decoders(data, kinds=(sample.kind,))
        check_open(sample.recipient, data)
    payload = restructure(decode(sample.plaintext), rng, donors)
    with contextlib.suppress(LocalProtocolError):
        check_decoders(encode(payload))
    wire = reseal(sample, payload)
    if wire is not None:
        check_open(sample.recipient, wire)


# ------------------------------------------------------------------ a plain loop


def test_twenty_thousand_seeded_mutations() -> None:
    """Many mutations without Hypothesis' overhead: fixed seed, reproducible."""
    rng = random.Random(20_261_120)
    samples = corpus().samples
    donors = _donors()
    opened = resealed = 0
    for round_no in range(20_000):
        sample = rng.choice(samples)
        if round_no % 20 == 0:  # structural, re-encrypted and signed
            payload = restructure(decode(sample.plaintext), rng, donors)
            wire = reseal(sample, payload)
            if wire is not None:
                resealed += 1
                check_open(sample.recipient, wire)
            continue
        target = sample.wire if rng.random() < 0.5 else sample.plaintext
        data = target
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            data = mutate(data, rng.choice(OPS), rng.getrandbits(16), rng.getrandbits(16),
                          rng.randbytes(rng.randint(1, 9)), rng.choice(samples).wire)
        check_decoders(data, kinds=(sample.kind, rng.choice(KINDS)))
        if target is sample.wire:
            opened += 1
            check_open(sample.recipient, data)
    assert opened > 8000
    assert resealed > 500


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_against_every_real_payload(kind: str) -> None:
    for sample in corpus().samples:
        result = _only(DecodeError, "decode_payload", lambda s=sample: decode_payload(kind, s.plaintext),
                       sample.plaintext)
        if sample.kind == kind:
            assert result is not None
