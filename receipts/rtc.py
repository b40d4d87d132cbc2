"""Signing and checking what nodes tell each other on core NATS: virtual-window signals
(protocol.rtc, docs/protocol.md §15) and heartbeats (protocol.health, §16). Both travel
as ``SignedSignal``: the canonical bytes and an Ed25519 signature under their own tag."""

from __future__ import annotations

from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from protocol.codec import decode, encode
from protocol.errors import Reason, RemoteProtocolError
from protocol.health import TAG_HEARTBEAT, Heartbeat
from protocol.rtc import FRESH_MS, MAX_DATA, TAG_SIGNAL, Signal, SignedSignal
from protocol.wire import validation_detail
from receipts.registry import KeyRegistry

__all__ = ["open_heartbeat", "open_signal", "seal_heartbeat", "seal_signal"]

M = TypeVar("M", Signal, Heartbeat)


def seal_signal(signal: Signal, private: Ed25519PrivateKey, key: str) -> bytes:
    """The bytes to send: ``signal`` signed with the node's current signing key."""
    return _seal(TAG_SIGNAL, signal, private, key)


def seal_heartbeat(heartbeat: Heartbeat, private: Ed25519PrivateKey, key: str) -> bytes:
    return _seal(TAG_HEARTBEAT, heartbeat, private, key)


def open_signal(data: bytes, registry: KeyRegistry, recipient: str, now: int) -> Signal:
    """The signal in ``data`` if it is canonical, addressed to ``recipient``, fresh, and
    signed by its sender with a key the registry holds for it. Raises
    ``RemoteProtocolError`` (or ``DecodeError``, one of them) otherwise."""
    signed, signal = _decode(data, Signal)
    if signal.recipient != recipient:
        raise RemoteProtocolError(Reason.WRONG_RECIPIENT, f"signal for {signal.recipient}")
    _check(TAG_SIGNAL, signed, signal.sender, signal.at, registry, now)
    return signal


def open_heartbeat(data: bytes, registry: KeyRegistry, now: int) -> Heartbeat:
    """The heartbeat in ``data`` if it is canonical, fresh and signed by its region."""
    signed, heartbeat = _decode(data, Heartbeat)
    _check(TAG_HEARTBEAT, signed, heartbeat.region, heartbeat.at, registry, now)
    return heartbeat


def _seal(tag: bytes, model: Signal | Heartbeat, private: Ed25519PrivateKey, key: str) -> bytes:
    data = model.canonical_bytes
    return SignedSignal(signal=data, key=key, sig=private.sign(tag + data)).canonical_bytes


def _decode(data: bytes, model: type[M]) -> tuple[SignedSignal, M]:
    fields = decode(data, max_bytes=2 * MAX_DATA)
    try:
        signed = SignedSignal.model_validate(fields)
        found = model.model_validate(decode(signed.signal, max_bytes=2 * MAX_DATA))
    except ValidationError as exc:
        raise RemoteProtocolError(Reason.INVALID_FIELD, validation_detail(exc)) from exc
    if encode(found.model_dump(exclude_none=True)) != signed.signal:
        raise RemoteProtocolError(Reason.NON_CANONICAL, "a field left out at its default")
    return signed, found


def _check(tag: bytes, signed: SignedSignal, sender: str, at: int, registry: KeyRegistry,
           now: int) -> None:
    if abs(now - at) > FRESH_MS:
        raise RemoteProtocolError(Reason.INVALID_FIELD, "not fresh (replayed?)")
    public = registry.signing_key(signed.key, sender, at, now=now)
    try:
        public.verify(signed.sig, tag + signed.signal)
    except InvalidSignature as exc:
        raise RemoteProtocolError(Reason.BAD_SIGNATURE, "signal") from exc
