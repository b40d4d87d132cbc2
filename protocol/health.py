"""Heartbeats: each node tells the circle, every few seconds, that it is alive.

A heartbeat goes on core NATS to ``tb.<region>.health`` (every member may listen to
``tb.*.health``; a region may publish only its own), signed by its node like a
virtual-window signal (``protocol.rtc``), under its own tag. A partner that sends
none for longer than its threshold is flagged as silent by the others
(docs/protocol.md §16). Nothing is stored or answered.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from protocol.fields import Millis, RegionCode, Wire

__all__ = ["TAG_HEARTBEAT", "Heartbeat"]

TAG_HEARTBEAT = b"tongban/1 heartbeat\x00"


class Heartbeat(Wire):
    region: RegionCode
    at: Millis  # the sender's clock
    nonce: Annotated[bytes, Field(min_length=16, max_length=16)]
    started_at: Millis  # when the node started: a new value is a restart
    interval_s: Annotated[int, Field(ge=1, le=3600)]  # the next one comes within this
    outbox: Annotated[int, Field(ge=0)]  # messages the node still has to publish
