"""Signing and checking virtual-window signals (protocol.rtc, docs/protocol.md §15)."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from protocol.codec import decode, encode
from protocol.errors import Reason, RemoteProtocolError
from protocol.rtc import FRESH_MS, MAX_DATA, TAG_SIGNAL, Signal, SignedSignal
from protocol.wire import validation_detail
from receipts.registry import KeyRegistry

__all__ = ["open_signal", "seal_signal"]


def seal_signal(signal: Signal, private: Ed25519PrivateKey, key: str) -> bytes:
    """The bytes to send: ``signal`` signed with the node's current signing key."""
    data = signal.canonical_bytes
    return SignedSignal(signal=data, key=key, sig=private.sign(TAG_SIGNAL + data)).canonical_bytes


def open_signal(data: bytes, registry: KeyRegistry, recipient: str, now: int) -> Signal:
    """The signal in ``data`` if it is canonical, addressed to ``recipient``, fresh, and
    signed by its sender with a key the registry holds for it. Raises
    ``RemoteProtocolError`` (or ``DecodeError``, one of them) otherwise."""
    fields = decode(data, max_bytes=2 * MAX_DATA)
    try:
        signed = SignedSignal.model_validate(fields)
        signal = Signal.model_validate(decode(signed.signal, max_bytes=2 * MAX_DATA))
    except ValidationError as exc:
        raise RemoteProtocolError(Reason.INVALID_FIELD, validation_detail(exc)) from exc
    if encode(signal.model_dump(exclude_none=True)) != signed.signal:
        raise RemoteProtocolError(Reason.NON_CANONICAL, "a field left out at its default")
    if signal.recipient != recipient:
        raise RemoteProtocolError(Reason.WRONG_RECIPIENT, f"signal for {signal.recipient}")
    if abs(now - signal.at) > FRESH_MS:
        raise RemoteProtocolError(Reason.INVALID_FIELD, "the signal is not fresh (replayed?)")
    public = registry.signing_key(signed.key, signal.sender, signal.at, now=now)
    try:
        public.verify(signed.sig, TAG_SIGNAL + signed.signal)
    except InvalidSignature as exc:
        raise RemoteProtocolError(Reason.BAD_SIGNATURE, "signal") from exc
    return signal
