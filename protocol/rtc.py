"""Signals of remote virtual-window video sessions (远程虚拟窗口), docs/protocol.md §15.

Theory of operation
-------------------
A session joins the browser of a 通办专窗 clerk (the *caller*, at the collecting
region) and the browser of the handling region's reviewer (the *callee*). The media
flows between the two browsers (WebRTC); what the nodes carry is the signaling that
sets it up: a ``Signal`` from one node to the other on core NATS (``tb.<region>.rtc``),
each one signed by the sending node. The receiving node checks the signature against
the circle's key registry, that it is addressed to it, and that it is fresh
(``FRESH_MS``): a signal replayed later is refused.

Kinds, in the order a session sees them:

* ``invite`` (caller → callee): the session, the case it is about (none: a stand-alone
  consultation, 咨询), a topic and who is calling (``label``: the window, never a
  person's name);
* ``join`` (callee → caller): a reviewer took the call (``label``: the desk);
* ``ready`` (either): a browser is (again) on the page and wants media: the caller
  answers it with a fresh offer; it is how a reloaded page or a dropped network
  comes back;
* ``sdp`` and ``ice`` (either): the browsers' WebRTC session descriptions and ICE
  candidates, passed on as the browser wrote them (``data``: its JSON, UTF-8);
* ``end`` (either): the session is over, with its ``outcome``.

Signals carry no personal data: the applicant is seen in the video, never in a
signal. What the reviewer confirms in the session travels as a case message
(``video_check``, §3.5) in the case's receipt chains, not here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from protocol.fields import CaseId, Millis, Name, RegionCode, SessionId, Text, Wire

__all__ = ["FRESH_MS", "MAX_DATA", "OUTCOMES", "TAG_SIGNAL", "Signal", "SignalKind",
           "SignedSignal"]

#: Domain separation of a signal's signature.
TAG_SIGNAL = b"tongban/1 signal\x00"
#: A signal older (or newer) than this, by the sender's clock, is refused: replays.
FRESH_MS = 60_000
#: The largest ``data`` (a session description with many codecs is a few KiB).
MAX_DATA = 64 * 1024

SignalKind = Literal["invite", "join", "ready", "sdp", "ice", "end"]

#: How a session ended, with what people read.
OUTCOMES: dict[str, str] = {
    "completed": "已结束",
    "cancelled": "发起方已取消",
    "declined": "对方暂时无法接入",
    "no_answer": "无人接听",
    "interrupted": "节点重启，会话中断",
    "failed": "连接失败",
}
Outcome = Literal["completed", "cancelled", "declined", "no_answer", "interrupted", "failed"]


class Signal(Wire):
    """One signal between the two nodes of a session."""

    session: SessionId
    kind: SignalKind
    sender: RegionCode
    recipient: RegionCode
    at: Millis  # the sender's clock
    nonce: Annotated[bytes, Field(min_length=16, max_length=16)]  # one signal, once
    case: CaseId | None = None  # invite: the case (none: a stand-alone consultation)
    topic: Text = ""  # invite: what the session is about
    label: Name | None = None  # invite, join: the window or desk, never a person
    data: Annotated[bytes, Field(max_length=MAX_DATA)] = b""  # sdp, ice: the browser's JSON
    outcome: Outcome | None = None  # end


class SignedSignal(Wire):
    """A signal as it travels: its canonical bytes and the sender's signature over
    ``TAG_SIGNAL || signal``."""

    signal: Annotated[bytes, Field(max_length=MAX_DATA + 4096)]
    key: Annotated[str, Field(pattern=r"^ed25519:[0-9a-f]{16}$")]
    sig: Annotated[bytes, Field(min_length=64, max_length=64)]
