"""Signing and checking a collecting region's refusal when no route exists."""

from __future__ import annotations

from protocol.routes import RouteRefusal, SignedRouteRefusal, refusal_digest
from receipts.registry import KeyRegistry
from receipts.signing import BatchSigner, SignatureChecker

__all__ = ["check_refusal", "sign_refusal"]


def sign_refusal(signer: BatchSigner, refusal: RouteRefusal) -> SignedRouteRefusal:
    [sig] = signer.sign([refusal_digest(refusal)])
    return SignedRouteRefusal(refusal=refusal, sig=sig)


def check_refusal(signed: SignedRouteRefusal, registry: KeyRegistry) -> RouteRefusal:
    """The refusal, if the collecting region signed it with a key valid when it was
    made. Raises ``RemoteProtocolError`` otherwise."""
    refusal = signed.refusal
    public = registry.signing_key(signed.sig.key, refusal.collecting, refusal.at)
    SignatureChecker().check(refusal_digest(refusal), signed.sig, public)
    return refusal
