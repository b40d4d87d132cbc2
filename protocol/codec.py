"""Canonical msgpack: the one byte form every signature and hash is computed over.

Rules (docs/protocol.md §2 states them for implementers in other languages):

1. Values are maps with string keys, arrays, strings, byte strings, integers,
   booleans. No floats, no nil, no extension types (timestamps are integer
   milliseconds since the Unix epoch, UTC).
2. Map keys are sorted by their UTF-8 bytes; no key appears twice. A field whose
   value is null is left out of the map.
3. Every integer, string, byte string, array and map uses the shortest msgpack
   encoding (what msgpack implementations do by default); strings use the str
   family, byte strings the bin family.
4. Strings are UTF-8 in Unicode normalisation form C.

The decoder is strict: it enforces size and depth limits and then re-encodes what
it read; if the result differs from the input by a single byte the message is
refused as non-canonical. That is what lets a receiver verify a signature over the
bytes it re-derives from the fields, and it rules out malleability.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

import msgpack

from protocol.errors import DecodeError, LocalProtocolError, Reason

__all__ = ["MAX_DEPTH", "MAX_MESSAGE_BYTES", "Raw", "canonical", "decode", "decode_unchecked",
           "encode", "raw_fields", "raw_items", "repack", "same_as_parts"]

#: Largest canonical message accepted. Materials travel separately (object store),
#: so a message holds forms and references only.
MAX_MESSAGE_BYTES = 1 << 20
#: Deepest nesting of maps and arrays accepted.
MAX_DEPTH = 16

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


class Raw:
    """A value that is already canonical msgpack bytes, spliced into ``encode``'s output
    as it is (a cached body inside a larger map), so it is not walked again."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Raw) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"Raw({len(self.data)} bytes)"


def encode(value: Any) -> bytes:
    """Return the canonical bytes of ``value`` (maps, lists, str, bytes, int, bool).

    ``None`` values inside maps are dropped; a ``None`` anywhere else, a float or
    any other type is our own mistake and raises ``LocalProtocolError``. ``Raw``
    values are spliced in unchanged.
    """
    canonical_value = _canonical(value)
    try:
        packed: bytes = _packb(canonical_value)
    except TypeError:  # a Raw inside: assemble around it
        return _pack_spliced(canonical_value)
    return packed


def _pack_spliced(value: Any) -> bytes:
    kind = type(value)
    if kind is Raw:
        return value.data  # type: ignore[no-any-return]
    if kind is dict:
        parts = [_header(len(value), 0x80, 0xDE)]
        for key, item in value.items():
            parts.append(_packb(key))
            parts.append(_pack_spliced(item))
        return b"".join(parts)
    if kind is list:
        return _header(len(value), 0x90, 0xDC) + b"".join(_pack_spliced(i) for i in value)
    packed: bytes = _packb(value)
    return packed


def _header(length: int, fix: int, family16: int) -> bytes:
    """msgpack map (0x80/0xde/0xdf) or array (0x90/0xdc/0xdd) header of ``length``."""
    if length < 16:
        return bytes([fix | length])
    if length < 1 << 16:
        return bytes([family16]) + length.to_bytes(2, "big")
    return bytes([family16 + 1]) + length.to_bytes(4, "big")


def decode(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse canonical bytes. Raises only ``DecodeError``, whatever the input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(Reason.MALFORMED, f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise DecodeError(Reason.TOO_LARGE, f"{len(data)} bytes > {max_bytes}")
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=False,
            ext_hook=_refuse_ext,
            timestamp=0,
        )
    except DecodeError:
        raise
    except msgpack.StackError as exc:  # nesting beyond the unpacker's own stack
        raise DecodeError(Reason.TOO_DEEP, f"deeper than {max_depth}") from exc
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            UnicodeDecodeError, OverflowError, RecursionError) as exc:
        raise DecodeError(Reason.MALFORMED, type(exc).__name__) from exc
    _check_shape(value, max_depth)
    # Maps keep the order they were read in, so packing what we read reproduces the
    # input exactly when every length and integer used its shortest form (and no key
    # was repeated, which would have shrunk a map); key order and NFC were checked above.
    if _packb(value) != bytes(data):
        raise DecodeError(Reason.NON_CANONICAL, "bytes differ from the canonical encoding")
    return value


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError(Reason.MALFORMED, f"extension type {code} is not allowed")


