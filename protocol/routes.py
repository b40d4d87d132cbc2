"""A collecting region's signed refusal when no route exists (无路由不予收件).

When no member of the circle can handle a matter for an applicant (routing.router),
the collecting node does not send anything: it signs a ``RouteRefusal`` naming the
matter, the applicant's locations (several for 多地联办) and why, in Chinese and English, for the window
to hand over. Anyone holding the circle registry can check it (receipts.routes).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from protocol.envelope import Signature, leaf_digest
from protocol.fields import MatterCode, Millis, RegionCode, Text, Wire

__all__ = ["TAG_ROUTE_REFUSAL", "RouteRefusal", "SignedRouteRefusal", "refusal_digest"]

TAG_ROUTE_REFUSAL = b"tongban/1 route-refusal\x00"


class RouteRefusal(Wire):
    collecting: RegionCode  # the region whose window refused
    matter: MatterCode  # 基本编码 asked for
    locations: tuple[RegionCode, ...] = Field(min_length=1, max_length=20)  # what routing looked at
    mode: Literal["proxy", "joint"]
    code: Literal["no_route"] = "no_route"
    zh: Text
    en: Text
    at: Millis


def refusal_digest(refusal: RouteRefusal) -> bytes:
    return leaf_digest(TAG_ROUTE_REFUSAL, refusal.canonical_bytes)


class SignedRouteRefusal(Wire):
    refusal: RouteRefusal
    sig: Signature
