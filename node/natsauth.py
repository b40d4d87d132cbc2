"""NATS decentralized auth for a circle: NKeys, JWTs, .creds and who may do what.

Pure code: nothing here touches the network or a server. ``node.topology`` writes
what is minted here into a folder; ``node.transport.push_account`` sends an account
JWT to the running hub.

Theory of operation
-------------------
The circle's **operator** (held by the convener / hub operator) signs account JWTs;
the servers trust only the operator JWT. Every region owns an **account**: it makes
the account NKey itself and keeps the seed; the operator signs the account's JWT
from the public key alone (``Member.nats_account`` in the circle registry); the
region signs its own users' JWTs (its node, its leaf server) with the account seed.
A **system account** is used only to push account JWTs (``$SYS.REQ.CLAIMS.UPDATE``).

One more account, the circle's **exchange** (held by the operator), sits between
the regions on the hub. Every region account carries the same *static* imports
from it, and nothing else refers to a region by name, so admitting a region means
pushing **its own account JWT only**: no other JWT changes, no server restarts::

    C's node ─► C's leaf ─► hub: account C ──service import tb.*.in.>──► exchange
                                                                          │ stream import tb.H.in.>
    H's node ◄─ H's leaf ◄─ hub: account H ◄──────────────────────────────┘
      (stream TB_IN_H in H's leaf's JetStream domain stores it and answers the PubAck
       to the reply subject _R_.…; H's service import _R_.> carries that back into the
       exchange, where the service import's response mapping returns it to C)

What a region's account imports from the exchange (``region_account_claims``;
the table with reasons is in docs/topology.md): services ``tb.*.in.>``,
``$O.*.C.>``, ``$O.*.M.>`` (deposit into any member's inbox and materials store),
``_R_.>`` (PubAcks back), ``tb.*.rtc``, ``tb.<R>.health``, its own catalog keys and
join request (the convener: the whole registry bucket) and the read-only calls on
the shared buckets; streams ``tb.<R>.in.>``, ``$O.TB_MAT_<R>.>``, ``tb.<R>.rtc`` and
``tb.*.health``.

The shared buckets (``TB_CATALOG``, ``TB_CIRCLE``) live in the exchange account's
JetStream in the hub's domain. A node reaches them under the API prefix
``tb.circle.api`` (``NatsConfig.shared_api``): stream info, consumer create, fetch
and delete on the two KV streams, nothing else; KV writes go to
``tb.circle.api.$KV.<bucket>.<key>``, mapped by the import to ``$KV.<bucket>.<key>``.

Each region account has two JWTs, both signed by the operator: the **hub JWT**
(imports, no JetStream: a region cannot store anything on the hub) and the **leaf
JWT** its own leaf server preloads (JetStream on, no imports: its inbox and
materials live in the leaf's JetStream domain).

Experiments behind the design (nats-server 2.15.1, loopback, hub + leaves with
JetStream domains, leaves in operator mode with a MEMORY resolver):

* per-pair service exports/imports (C imports ``tb.H.in.>`` from H): delivery and
  PubAck work, but admitting N means re-signing and pushing every member's JWT;
* exchange with chained service imports (region → exchange → region): the
  publisher got 503 "no responders": the chain does not carry the request;
* exchange with a service import in and a stream import out, without ``_R_.>``:
  the message was stored at H but the PubAck never came back (stream imports map
  no replies); adding the ``_R_.>`` service import made the PubAck arrive (1-2 ms)
  and duplicates come back ``duplicate=True``: the design above;
* ``$KV.>`` does not cross a leaf connection between JetStream domains (nats-server
  denies it there; ``$O.>`` does cross), hence the ``tb.circle.api.$KV.…`` mapping;
* import local subjects of the form ``$JS.<hub domain>.API.…`` are taken over by
  the hub's own domain mapping ("JetStream not enabled for account"), hence a
  prefix of our own;
* a region's user without permission limits, on the hub or on its leaf, still gets
  "no responders" for another region's catalog keys, the convener's registry key and
  any call on the shared streams other than the read-only ones (stream delete: 503);
* a new region's hub JWT pushed with ``$SYS.REQ.CLAIMS.UPDATE`` (code 200): its
  leaf connected, and messages flowed both ways with existing members at once;
* for comparison, with one account shared by all regions, a leaf client reads the
  hub's buckets with the domain prefix ``$JS.HUB.API`` and writes them through
  ``$JS.HUB.API.$KV.<bucket>.<key>`` (``NatsConfig.shared_domain``).

The trade-off: the exchange exports ``_R_.>`` to every region, so a region that
learned the reply subject of a publish still waiting for its PubAck could answer
in the stream's place; reply subjects are random, and a region sees only those of
messages sent to itself.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import nkeys

__all__ = [
    "SHARED_API",
    "SHARED_BUCKETS",
    "KeyPair",
    "creds_text",
    "exchange_account_claims",
    "jwt_claims",
    "mint_account",
    "mint_operator",
    "mint_user",
    "new_key",
    "node_permissions",
    "region_account_claims",
    "system_account_claims",
    "write_private",
]

#: JetStream API prefix (and KV write prefix) under which a region reaches the shared buckets.
SHARED_API = "tb.circle.api"
SHARED_BUCKETS = ("TB_CATALOG", "TB_CIRCLE")

_PREFIX = {"operator": nkeys.PREFIX_BYTE_OPERATOR, "account": nkeys.PREFIX_BYTE_ACCOUNT,
           "user": nkeys.PREFIX_BYTE_USER}
_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
              "wildcards": True, "conn": -1, "leaf": -1}
_JETSTREAM = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}


# ------------------------------------------------------------------ keys and JWTs

@dataclasses.dataclass(frozen=True)
class KeyPair:
    """An NKey: ``public`` (O…, A…, U…) and, when we hold it, ``seed`` (SO…, SA…, SU…)."""

    public: str
    seed: str | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_seed(cls, seed: str) -> KeyPair:
        try:
            pair = nkeys.from_seed(seed.strip().encode())
        except Exception as exc:  # nkeys raises its own and binascii errors
            raise ValueError(f"not an NKey seed: {exc}") from exc
        return cls(public=pair.public_key.decode(), seed=seed.strip())

    def sign(self, data: bytes) -> bytes:
        if self.seed is None:
            raise ValueError(f"no seed for {self.public}: cannot sign")
        signature: bytes = nkeys.from_seed(self.seed.encode()).sign(data)
        return signature


def new_key(kind: str) -> KeyPair:
    """A fresh ``operator``, ``account`` or ``user`` NKey."""
    return KeyPair.from_seed(nkeys.encode_seed(os.urandom(32), _PREFIX[kind]).decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def mint_jwt(issuer: KeyPair, subject: str, name: str, nats: dict[str, Any], *,
             issued_at: int | None = None) -> str:
    """A JWT as nats-server 2.x reads it (nats-io/jwt v2): header ``ed25519-nkey``;
    ``jti`` is base32 of SHA-512/256 over the claims with an empty ``jti``; the
    signature covers ``b64url(header).b64url(claims)``."""
    claims: dict[str, Any] = {"jti": "", "iat": int(time.time()) if issued_at is None else issued_at,
                              "iss": issuer.public, "name": name, "sub": subject, "nats": nats}
    claims["jti"] = base64.b32encode(hashlib.new("sha512_256", _json(claims)).digest()
                                     ).rstrip(b"=").decode()
    signing_input = f"{_b64(_json({'typ': 'JWT', 'alg': 'ed25519-nkey'}))}.{_b64(_json(claims))}"
    return f"{signing_input}.{_b64(issuer.sign(signing_input.encode()))}"


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT (not verified: for reading our own files)."""
    body = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return claims


