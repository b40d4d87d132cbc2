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
from typing import Any

import msgpack

from protocol.errors import DecodeError, LocalProtocolError, Reason

__all__ = ["MAX_DEPTH", "MAX_MESSAGE_BYTES", "decode", "encode"]

#: Largest canonical message accepted. Materials travel separately (object store),
#: so a message holds forms and references only.
MAX_MESSAGE_BYTES = 1 << 20
#: Deepest nesting of maps and arrays accepted.
MAX_DEPTH = 16

_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack


def encode(value: Any) -> bytes:
    """Return the canonical bytes of ``value`` (maps, lists, str, bytes, int, bool).

    ``None`` values inside maps are dropped; a ``None`` anywhere else, a float or
    any other type is our own mistake and raises ``LocalProtocolError``.
    """
    packed: bytes = _packb(_canonical(value))
    return packed


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
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            UnicodeDecodeError, OverflowError, RecursionError) as exc:
        raise DecodeError(Reason.MALFORMED, type(exc).__name__) from exc
    _check_shape(value, max_depth)
    try:
        again = encode(value)
    except LocalProtocolError as exc:  # e.g. a string that is not NFC
        raise DecodeError(Reason.NON_CANONICAL, exc.detail) from exc
    if again != bytes(data):
        raise DecodeError(Reason.NON_CANONICAL, "bytes differ from the canonical encoding")
    return value


def _refuse_ext(code: int, data: bytes) -> Any:
    raise DecodeError(Reason.MALFORMED, f"extension type {code} is not allowed")


def _canonical(value: Any) -> Any:
    if isinstance(value, str):
        if not value.isascii() and not unicodedata.is_normalized("NFC", value):
            raise LocalProtocolError(Reason.NON_CANONICAL, "string is not in NFC form")
        return value
    if isinstance(value, bool | int | bytes):
        return value
    if isinstance(value, dict):
        out = {}
        for key in sorted(value, key=_key_bytes):
            item = value[key]
            if item is not None:
                out[key] = _canonical(item)
        return out
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise LocalProtocolError(
        Reason.INVALID_FIELD, f"{type(value).__name__} cannot be encoded canonically"
    )


def _key_bytes(key: object) -> bytes:
    if not isinstance(key, str):
        raise LocalProtocolError(Reason.INVALID_FIELD, "map keys must be strings")
    return key.encode()


def _check_shape(value: Any, max_depth: int) -> None:
    """Iteratively check depth and types, so hostile nesting cannot recurse."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | tuple):
            if depth > max_depth:
                raise DecodeError(Reason.TOO_DEEP, f"deeper than {max_depth}")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif item is None:
            raise DecodeError(Reason.NON_CANONICAL, "nil is never encoded; leave the field out")
        elif isinstance(item, float):
            raise DecodeError(Reason.MALFORMED, "floats are not allowed")
        elif not isinstance(item, str | bytes | int):
            raise DecodeError(Reason.MALFORMED, f"{type(item).__name__} is not allowed")
