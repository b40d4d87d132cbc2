"""Reason codes and the exception tree of the protocol core.

Every refusal that crosses between regions or reaches a person carries a stable
reason code (``Reason``) and a message in Chinese and English. Codes never change
meaning once published; new ones are only added.

Exception tree (who is at fault decides the class)::

    ProtocolError                    base; .reason, .detail, .zh, .en
    ├── LocalProtocolError           we (or our staff) asked for something not allowed
    └── RemoteProtocolError          the peer sent something we refuse
        └── DecodeError              the bytes are not a valid canonical message

``LocalProtocolError`` is a bug or a staff mistake on our side and is never sent to
a peer. ``RemoteProtocolError`` is answered with a signed ``rejection`` message that
carries the same reason code. Foreign exceptions (msgpack, pydantic) are translated
at the boundary with ``raise ... from exc`` so callers only ever catch ours.
"""

from __future__ import annotations

import enum

__all__ = [
    "DecodeError",
    "LocalProtocolError",
    "ProtocolError",
    "Reason",
    "RemoteProtocolError",
]


class Reason(enum.Enum):
    """Stable reason codes: ``(code, Chinese message, English message, transient)``.

    ``transient`` reasons may succeed when the same message is delivered again later
    (the transport naks with a delay); all others are final (the transport terms).
    """

    MALFORMED = ("malformed", "报文格式错误，无法解析", "message bytes could not be parsed", False)
    NON_CANONICAL = (
        "non_canonical",
        "报文不是规范编码",
        "message is not in canonical encoding",
        False,
    )
    TOO_LARGE = ("too_large", "报文超过大小限制", "message exceeds the size limit", False)
    TOO_DEEP = ("too_deep", "报文嵌套层级过深", "message nesting is too deep", False)
    UNSUPPORTED_VERSION = (
        "unsupported_version",
        "不支持的协议版本",
        "unsupported protocol version",
        False,
    )
    UNKNOWN_KIND = ("unknown_kind", "未知的报文类型", "unknown message kind", False)
    INVALID_FIELD = ("invalid_field", "报文字段不合规", "a message field is invalid", False)
    BAD_SIGNATURE = ("bad_signature", "签名验证失败", "signature does not verify", False)
    UNKNOWN_KEY = ("unknown_key", "未登记的密钥", "key is not registered", False)
    KEY_NOT_VALID = (
        "key_not_valid",
        "密钥不在有效期内或已吊销",
        "key is outside its validity period or revoked",
        False,
    )
    NOT_A_MEMBER = (
        "not_a_member",
        "发送方不是通办圈的有效成员",
        "sender is not an active member of the circle",
        False,
    )
    WRONG_RECIPIENT = (
        "wrong_recipient",
        "报文的接收方不是本地区",
        "message is addressed to another region",
        False,
    )
    DECRYPTION_FAILED = ("decryption_failed", "报文解密失败", "message could not be decrypted", False)
    INVALID_TRANSITION = (
        "invalid_transition",
        "当前办件状态不允许该操作",
        "the case's state does not allow this event",
        False,
    )
    OUT_OF_ORDER = (
        "out_of_order",
        "报文先于其前序报文到达，稍后重试",
        "message arrived before its predecessor; retry later",
        True,
    )
    CHAIN_BROKEN = ("chain_broken", "回执链校验失败", "receipt chain does not verify", False)
    WITHDRAWAL_TOO_LATE = (
        "withdrawal_too_late",
        "已作出受理决定，不能撤回",
        "the decision has been made; withdrawal is no longer possible",
        False,
    )
    NOT_AUTHORISED = (
        "not_authorised",
        "该事项未授权收件地作出受理决定",
        "the catalog entry does not authorise the collecting window to decide",
        False,
    )
    UNKNOWN_MATTER = (
        "unknown_matter",
        "办理地事项清单中没有该事项或该版本",
        "the handling region's catalog has no such matter or version",
        False,
    )
    NO_ROUTE = (
        "no_route",
        "没有可送达或可办理的地区（无路由）",
        "no region can be reached or can handle this (no route)",
        False,
    )

    def __init__(self, code: str, zh: str, en: str, transient: bool) -> None:
        self.code = code
        self.zh = zh
        self.en = en
        self.transient = transient


class ProtocolError(Exception):
    """Base of every error the protocol core raises."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.code}: {reason.en}" + (f" ({detail})" if detail else ""))

    @property
    def zh(self) -> str:
        return self.reason.zh + (f"（{self.detail}）" if self.detail else "")

    @property
    def en(self) -> str:
        return self.reason.en + (f" ({self.detail})" if self.detail else "")


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class DecodeError(RemoteProtocolError):
    """Bytes that are not a valid canonical message. The only error the decoder raises."""
