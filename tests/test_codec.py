"""The canonical codec: its type, map, shortest-form and NFC rules, size and depth
limits, and round trips.

Byte strings below are written by hand from the msgpack spec, so the tests do not
trust the packer they check.
"""

from __future__ import annotations

import contextlib
import enum
import struct
import time
import unicodedata
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.codec import MAX_DEPTH, MAX_MESSAGE_BYTES, decode, encode
from protocol.errors import DecodeError, LocalProtocolError, Reason

# ------------------------------------------------------------------ helpers


def _decode_error(data: bytes, **kwargs: Any) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(data, **kwargs)
    assert type(info.value) is DecodeError
    return info.value


def _same(a: Any, b: Any) -> bool:
    """Equality that tells bool from int and tuple (decoded) from list (encoded), and
    wants a decoded map's keys in canonical order."""
    if isinstance(a, dict):
        return (type(b) is dict and list(b) == sorted(a, key=lambda k: k.encode())
                and all(_same(a[k], b[k]) for k in a))
    if isinstance(a, list | tuple):
        return type(b) is tuple and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


def _nfc_text(**kwargs: Any) -> st.SearchStrategy[str]:
    return st.text(**kwargs).map(lambda s: unicodedata.normalize("NFC", s))


_INT = st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
_LEAF = _INT | st.booleans() | st.binary(max_size=40) | _nfc_text(max_size=20)
_VALUE = st.recursive(
    _LEAF,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(_nfc_text(max_size=8), children, max_size=5),
    max_leaves=25,
)


# ------------------------------------------------------------------ rule 2: maps


def test_map_keys_sorted_by_utf8_bytes() -> None:
    # UTF-16 order would put U+10000 (D800 DC00) before U+FF61; UTF-8 bytes put it
    # last (F0 > EF). Length-first orders would put "b" before "aa".
    keys = ["\U00010000", "\uffff", "\uff61", "b", "aa", "a", "", "\u00e9", "z"]
    expected = sorted(keys, key=lambda k: k.encode())
    assert expected == ["", "a", "aa", "b", "z", "\u00e9", "\uff61", "\uffff", "\U00010000"]
    data = encode({k: i for i, k in enumerate(keys)})
    manual = bytes([0x80 | len(keys)]) + b"".join(
        bytes([0xA0 | len(k.encode())]) + k.encode() + bytes([keys.index(k)]) for k in expected
    )
    assert data == manual
    assert list(decode(data)) == expected


def test_map_in_utf16_order_is_refused() -> None:
    keys = sorted(["\U00010000", "\uff61", "\uffff"], key=lambda k: k.encode("utf-16-be"))
    assert keys[0] == "\U00010000"
    data = bytes([0x83]) + b"".join(
        bytes([0xA0 | len(k.encode())]) + k.encode() + b"\x01" for k in keys
    )
    assert _decode_error(data).reason is Reason.NON_CANONICAL


def test_none_values_are_dropped_from_maps() -> None:
    assert encode({"a": 1, "b": None, "c": {"d": None}}) == b"\x82\xa1a\x01\xa1c\x80"
    assert decode(encode({"x": None})) == {}


