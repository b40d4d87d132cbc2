"""``tongban bench protocol``: what the protocol costs on top of raw Ed25519.

Four figures, measured in one run on the same keys:

* ``raw_sign_per_s`` / ``raw_verify_per_s``: Ed25519 alone over a 200-byte message;
* ``receipts_per_s``: receipts built (validated model), digested (canonical bytes,
  SHA-256), signed and verified: one complete sign-and-check cycle per receipt;
* ``envelopes_per_s``: messages encoded, encrypted, signed, then decoded,
  signature-checked, decrypted and their receipts checked: the full
  ``Postmaster.seal`` + ``Postmaster.open`` round trip with one receipt inside.

Each is measured twice: one signature per item (``*_unbatched``: the protocol's
overhead against raw Ed25519 is ``overhead_pct``) and with the Merkle batches a
busy node makes (``batch`` items per signature), which is what the node runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol import Receipt
from protocol import examples as ex
from receipts import KeyRegistry, Letter, NodeKeys, Postmaster

__all__ = ["run"]

T0 = 1_795_400_000_000


def _rate(fn: Callable[[], int], seconds: float) -> float:
    """Items per second: call ``fn`` (which returns how many items it did) for ``seconds``."""
    fn()  # warm up caches and code paths
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        done += fn()
    return done / (time.perf_counter() - start)


def run(seconds: float = 2.0, batch: int = 64,
        progress: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """The figures; ``progress(phase, fraction done)`` is told as each one starts."""
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    message = os.urandom(200)
    signature = private.sign(message)

    def raw_sign() -> int:
        for _ in range(100):
            private.sign(message)
        return 100

    def raw_verify() -> int:
        for _ in range(100):
            public.verify(signature, message)
        return 100

    collecting = NodeKeys.generate(ex.COLLECTING)
    handling = NodeKeys.generate(ex.HANDLING)
    registry = KeyRegistry()
    registry.add_node(collecting, valid_from=T0 - 1)
    registry.add_node(handling, valid_from=T0 - 1)
    sender = Postmaster(collecting, registry)
    receiver = Postmaster(handling, registry)
    counter = iter(range(1 << 62))

    def receipt() -> Receipt:
        n = next(counter)
        return Receipt(case=f"410100-bench-{n:012d}", index=0, kind="submitted",
                       actor=ex.COLLECTING, key=collecting.sign_key_id, cause=os.urandom(32),
                       at=T0 + n, data={"window_no": f"ZZ-{n}", "matter": "1137010000", "version": 3})

    def receipts(size: int) -> Callable[[], int]:
        def cycle() -> int:
            signed = sender.sign_receipts([receipt() for _ in range(size)])
            receiver.checker = type(receiver.checker)()  # a fresh cache: nothing pre-verified
            for item in signed:
                receiver.check_receipt(item)
            return size
        return cycle

    # The receipts envelopes carry were signed in batches already (as on a node): the
    # receiver has checked their root once, so an envelope costs its own signature.
    carried = sender.sign_receipts([receipt() for _ in range(batch)])
    for item in carried:
        receiver.check_receipt(item)

    def envelopes(size: int) -> Callable[[], int]:
        def cycle() -> int:
            letters = []
            for i in range(size):
                n = next(counter)
                inside = carried[i % len(carried)]
                letters.append(Letter(id=f"410100-m{n:012d}", kind="outcome", recipient=ex.HANDLING,
                                      case=inside.case, seq=n + 1, sent_at=T0 + n,
                                      body=ex.outcome(T0 + n), receipts=(inside,)))
            for sealed in sender.seal(letters):
                receiver.open(sealed.wire, T0 + 10**9)
            return size
        return cycle

    figures = [("raw sign", raw_sign), ("raw verify", raw_verify),
               ("receipts, unbatched", receipts(1)), ("envelopes, unbatched", envelopes(1)),
               (f"receipts, batches of {batch}", receipts(batch)),
               (f"envelopes, batches of {batch}", envelopes(batch))]
    rates = []
    for number, (phase, fn) in enumerate(figures):
        if progress is not None:
            progress(phase, number / len(figures))
        rates.append(_rate(fn, seconds))
    if progress is not None:
        progress("done", 1.0)
    (raw_sign_per_s, raw_verify_per_s, receipts_unbatched, envelopes_unbatched,
     receipts_batched, envelopes_batched) = rates
    raw_pair = 1 / (1 / raw_sign_per_s + 1 / raw_verify_per_s)  # sign + verify, per second
    return {
        "raw_sign_per_s": round(raw_sign_per_s),
        "raw_verify_per_s": round(raw_verify_per_s),
        "raw_sign_verify_per_s": round(raw_pair),
        "receipts_per_s": round(receipts_batched),
        "envelopes_per_s": round(envelopes_batched),
        "batch": batch,
        "receipts_unbatched_per_s": round(receipts_unbatched),
        "envelopes_unbatched_per_s": round(envelopes_unbatched),
        # Cost of one unbatched receipt / envelope cycle beyond raw sign + verify.
        "receipts_overhead_pct": round((raw_pair / receipts_unbatched - 1) * 100, 1),
        "envelopes_overhead_pct": round((raw_pair / envelopes_unbatched - 1) * 100, 1),
        "seconds_per_figure": seconds,
    }
