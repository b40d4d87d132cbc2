"""Messages that arrive late, twice, out of order, tampered with or under a revoked key.

End to end over the in-memory loopback: duplicates re-queue the original answer,
out-of-order messages are deferred then applied, bit flips and forged headers are
rejected without poisoning the genuine message, a revoked key refuses in-flight
messages, and the known races between the two sides.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback import T0, Delivered, Pair
from paths_helpers import CID, Driver, hours, run_to_end, run_to_processing

from protocol import decode_envelope, encode_envelope
from protocol import examples as ex
from protocol.errors import Reason
from receipts import BundleError

# ====================================================================== (l) duplicates, order


def test_duplicate_late_requeues_original_answer() -> None:
    d = Driver(Pair(), twice=False)
    d.application = ex.application(T0)
    d.act(d.c, "collect", T0, pump=False)
    d.act(d.c, "submit", T0 + 1, pump=False)
    (application,) = d.c.take_outbox()
    assert d.h.deliver(application, T0 + 2).outcome == "applied"
    (received,) = d.h.take_outbox()
    assert d.c.deliver(received, T0 + 3).outcome == "applied"
    d.act(d.h, "accept", hours(1))
    d.act(d.h, "forwarded", hours(2))
    run_to_end(d)
    # much later, after both sides archived: still a duplicate with the original answer
    before = copy.deepcopy(d.h.cases[CID].snapshot())
    assert d.h.deliver(application, hours(100)) == Delivered("duplicate")
    assert d.h.take_outbox() == [received]
    assert d.h.cases[CID].snapshot() == before
    assert d.c.deliver(received, hours(100)) == Delivered("duplicate")
    assert d.c.outbox == []  # nothing was answered to it the first time
    d.verify()


def test_out_of_order_is_deferred_then_applied() -> None:
    d = Driver(Pair(), twice=False)
    d.application = ex.application(T0)
    d.act(d.c, "collect", T0, pump=False)
    d.act(d.c, "submit", T0 + 1, pump=False)
    (application,) = d.c.take_outbox()
    d.act(d.c, "withdraw", T0 + 2, pump=False)
    (withdrawal,) = d.c.take_outbox()
    result = d.h.deliver(withdrawal, T0 + 3)  # before the application it follows
    assert result == Delivered("deferred", reason=Reason.OUT_OF_ORDER)
    assert d.h.cases[CID].state == "new"
    assert d.h.outbox == []
    assert d.h.deliver(application, T0 + 4).outcome == "applied"
    (received,) = d.h.take_outbox()
    assert d.h.deliver(withdrawal, T0 + 5).outcome == "applied"
    (withdrawn,) = d.h.take_outbox()
    assert d.c.deliver(withdrawn, T0 + 6).reason is Reason.OUT_OF_ORDER
    assert d.c.deliver(received, T0 + 7).outcome == "applied"
    assert d.c.deliver(withdrawn, T0 + 8).outcome == "applied"
    assert d.c.deliver(withdrawn, T0 + 9).outcome == "duplicate"
    assert d.states() == ("withdrawn", "withdrawn")
    d.verify()


def test_out_of_order_decision_before_receipt_ack() -> None:
    d = Driver(Pair(), twice=False)
    d.application = ex.application(T0)
    d.act(d.c, "collect", T0, pump=False)
    d.act(d.c, "submit", T0 + 1, pump=False)
    (application,) = d.c.take_outbox()
    d.h.deliver(application, T0 + 2)
    d.act(d.h, "accept", hours(1), pump=False)
    d.act(d.h, "forwarded", hours(2), pump=False)
    received, decision, forwarded = d.h.take_outbox()
    for wire in (forwarded, decision):
        assert d.c.deliver(wire, hours(3)) == Delivered("deferred", reason=Reason.OUT_OF_ORDER)
    assert d.c.cases[CID].state == "sent"
    for wire, state in ((received, "under_review"), (decision, "accepted"), (forwarded, "processing")):
        assert d.c.deliver(wire, hours(4)).outcome == "applied"
        assert d.c.cases[CID].state == state
    d.verify()


# ====================================================================== (m) tampering, keys


def _under_review() -> tuple[Pair, bytes]:
    """A pair where the handling side's 'received' is in flight, undelivered."""
    pair = Pair()
    app = ex.application(T0)
    pair.collecting.local(CID, "collect", app, T0)
    pair.collecting.local(CID, "submit", app, T0 + 1)
    (application,) = pair.collecting.take_outbox()
    pair.handling.deliver(application, T0 + 2)
    (received,) = pair.handling.take_outbox()
    return pair, received


def _flip(wire: bytes, position: int, bit: int) -> bytes:
    tampered = bytearray(wire)
    tampered[position] ^= 1 << bit
    return bytes(tampered)


_TAMPER: dict[str, Any] = {}


def _tamper_fixture() -> tuple[Pair, bytes]:
    if not _TAMPER:
        _TAMPER["pair"], _TAMPER["wire"] = _under_review()
    return _TAMPER["pair"], _TAMPER["wire"]