@pytest.mark.parametrize("value", [None, [None], {"a": [1, None]}, (None,)])
def test_none_outside_a_map_value_is_refused(value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode(value)


@pytest.mark.parametrize(
    "data",
    [
        b"\x82\xa1a\x01\xa1a\x02",  # duplicate key
        b"\x82\xa1a\x01\xa1a\x01",  # duplicate key, same value
        b"\x82\xa1b\x01\xa1a\x02",  # unsorted
        b"\x82\xa1b\x01\xa2aa\x02",  # length-first order
        b"\x81\xa1a\x82\xa1c\x01\xa1b\x01",  # nested unsorted
    ],
)
def test_non_canonical_maps_are_refused(data: bytes) -> None:
    assert _decode_error(data).reason is Reason.NON_CANONICAL


@pytest.mark.parametrize("data", [b"\x81\x01\x02", b"\x81\xc4\x01a\x01", b"\x81\x90\x01", b"\x81\xc3\x01"])
def test_non_string_map_keys_are_refused(data: bytes) -> None:
    _decode_error(data)


@pytest.mark.parametrize("value", [{1: "a"}, {b"k": 1}, {("a",): 1}, {"a": {2: 3}}])
def test_encode_refuses_non_string_keys(value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode(value)


# ------------------------------------------------------------------ rule 3: shortest forms


@pytest.mark.parametrize(
    ("value", "data"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\xcc\x80"),
        (255, b"\xcc\xff"),
        (256, b"\xcd\x01\x00"),
        (65535, b"\xcd\xff\xff"),
        (65536, b"\xce\x00\x01\x00\x00"),
        ((1 << 32) - 1, b"\xce\xff\xff\xff\xff"),
        (1 << 32, b"\xcf\x00\x00\x00\x01\x00\x00\x00\x00"),
        ((1 << 64) - 1, b"\xcf" + b"\xff" * 8),
        (-1, b"\xff"),
        (-32, b"\xe0"),
        (-33, b"\xd0\xdf"),
        (-128, b"\xd0\x80"),
        (-129, b"\xd1\xff\x7f"),
        (-32768, b"\xd1\x80\x00"),
        (-32769, b"\xd2\xff\xff\x7f\xff"),
        (-(1 << 31), b"\xd2\x80\x00\x00\x00"),
        (-(1 << 31) - 1, b"\xd3\xff\xff\xff\xff\x7f\xff\xff\xff"),
        (-(1 << 63), b"\xd3\x80" + b"\x00" * 7),
        (True, b"\xc3"),
        (False, b"\xc2"),
    ],
)
def test_integers_use_the_shortest_encoding(value: int, data: bytes) -> None:
    assert encode(value) == data
    assert _same(value, decode(data))


def _all_int_encodings(n: int) -> list[bytes]:
    """Every msgpack encoding of ``n``, shortest or not."""
    out = []
    if 0 <= n <= 0x7F:
        out.append(bytes([n]))
    if -32 <= n < 0:
        out.append(struct.pack(">b", n))
    for tag, fmt in ((0xCC, ">B"), (0xCD, ">H"), (0xCE, ">I"), (0xCF, ">Q"),
                     (0xD0, ">b"), (0xD1, ">h"), (0xD2, ">i"), (0xD3, ">q")):
        with contextlib.suppress(struct.error):
            out.append(bytes([tag]) + struct.pack(fmt, n))
    return out


@settings(max_examples=300, deadline=None)
@given(_INT)
def test_only_the_shortest_integer_encoding_decodes(n: int) -> None:
    shortest = encode(n)
    encodings = _all_int_encodings(n)
    assert shortest in encodings
    for data in encodings:
        if data == shortest:
            assert decode(data) == n
        else:
            assert _decode_error(data).reason is Reason.NON_CANONICAL, data.hex()


@pytest.mark.parametrize(
    "data",
    [
        b"\xd9\x01a",  # str8 for a fixstr
        b"\xda\x00\x01a",  # str16
        b"\xdb\x00\x00\x00\x01a",  # str32
        b"\xc5\x00\x01a",  # bin16 for a bin8
        b"\xc6\x00\x00\x00\x01a",  # bin32
        b"\xdc\x00\x00",  # array16 for a fixarray
        b"\xdd\x00\x00\x00\x01\x01",  # array32
        b"\xde\x00\x00",  # map16 for a fixmap
        b"\xdf\x00\x00\x00\x01\xa1a\x01",  # map32
        b"\xda\x00\x20" + b"a" * 32,  # str16 where str8 is shortest
    ],
)
def test_non_minimal_lengths_are_refused(data: bytes) -> None:
    assert _decode_error(data).reason is Reason.NON_CANONICAL


def test_str_and_bin_families() -> None:
    assert encode("a") == b"\xa1a"
    assert encode(b"a") == b"\xc4\x01a"
    assert encode(bytearray(b"a")) == encode(memoryview(b"a")) == b"\xc4\x01a"
    assert encode("a" * 32) == b"\xd9\x20" + b"a" * 32
    assert encode(b"a" * 256) == b"\xc5\x01\x00" + b"a" * 256
    assert _same("a", decode(b"\xa1a"))
    assert _same(b"a", decode(b"\xc4\x01a"))
    assert decode(b"\xa1a") != decode(b"\xc4\x01a")


class _Colour(enum.StrEnum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 3


def test_subclasses_encode_as_their_base_type() -> None:
    assert encode(_Colour.RED) == encode("red")
    assert encode(_Level.HIGH) == encode(3)
    assert encode(OrderedDict([("b", 1), ("a", 2)])) == encode({"a": 2, "b": 1})
    assert encode((1, 2)) == encode([1, 2])


@pytest.mark.parametrize("value", [1 << 64, -(1 << 63) - 1])
def test_out_of_range_integers_are_a_local_error(value: int) -> None:
    with pytest.raises(LocalProtocolError):
        encode(value)


# ------------------------------------------------------------------ rule 1: types


@pytest.mark.parametrize("value", [1.5, 0.0, {"a": 1.0}, [float("nan")], {1, 2}, object(), 1j])
def test_encode_refuses_floats_and_other_types(value: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode(value)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xca\x3f\xc0\x00\x00", Reason.MALFORMED),  # float32 1.5
        (b"\xcb" + struct.pack(">d", 1.5), Reason.MALFORMED),  # float64
        (b"\x81\xa1a\xcb" + struct.pack(">d", 0.0), Reason.MALFORMED),
        (b"\xc0", Reason.NON_CANONICAL),  # nil
        (b"\x81\xa1a\xc0", Reason.NON_CANONICAL),
        (b"\x91\xc0", Reason.NON_CANONICAL),
        (b"\xd4\x05\x00", Reason.MALFORMED),  # fixext1
        (b"\xc7\x02\x07ab", Reason.MALFORMED),  # ext8
        (b"\xd6\xff\x00\x00\x00\x01", Reason.MALFORMED),  # timestamp32
        (b"\xd7\xff" + b"\x00" * 8, Reason.MALFORMED),  # timestamp64
        (b"\xd5\xff\x00\x00", Reason.MALFORMED),  # timestamp with a bad length
        (b"\x91\xd4\x01\x00", Reason.MALFORMED),
        (b"\xc1", Reason.MALFORMED),  # never used
        (b"", Reason.MALFORMED),
        (b"\x92\x01", Reason.MALFORMED),  # truncated
        (b"\xa2a", Reason.MALFORMED),
        (b"\xa1\xff", Reason.MALFORMED),  # not UTF-8
        (b"\xa3\xed\xa0\x80", Reason.MALFORMED),  # an encoded surrogate
        (b"\x01\x02", Reason.MALFORMED),  # trailing bytes
        (encode({"a": 1}) + b"\x00", Reason.MALFORMED),
        (encode("x") + encode("x"), Reason.MALFORMED),
    ],
)
def test_decode_refusals(data: bytes, reason: Reason) -> None:
    assert _decode_error(data).reason is reason


def test_decode_refuses_non_bytes() -> None:
    for value in ("abc", 1, None, [1]):
        with pytest.raises(DecodeError) as info:
            decode(value)  # type: ignore[arg-type]
        assert info.value.reason is Reason.MALFORMED


def test_decode_accepts_bytes_like() -> None:
    data = encode({"a": [1, b"x"]})
    assert decode(bytearray(data)) == decode(memoryview(data)) == {"a": (1, b"x")}


# ------------------------------------------------------------------ rule 4: NFC


@pytest.mark.parametrize("value", ["e\u0301", ["A\u030a"], {"k": "\u1100\u1161"}, {"a": ["x", "e\u0301"]}])
def test_encode_refuses_non_nfc(value: Any) -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode(value)
    assert info.value.reason is Reason.NON_CANONICAL


def test_encode_refuses_non_nfc_map_keys() -> None:
    with pytest.raises(LocalProtocolError):
        encode({"e\u0301": 1})


@pytest.mark.parametrize(
    "data",
    [
        b"\xa3e\xcc\x81",  # e + combining acute
        b"\x91\xa3e\xcc\x81",
        b"\x81\xa1k\xa3e\xcc\x81",
        b"\x81\xa3e\xcc\x81\x01",  # non-NFC key
        b"\xa3\xe2\x84\xab",  # ANGSTROM SIGN, whose NFC is U+00C5
    ],
)
def test_decode_refuses_non_nfc(data: bytes) -> None:
    assert _decode_error(data).reason is Reason.NON_CANONICAL


def test_nfc_strings_pass() -> None:
    for text in ["\u00e9", "张三丰", "\U0001f600", "Å", "한국"]:
        assert decode(encode(text)) == text


# ------------------------------------------------------------------ limits


def test_size_limit() -> None:
    payload = b"\xc6" + struct.pack(">I", MAX_MESSAGE_BYTES - 5) + bytes(MAX_MESSAGE_BYTES - 5)
    assert len(payload) == MAX_MESSAGE_BYTES
    assert len(decode(payload)) == MAX_MESSAGE_BYTES - 5
    too_big = b"\xc6" + struct.pack(">I", MAX_MESSAGE_BYTES - 4) + bytes(MAX_MESSAGE_BYTES - 4)
    assert _decode_error(too_big).reason is Reason.TOO_LARGE
    assert _decode_error(encode(b"x" * 100), max_bytes=50).reason is Reason.TOO_LARGE
    # The limit is checked before parsing: garbage that is too large is TOO_LARGE.
    assert _decode_error(b"\xc1" * (MAX_MESSAGE_BYTES + 1)).reason is Reason.TOO_LARGE


def _nested_arrays(depth: int) -> bytes:
    return b"\x91" * (depth - 1) + b"\x90"


def _nested_maps(depth: int) -> bytes:
    return b"\x81\xa1k" * (depth - 1) + b"\x80"


@pytest.mark.parametrize("nest", [_nested_arrays, _nested_maps])
def test_depth_limit(nest: Any) -> None:
    assert decode(nest(MAX_DEPTH)) is not None
    assert _decode_error(nest(MAX_DEPTH + 1)).reason is Reason.TOO_DEEP
    assert _decode_error(nest(5), max_depth=4).reason is Reason.TOO_DEEP
    assert _decode_error(nest(200)).reason is Reason.TOO_DEEP


def test_encode_decode_at_depth_limit() -> None:
    value: Any = []
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    assert decode(encode(value)) is not None
    assert _decode_error(encode([value])).reason is Reason.TOO_DEEP


@pytest.mark.parametrize("nest", [_nested_arrays, _nested_maps])
def test_hostile_nesting_neither_crashes_nor_recurses(nest: Any) -> None:
    data = nest(100_000)
    start = time.perf_counter()
    _decode_error(data)
    _decode_error(data, max_depth=1_000_000)
    assert time.perf_counter() - start < 5


def test_hostile_nesting_is_too_deep() -> None:
    assert _decode_error(_nested_arrays(100_000)).reason is Reason.TOO_DEEP


# ------------------------------------------------------------------ round trip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_VALUE)
def test_round_trip(value: Any) -> None:
    data = encode(value)
    back = decode(data, max_depth=64)
    assert _same(value, back)
    assert encode(back) == data


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_nfc_text(max_size=6), _LEAF | st.none(), max_size=8))
def test_round_trip_drops_none(value: dict[str, Any]) -> None:
    back = decode(encode(value))
    assert _same({k: v for k, v in value.items() if v is not None}, back)


def test_codec_module_exports() -> None:
    assert {"decode", "encode"} <= set(codec.__all__)