def mint_operator(operator: KeyPair, system_account: str, name: str) -> str:
    return mint_jwt(operator, operator.public, name,
                    {"type": "operator", "version": 2, "system_account": system_account})


def mint_account(operator: KeyPair, account: str, name: str, claims: dict[str, Any]) -> str:
    return mint_jwt(operator, account, name, claims)


def mint_user(account: KeyPair, user: KeyPair, name: str,
              permissions: dict[str, Any] | None = None) -> str:
    """A user of ``account``; ``permissions`` as in the JWT (``pub``, ``sub``, ``resp``)."""
    nats: dict[str, Any] = {"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1}
    nats.update(permissions or {})
    return mint_jwt(account, user.public, name, nats)


def creds_text(user_jwt: str, user_seed: str) -> str:
    """A ``.creds`` file as nats-py ``user_credentials=`` and nats-server read it."""
    return ("-----BEGIN NATS USER JWT-----\n" f"{user_jwt}\n" "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            "-----BEGIN USER NKEY SEED-----\n" f"{user_seed}\n" "------END USER NKEY SEED------\n")


def write_private(path: Path, text: str) -> None:
    """Write a secret (seed, .creds, private key) with mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


# ------------------------------------------------------------------ the circle's accounts

def _export(subject: str, kind: str, response: str = "Singleton") -> dict[str, Any]:
    export: dict[str, Any] = {"name": subject, "subject": subject, "type": kind}
    if kind == "service":
        export["response_type"] = response
    return export


def _import(account: str, subject: str, kind: str, local: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"name": local or subject, "subject": subject, "account": account,
                             "type": kind}
    if local is not None:
        found["local_subject"] = local
    return found


def _bucket_api() -> list[tuple[str, str, str]]:
    """(exchange subject, region's local subject, response type) of every JetStream
    API call a node makes on the shared buckets: read-only."""
    calls = []
    for bucket in SHARED_BUCKETS:
        stream = f"KV_{bucket}"
        for call, response in ((f"STREAM.INFO.{stream}", "Singleton"),
                               (f"CONSUMER.CREATE.{stream}", "Singleton"),
                               (f"CONSUMER.CREATE.{stream}.>", "Singleton"),
                               (f"CONSUMER.MSG.NEXT.{stream}.*", "Stream"),  # a fetch: many replies
                               (f"CONSUMER.DELETE.{stream}.*", "Singleton")):
            calls.append((f"$JS.API.{call}", f"{SHARED_API}.{call}", response))
    return calls


def _bucket_writes(region: str, convener: bool) -> list[str]:
    return [f"$KV.TB_CATALOG.{region}.>",
            "$KV.TB_CIRCLE.>" if convener else f"$KV.TB_CIRCLE.join.{region}"]


def system_account_claims() -> dict[str, Any]:
    """The system account: no JetStream; its users push account JWTs."""
    return {"type": "account", "version": 2, "limits": dict(_UNLIMITED)}


def exchange_account_claims() -> dict[str, Any]:
    """The exchange: JetStream (the shared buckets) and the exports every region imports."""
    services = ["tb.*.in.>", "tb.*.rtc", "tb.*.health", "$O.>", "_R_.>", "$KV.TB_CATALOG.>",
                "$KV.TB_CIRCLE.>"]
    exports = [_export(s, "service") for s in services]
    exports += [_export(s, "stream") for s in ("tb.*.in.>", "tb.*.rtc", "tb.*.health", "$O.>")]
    exports += [_export(s, "service", response) for s, _, response in _bucket_api()]
    return {"type": "account", "version": 2, "limits": {**_UNLIMITED, **_JETSTREAM},
            "exports": exports}


def region_account_claims(region: str, exchange: str, *, convener: bool, leaf: bool) -> dict[str, Any]:
    """A region account's claims: the hub's copy (``leaf=False``: the imports, no
    JetStream) or its leaf's copy (``leaf=True``: JetStream, nothing imported)."""
    if leaf:
        return {"type": "account", "version": 2, "limits": {**_UNLIMITED, **_JETSTREAM}}
    imports = [_import(exchange, s, "service") for s in (
        "tb.*.in.>", "tb.*.rtc", f"tb.{region}.health", "$O.*.C.>", "$O.*.M.>", "_R_.>")]
    imports += [_import(exchange, s, "service", f"{SHARED_API}.{s}")
                for s in _bucket_writes(region, convener)]
    imports += [_import(exchange, s, "stream") for s in (
        f"tb.{region}.in.>", f"tb.{region}.rtc", "tb.*.health", f"$O.TB_MAT_{region}.>")]
    imports += [_import(exchange, s, "service", local) for s, local, _ in _bucket_api()]
    return {"type": "account", "version": 2, "limits": _UNLIMITED, "imports": imports}


def node_permissions(region: str, *, convener: bool,
                     extra_publish: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a region's node user may do on its own leaf: consume only its own inbox
    and materials, publish only where the protocol needs. ``extra_publish``: the
    subjects of departments reached over NATS (``NatsDepartment.subject``)."""
    inbox, materials = f"TB_IN_{region}", f"OBJ_TB_MAT_{region}"
    local_api = [
        "$JS.API.INFO", "$JS.API.STREAM.NAMES",  # (an object-store read looks its stream up)
        f"$JS.API.STREAM.*.{inbox}", f"$JS.API.STREAM.*.{materials}",
        f"$JS.API.STREAM.MSG.GET.{materials}",
        f"$JS.API.DIRECT.GET.{materials}", f"$JS.API.DIRECT.GET.{materials}.>",
        f"$JS.API.CONSUMER.*.{inbox}.>", f"$JS.API.CONSUMER.DURABLE.CREATE.{inbox}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{inbox}.>",
        f"$JS.API.CONSUMER.CREATE.{materials}", f"$JS.API.CONSUMER.*.{materials}.>",
        f"$JS.ACK.{inbox}.>", f"$JS.FC.{materials}.>",
    ]
    shared = [local for _, local, _ in _bucket_api()]
    shared += [f"{SHARED_API}.{s}" for s in _bucket_writes(region, convener)]
    protocol = ["tb.*.in.>", "$O.*.C.>", "$O.*.M.>", f"tb.{region}.health", "tb.*.rtc", "_INBOX.>"]
    return {
        "pub": {"allow": [*protocol, *local_api, *shared, *extra_publish],
                "deny": [f"tb.{region}.in.>"]},  # never its own inbox: that would loop
        "sub": {"allow": ["_INBOX.>", f"tb.{region}.rtc", "tb.*.health"]},
    }
