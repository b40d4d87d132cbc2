"""The sans-IO core of the 跨域通办 protocol: messages, canonical codec, case machines.

No networking, no disk, no clock: bytes and events go in, bytes and effects come
out (like h11). ``receipts`` adds the cryptography, ``node`` the I/O.
"""

from protocol.bodies import BODY_TYPES
from protocol.calendar import WeekdayCalendar, WorkingCalendar, add_working_days
from protocol.codec import decode, encode
from protocol.envelope import (
    KINDS,
    PROTOCOL_VERSION,
    EncryptionHeader,
    Envelope,
    Receipt,
    Signature,
    leaf_digest,
)
from protocol.errors import (
    DecodeError,
    LocalProtocolError,
    ProtocolError,
    Reason,
    RemoteProtocolError,
)
from protocol.machine import Case, Outgoing, Step, event_digest, event_for_message
from protocol.states import TRANSITIONS, Transition
from protocol.wire import decode_envelope, decode_payload, encode_envelope, encode_payload

__all__ = [
    "BODY_TYPES",
    "KINDS",
    "PROTOCOL_VERSION",
    "TRANSITIONS",
    "Case",
    "DecodeError",
    "EncryptionHeader",
    "Envelope",
    "LocalProtocolError",
    "Outgoing",
    "ProtocolError",
    "Reason",
    "Receipt",
    "RemoteProtocolError",
    "Signature",
    "Step",
    "Transition",
    "WeekdayCalendar",
    "WorkingCalendar",
    "add_working_days",
    "decode",
    "decode_envelope",
    "decode_payload",
    "encode",
    "encode_envelope",
    "encode_payload",
    "event_digest",
    "event_for_message",
    "leaf_digest",
]