def _canonical(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise LocalProtocolError(Reason.INVALID_FIELD, "map keys must be strings")
            if not key.isascii() and not unicodedata.is_normalized("NFC", key):
                raise LocalProtocolError(Reason.NON_CANONICAL, "a map key is not in NFC form")
        # Python orders str by code point, which is the order of their UTF-8 bytes.
        return {key: _canonical(item) for key, item in sorted(value.items()) if item is not None}
    if kind is str:
        if not value.isascii() and not unicodedata.is_normalized("NFC", value):
            raise LocalProtocolError(Reason.NON_CANONICAL, "string is not in NFC form")
        return value
    if kind is int:
        if not -(1 << 63) <= value < 1 << 64:
            raise LocalProtocolError(Reason.INVALID_FIELD, "integer outside msgpack's 64-bit range")
        return value
    if kind is bytes or kind is bool or kind is Raw:
        return value
    if kind is list or kind is tuple:
        return [_canonical(item) for item in value]
    # Subclasses (a StrEnum, an OrderedDict ...) are written as their base type.
    if isinstance(value, str):
        return _canonical(str.__str__(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return _canonical(int(value))
    if isinstance(value, dict):
        return _canonical(dict(value))
    if isinstance(value, list | tuple):
        return _canonical(list(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise LocalProtocolError(
        Reason.INVALID_FIELD, f"{type(value).__name__} cannot be encoded canonically"
    )


def _check_shape(value: Any, max_depth: int, depth: int = 1) -> None:
    """Check depth, types, key order and NFC. Recursion stops at ``max_depth`` + 1,
    however deep the input is nested."""
    kind = type(value)
    if kind is dict or kind is tuple:
        if depth > max_depth:
            raise DecodeError(Reason.TOO_DEEP, f"deeper than {max_depth}")
        if kind is dict:
            keys = list(value)
            for key in keys:
                if type(key) is not str:
                    raise DecodeError(Reason.MALFORMED, "map keys must be strings")
                if not key.isascii() and not unicodedata.is_normalized("NFC", key):
                    raise DecodeError(Reason.NON_CANONICAL, "a map key is not in NFC form")
            if keys != sorted(keys):
                raise DecodeError(Reason.NON_CANONICAL, "map keys are not in order")
            value = value.values()
        for item in value:
            _check_shape(item, max_depth, depth + 1)
    elif kind is str:
        if not value.isascii() and not unicodedata.is_normalized("NFC", value):
            raise DecodeError(Reason.NON_CANONICAL, "a string is not in NFC form")
    elif value is None:
        raise DecodeError(Reason.NON_CANONICAL, "nil is never encoded; leave the field out")
    elif kind is float:
        raise DecodeError(Reason.MALFORMED, "floats are not allowed")
    elif kind is not bytes and kind is not int and kind is not bool:
        raise DecodeError(Reason.MALFORMED, f"{kind.__name__} is not allowed")


def canonical(value: Any) -> Any:
    """The canonical form of ``value`` (sorted maps, no None) to combine and ``repack``."""
    return _canonical(value)


def repack(value: Any) -> bytes:
    """Pack a value ``decode`` returned (already canonical) without checking it again."""
    packed: bytes = _packb(value)
    return packed


def raw_fields(data: bytes) -> dict[str, bytes]:
    """The top-level fields of an encoded map, each as its own encoded bytes (what was
    signed, as it came), without decoding them. Raises ``DecodeError``."""
    fields: dict[str, bytes] = {}

    def read(unpacker: msgpack.Unpacker) -> None:
        for _ in range(unpacker.read_map_header()):
            key = unpacker.unpack()
            if type(key) is not str or key in fields:
                raise DecodeError(Reason.MALFORMED, "map keys must be distinct strings")
            fields[key] = _next_raw(unpacker, data)

    _read_raw(data, read, "map")
    return fields


def raw_items(data: bytes) -> list[bytes]:
    """The items of an encoded array, each as its own encoded bytes, without decoding
    them. Raises ``DecodeError``."""
    items: list[bytes] = []

    def read(unpacker: msgpack.Unpacker) -> None:
        items.extend(_next_raw(unpacker, data) for _ in range(unpacker.read_array_header()))

    _read_raw(data, read, "array")
    return items


def _next_raw(unpacker: msgpack.Unpacker, data: bytes) -> bytes:
    start = unpacker.tell()
    unpacker.skip()
    return data[start:unpacker.tell()]


def _read_raw(data: bytes, read: Callable[[msgpack.Unpacker], None], what: str) -> None:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    try:
        read(unpacker)
        if unpacker.tell() != len(data):
            raise DecodeError(Reason.MALFORMED, f"bytes after the {what}")
    except DecodeError:
        raise
    except (ValueError, TypeError, msgpack.OutOfData, msgpack.FormatError, msgpack.StackError,
            UnicodeDecodeError) as exc:
        raise DecodeError(Reason.MALFORMED, type(exc).__name__) from exc


def same_as_parts(data: bytes, parts: dict[str, bytes] | list[bytes]) -> bool:
    """Whether ``data`` is exactly the map (keys in order) or array of these raw parts
    with the shortest header: with canonical parts, ``data`` is then canonical too."""
    packer = msgpack.Packer(use_bin_type=True)
    if isinstance(parts, dict):
        keys = list(parts)
        if keys != sorted(keys):
            return False
        header: bytes = packer.pack_map_header(len(parts))
        body = b"".join(packer.pack(key) + value for key, value in parts.items())
    else:
        header = packer.pack_array_header(len(parts))
        body = b"".join(parts)
    return header + body == bytes(data)


def decode_unchecked(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """Parse bytes that a signature has vouched for, checking only what msgpack checks in
    C (well-formed, shortest encodings, no repeated key); key order, NFC, nil and floats
    are left to ``decode`` when the value is used. For bulk intake (catalog sync), where
    ``decode``'s walk of every value is the cost. Raises ``DecodeError``."""
    if len(data) > max_bytes:
        raise DecodeError(Reason.TOO_LARGE, f"{len(data)} bytes > {max_bytes}")
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=False,
                                ext_hook=_refuse_ext, timestamp=0)
    except DecodeError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            UnicodeDecodeError, OverflowError, RecursionError) as exc:
        raise DecodeError(Reason.MALFORMED, type(exc).__name__) from exc
    try:
        same = _packb(value) == bytes(data)
    except (TypeError, ValueError) as exc:  # a nil map key and the like
        raise DecodeError(Reason.MALFORMED, type(exc).__name__) from exc
    if not same:
        raise DecodeError(Reason.NON_CANONICAL, "bytes differ from the canonical encoding")
    return value