@settings(max_examples=40, deadline=None)
@given(offset=st.integers(0, 10_000), bit=st.integers(0, 7), where=st.sampled_from(["payload", "sig"]))
def test_bit_flip_is_rejected(offset: int, bit: int, where: str) -> None:
    pair, wire = _tamper_fixture()
    envelope = decode_envelope(wire)
    assert envelope.sig is not None
    part = envelope.payload if where == "payload" else envelope.sig.sig
    start = wire.find(part)
    assert start > 0
    result = pair.collecting.deliver(_flip(wire, start + offset % len(part), bit), T0 + 3)
    assert result.outcome == "rejected"
    assert result.reason in (Reason.BAD_SIGNATURE, Reason.DECRYPTION_FAILED)
    assert pair.collecting.cases[CID].state == "sent"


def test_tampered_copy_does_not_poison_the_original() -> None:
    pair, wire = _under_review()
    envelope = decode_envelope(wire)
    start = wire.find(envelope.payload)
    assert pair.collecting.deliver(_flip(wire, start + 40, 0), T0 + 3).reason is Reason.BAD_SIGNATURE
    assert pair.collecting.deliver(wire, T0 + 4).outcome == "applied"
    assert pair.states(CID) == ("under_review", "received")
    pair.collecting.verify(CID)
    pair.handling.verify(CID)


def test_resigned_tampered_payload_fails_decryption() -> None:
    """Even a validly signed envelope is refused if its ciphertext was not sealed to us."""
    pair, wire = _under_review()
    envelope = decode_envelope(wire)
    for position in (0, 40, len(envelope.payload) - 1):  # commitment, ciphertext, tag
        payload = _flip(envelope.payload, position, 3)
        draft = envelope.model_copy(update={"payload": payload, "sig": None})
        (sig,) = pair.handling.postmaster.signer.sign([draft.digest])
        forged = encode_envelope(draft.model_copy(update={"sig": sig}))
        result = pair.collecting.deliver(forged, T0 + 3)
        assert result == Delivered("rejected", reason=Reason.DECRYPTION_FAILED)
    assert pair.collecting.deliver(wire, T0 + 4).outcome == "applied"


def test_header_change_breaks_signature() -> None:
    pair, wire = _under_review()
    envelope = decode_envelope(wire)
    for update in ({"seq": envelope.seq + 1}, {"sent_at": envelope.sent_at + 1},
                   {"id": "370100-m999999"}):
        forged = encode_envelope(envelope.model_copy(update=update))
        assert pair.collecting.deliver(forged, T0 + 3).reason is Reason.BAD_SIGNATURE


def test_wrong_recipient() -> None:
    pair, received = _under_review()
    result = pair.handling.deliver(received, T0 + 3)  # the handling side's own message
    assert result == Delivered("rejected", reason=Reason.WRONG_RECIPIENT)
    pair.collecting.local(CID, "withdraw", ex.withdrawal(T0 + 4), T0 + 4)
    (withdrawal,) = pair.collecting.take_outbox()
    assert pair.collecting.deliver(withdrawal, T0 + 5).reason is Reason.WRONG_RECIPIENT


def test_revoked_key() -> None:
    d = Driver(Pair(), twice=False)
    d.start()
    d.act(d.h, "accept", hours(1))
    assert d.states() == ("accepted", "forwarding")
    d.act(d.h, "forward_exhausted", hours(1.5), pump=False)
    d.act(d.h, "operator_retry", hours(1.6), pump=False)
    revoked_at = hours(2)
    d.pair.registry.revoke(d.h.keys.sign_key_id, revoked_at)
    d.act(d.h, "forwarded", hours(3), pump=False)  # signed with the revoked key
    (forwarded,) = d.h.take_outbox()
    result = d.c.deliver(forwarded, hours(3))
    assert result == Delivered("rejected", reason=Reason.KEY_NOT_VALID)
    assert d.states() == ("accepted", "processing")
    # what the collecting side accepted before the revocation still verifies
    assert [r.kind for r in d.c.theirs[CID]] == ["received", "accepted"]
    d.c.verify(CID)
    # the handling side's bundle now holds a receipt signed after the revocation
    with pytest.raises(BundleError):
        d.h.verify(CID)


def test_revoked_key_refuses_in_flight_message() -> None:
    """A message signed before the revocation but arriving after it is refused: a
    stolen key can backdate. Arriving before the revocation it is fine."""
    d = Driver(Pair(), twice=False)
    d.start()
    d.act(d.h, "accept", hours(1), pump=False)
    (decision,) = d.h.take_outbox()
    d.pair.registry.revoke(d.h.keys.sign_key_id, hours(2))
    assert d.c.deliver(decision, hours(1.5)).outcome == "applied"  # before: fine
    d2 = Driver(Pair(), twice=False)
    d2.start()
    d2.act(d2.h, "accept", hours(1), pump=False)
    (late,) = d2.h.take_outbox()
    d2.pair.registry.revoke(d2.h.keys.sign_key_id, hours(2))
    assert d2.c.deliver(late, hours(3)) == Delivered("rejected", reason=Reason.KEY_NOT_VALID)
    d2.c.verify(CID)
    d2.h.verify(CID)  # every receipt of it was made before the revocation


# ====================================================================== known races


def test_late_evaluation_after_handling_archived() -> None:
    d = Driver(Pair(), twice=False)
    run_to_processing(d)
    d.act(d.h, "conclude", hours(3))
    d.act(d.c, "deliver", hours(4))
    d.act(d.h, "archive", hours(5))  # allowed in 'delivered'
    d.act(d.c, "evaluate", hours(6), pump=False)  # allowed in 'delivered'
    (evaluation,) = d.c.take_outbox()
    assert d.h.deliver(evaluation, hours(7)).outcome == "applied"
