"""NATS JetStream transport: every NATS call of the project is in this module.

Theory of operation
-------------------
Each region owns one JetStream stream, its **inbox** ``TB_IN_<region>`` over the
subjects ``tb.<region>.in.<kind>``, and reads it with the durable pull consumer
``node``. A sender publishes to the recipient's subject with ``Nats-Msg-Id`` set to
the message id, so JetStream drops a republished duplicate within its window and
the recipient's SQLite drops it after that.

Acknowledgements follow the engine's results: ``ack`` only once the transaction
with the message's effects is on disk; ``nak`` with a delay for transient errors
(a message that arrived before its predecessor); ``term`` for poison (recorded as
rejected by the engine, visible to operators).

nats-py facts this relies on (../shared/reference/nats-notes.md §1.4):
``publish_async`` futures can hang forever (nats.py#985), so every one is awaited
under a timeout and the message is republished later with the same id; reconnects
are unlimited; after a server restart that lost its state, the stream and the
consumer are created again (``_ensure_inbox`` on consumer errors).

The circle's matter catalogs live in one KV bucket, ``TB_CATALOG``, keyed
``<region>.<实施编码>``; ``watch_catalog`` follows it (every current value first,
then each change) with a pull consumer of its own, made again after a reconnect
(nats-py's KV watchers recover slowly after a server restart, nats-notes §1.4).

The shared buckets (catalog, registry) may live elsewhere than the node's own
JetStream (``NatsConfig.shared_prefix``): in the hub's domain, or imported from
the circle's exchange account under ``tb.circle.api`` (``node.natsauth``). Every
bucket call then goes through that API prefix, and a KV write is published to
``<prefix>.$KV.<bucket>.<key>`` (``$KV.>`` itself does not cross a leaf connection
between domains). Materials are written into the recipient's object store by
publishing its chunk and meta subjects (``$O.<bucket>.C.<nuid>``, ``$O.<bucket>.M.<name>``)
with a PubAck for each, the way nats-py's ``ObjectStore.put`` does, but without
its JetStream API calls on the recipient's stream: a sender only needs to publish
there, never to read, whichever domain and account the store is in.

``push_account`` (a new member's account JWT to the running hub) and
``ensure_shared_buckets`` (made once by the exchange account) are the operator's
calls for a multi-server topology (``tongban topology``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import nats
import nats.errors
import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    ObjectInfo,
    ObjectMetaOptions,
    ObjectStoreConfig,
    StorageType,
    StreamConfig,
)

from config.models import NatsConfig

__all__ = ["CATALOG_BUCKET", "CIRCLE_BUCKET", "CatalogUpdate", "Inbound", "NatsTransport", "Transport",
           "ensure_shared_buckets", "inbox_stream", "push_account"]

log = logging.getLogger("tongban.transport")


def inbox_stream(region: str) -> str:
    return f"TB_IN_{region}"


def materials_bucket(region: str) -> str:
    return f"TB_MAT_{region}"


CATALOG_BUCKET = "TB_CATALOG"
#: The circle's signed member registry, under the key ``registry``.
CIRCLE_BUCKET = "TB_CIRCLE"

#: A change in the catalog bucket: (key, value), value ``None`` for a deletion.
CatalogUpdate = tuple[str, bytes | None]

#: Chunk size of materials in an object store (nats-py's default).
MATERIAL_CHUNK = 128 * 1024


def _connect_options(settings: NatsConfig) -> dict[str, Any]:
    """Credentials and TLS of a connection, as ``nats.connect`` takes them."""
    options: dict[str, Any] = {"connect_timeout": settings.connect_timeout_s}
    if settings.credentials is not None:
        options["user_credentials"] = str(settings.credentials)
    if settings.tls is not None:
        context = ssl.create_default_context(cafile=str(settings.tls.ca))
        if settings.tls.cert is not None:
            context.load_cert_chain(str(settings.tls.cert), str(settings.tls.key))
        options["tls"] = context
    return options


async def _forbid_rollups(js: Any, stream: str) -> None:
    """A publish carrying ``Nats-Rollup`` empties a stream (or a subject of it), and
    NATS permissions look only at subjects: a region allowed to write its own catalog
    key could otherwise wipe every region's. Nothing here purges, so the buckets and
    object stores refuse rollups."""
    info = await js.stream_info(stream)
    if info.config.allow_rollup_hdrs:
        await js.update_stream(dataclasses.replace(info.config, allow_rollup_hdrs=False))


def _bucket_config(bucket: str, max_value_bytes: int, replicas: int = 1) -> KeyValueConfig:
    return KeyValueConfig(bucket=bucket, history=10, storage=StorageType.FILE,
                          max_value_size=max_value_bytes, replicas=replicas,
                          description=f"tongban {bucket} (signed values)")


class Inbound(Protocol):
    msg_id: str
    data: bytes

    async def ack(self) -> None: ...
    async def nak(self, delay: float) -> None: ...
    async def term(self) -> None: ...


class Transport(Protocol):
    connected: bool

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def fetch(self, batch: int, timeout: float) -> list[Inbound]: ...
    async def publish(self, items: Sequence[tuple[str, str, bytes]], timeout: float) -> list[str]:
        """Publish ``(msg_id, subject, data)`` items; return the ids JetStream acknowledged."""
        ...

    async def put_material(self, recipient: str, name: str, path: Path) -> None: ...
    async def get_material(self, name: str, path: Path) -> None: ...
    async def put_values(self, bucket: str, items: Sequence[CatalogUpdate]) -> None: ...
    def rewatch(self, bucket: str) -> None: ...
    def stopping(self) -> None: ...
    async def delete_value(self, bucket: str, key: str) -> None: ...
    async def watch_bucket(
        self, bucket: str, handle: Callable[[list[CatalogUpdate], bool], Awaitable[None]]) -> None: ...
    async def listen_signals(self, handle: Callable[[bytes], Awaitable[None]]) -> None: ...
    async def send_signal(self, region: str, data: bytes) -> None: ...
    async def listen_heartbeats(self, handle: Callable[[str, bytes], Awaitable[None]]) -> None: ...
    async def send_heartbeat(self, data: bytes) -> None: ...


class _NatsInbound:
    __slots__ = ("_msg", "data", "msg_id")

    def __init__(self, msg: Any) -> None:
        self._msg = msg
        self.data: bytes = msg.data
        headers = msg.headers or {}
        self.msg_id: str = headers.get("Nats-Msg-Id") or f"seq-{msg.metadata.sequence.stream}"

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay: float) -> None:
        await self._msg.nak(delay=delay)

    async def term(self) -> None:
        await self._msg.term()


class NatsTransport:
    def __init__(self, region: str, urls: list[str], settings: NatsConfig, *,
                 max_message_bytes: int = 1 << 20, max_inflight: int = 2000,
                 ack_wait_s: float = 10.0) -> None:
        self.region = region
        self.urls = urls
        self.settings = settings
        self.max_message_bytes = max_message_bytes
        self.max_inflight = max_inflight
        self.ack_wait_s = ack_wait_s
        self.connected = False
        self._closing = False
        self._nc: Any = None
        self._js: Any = None
        self._shared_js: Any = None  # the shared buckets' JetStream API (maybe elsewhere)
        self._sub: Any = None
        self._ensure_lock = asyncio.Lock()
        #: Counts reconnects (all buckets) and ``rewatch`` calls (one bucket): each bucket
        #: watch starts again when its number differs from the one it started with.
        self._reconnect_round = 0
        self._rewatch_rounds: dict[str, int] = {}
        self.published = 0
        self.fetched = 0
        #: Messages waiting in the inbox stream for the node, as of the last fetch
        #: (JetStream's ``num_pending``; 0 after a fetch that found none): node.metrics.
        self.inbox_pending = 0

    @property
    def reconnects(self) -> int:
        """Reconnects to NATS since the start (node.metrics)."""
        return self._reconnect_round

    def __repr__(self) -> str:
        return (f"<NatsTransport {self.region} connected={self.connected} "
                f"published={self.published} fetched={self.fetched}>")

    async def start(self) -> None:
        options: dict[str, Any] = {
            "servers": self.urls,
            "name": f"tongban-{self.region}",
            "max_reconnect_attempts": -1,  # never give up (nats-notes §1.2)
            "reconnect_time_wait": 0.5,
            "ping_interval": self.settings.ping_interval_s,
            "max_outstanding_pings": 3,
            "allow_reconnect": True,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            **_connect_options(self.settings),
        }
        self._nc = await nats.connect(**options)
        self.connected = True
        self._js = self._nc.jetstream(domain=self.settings.domain,
                                      publish_async_max_pending=self.max_inflight)
        shared = self.settings.shared_prefix
        self._shared_js = self._js if shared is None else self._nc.jetstream(prefix=shared)
        await self._ensure_inbox()
        await self._ensure_materials()

    async def close(self) -> None:
        self._closing = True
        if self._nc is not None and not self._nc.is_closed:
            # Not wait_for: on a timeout it waits for the cancelled close to finish, and
            # a close stuck inside nats-py would hold the node's shutdown forever.
            closing = asyncio.ensure_future(self._nc.close())
            done, _ = await asyncio.wait({closing}, timeout=5)
            if not done:
                closing.cancel()
                log.warning("the NATS connection did not close within 5 s; leaving it")
            elif closing.exception() is not None:
                log.warning("closing the NATS connection: %s", closing.exception())
        self.connected = False

    async def _ensure_inbox(self) -> None:
        async with self._ensure_lock:
            stream = inbox_stream(self.region)
            config = StreamConfig(
                name=stream,
                subjects=[f"tb.{self.region}.in.>"],
                storage=StorageType.FILE,
                duplicate_window=120.0,
                max_msg_size=self.max_message_bytes + 4096,
            )
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self._js.update_stream(config)
            await self._js.add_consumer(stream, ConsumerConfig(
                durable_name="node",
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.ack_wait_s,
                max_ack_pending=20_000,
            ))
            self._sub = await self._js.pull_subscribe_bind("node", stream=stream)

    async def fetch(self, batch: int, timeout: float) -> list[Inbound]:
        if self._sub is None:
            await asyncio.sleep(timeout)
            return []
        try:
            messages = await self._sub.fetch(batch, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            self.inbox_pending = 0
            return []
        except (nats.js.errors.NotFoundError, nats.js.errors.ServiceUnavailableError,
                nats.errors.NoRespondersError) as exc:
            log.warning("inbox consumer unavailable (%s); creating it again", exc)
            await self._recreate(timeout)
            return []
        except (nats.errors.ConnectionClosedError, nats.errors.Error) as exc:
            log.warning("fetch failed: %s", exc)
            await asyncio.sleep(min(timeout, 1.0))
            return []
        self.fetched += len(messages)
        with contextlib.suppress(Exception):  # a message without JetStream metadata: no count
            self.inbox_pending = messages[-1].metadata.num_pending
        return [_NatsInbound(m) for m in messages]

    async def _recreate(self, pause: float) -> None:
        try:
            await self._ensure_inbox()
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("cannot create the inbox yet: %s", exc)
            await asyncio.sleep(min(pause, 1.0))

    async def publish(self, items: Sequence[tuple[str, str, bytes]], timeout: float,
                      dedup: bool = True) -> list[str]:
        """Publish ``(msg_id, subject, data)`` items; the ids JetStream acknowledged.
        ``dedup``: send the id as ``Nats-Msg-Id`` (inbox messages; not KV values)."""
        if len(items) > self.max_inflight:
            raise ValueError(f"publish at most {self.max_inflight} messages at a time")
        futures: list[tuple[str, asyncio.Future[Any]]] = []
        for msg_id, subject, data in items:
            try:
                # No stall wait: callers publish at most max_inflight at a time and settle
                # each future (done or cancelled) before the next call, so the semaphore
                # never blocks; a wait_stall would cost a task per message.
                future = await self._js.publish_async(
                    subject, data, headers={"Nats-Msg-Id": msg_id} if dedup else None,
                    wait_stall=None)
            except (nats.errors.Error, nats.js.errors.TooManyStalledMsgsError) as exc:
                log.warning("publish of %s failed: %s", msg_id, exc)
                break
            futures.append((msg_id, future))
        if futures:  # one timeout for the lot: no wrapper task per message
            await asyncio.wait([f for _, f in futures], timeout=timeout)
        acked = []
        for msg_id, future in futures:
            if not future.done():
                future.cancel()
                log.debug("no PubAck for %s in %g s", msg_id, timeout)
            elif future.cancelled() or future.exception() is not None:
                log.debug("no PubAck for %s: %r", msg_id,
                          None if future.cancelled() else future.exception())
            else:
                acked.append(msg_id)
        self.published += len(acked)
        return acked

    # ---------------------------------------------------------------- materials

    async def _ensure_materials(self) -> None:
        with contextlib.suppress(nats.js.errors.BadRequestError):  # it exists already
            await self._js.create_object_store(
                bucket=materials_bucket(self.region),
                config=ObjectStoreConfig(storage=StorageType.FILE,
                                         description="tongban materials (ciphertext only)"))
        await _forbid_rollups(self._js, f"OBJ_{materials_bucket(self.region)}")

    async def put_material(self, recipient: str, name: str, path: Path, timeout: float = 10.0) -> None:
        """Stream an encrypted file into the recipient's materials bucket: its chunks,
        then its meta record (what makes it visible), each acknowledged by JetStream.
        Object names are never reused, so there is no earlier version to look up or
        purge; chunks of an attempt that failed midway stay unreferenced."""
        bucket = materials_bucket(recipient)
        nuid = secrets.token_hex(11)
        digest = hashlib.sha256()
        size = chunks = 0
        try:
            with open(path, "rb") as source:  # noqa: ASYNC230 (read in a thread, chunk by chunk)
                while chunk := await asyncio.to_thread(source.read, MATERIAL_CHUNK):
                    digest.update(chunk)
                    await self._js.publish(f"$O.{bucket}.C.{nuid}", chunk, timeout=timeout)
                    size += len(chunk)
                    chunks += 1
            info = ObjectInfo(
                name=name, bucket=bucket, nuid=nuid, size=size, chunks=chunks,
                mtime=datetime.datetime.now(datetime.UTC).isoformat(),
                digest="SHA-256=" + base64.urlsafe_b64encode(digest.digest()).decode(),
                options=ObjectMetaOptions(max_chunk_size=MATERIAL_CHUNK))
            meta = f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
            await self._js.publish(meta, json.dumps(info.as_dict()).encode(), timeout=timeout)
        except (nats.errors.Error, TimeoutError) as exc:
            raise ConnectionError(f"material {name} to {recipient}: {exc}") from exc

    async def get_material(self, name: str, path: Path) -> None:
        """Stream a material of our own bucket into ``path`` (FileNotFoundError if absent)."""
        partial = path.with_suffix(".part")
        try:
            store = await self._js.object_store(materials_bucket(self.region))
            with open(partial, "wb") as target:  # noqa: ASYNC230 (nats-py writes in a thread)
                await store.get(name, writeinto=target)
        except (nats.js.errors.ObjectNotFoundError, nats.js.errors.ObjectDeletedError) as exc:
            partial.unlink(missing_ok=True)
            raise FileNotFoundError(name) from exc
        except (nats.errors.Error, TimeoutError) as exc:
            partial.unlink(missing_ok=True)
            raise ConnectionError(f"material {name}: {exc}") from exc
        partial.rename(path)

    async def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        """Core NATS request/reply (department adapters on a subject)."""
        try:
            reply = await self._nc.request(subject, data, timeout=timeout)
        except nats.errors.TimeoutError as exc:
            raise TimeoutError(f"no reply on {subject} in {timeout:g} s") from exc
        except nats.errors.NoRespondersError as exc:
            raise ConnectionError(f"nobody listens on {subject}") from exc
        return reply.data  # type: ignore[no-any-return]

    # ---------------------------------------------------------------- video signaling

    async def listen_signals(self, handle: Callable[[bytes], Awaitable[None]]) -> None:
        """Hand every signal sent to this region (``tb.<region>.rtc``) to ``handle``.

        Core NATS, not JetStream: a signal is worth something for seconds only, so it
        is delivered at most once and never stored (docs/protocol.md §15). nats-py
        subscribes again by itself after a reconnect."""
        async def deliver(msg: Any) -> None:
            await handle(msg.data)

        await self._nc.subscribe(f"tb.{self.region}.rtc", cb=deliver)

    async def send_signal(self, region: str, data: bytes) -> None:
        """Send one signal to ``region``; ``ConnectionError`` when NATS is not connected."""
        await self._publish_core(f"tb.{region}.rtc", data)

    async def listen_heartbeats(self, handle: Callable[[str, bytes], Awaitable[None]]) -> None:
        """Hand every partner's heartbeat (``tb.*.health``, core NATS) to ``handle``, with
        the subject it came on."""
        async def deliver(msg: Any) -> None:
            await handle(msg.subject, msg.data)

        await self._nc.subscribe("tb.*.health", cb=deliver)

    async def send_heartbeat(self, data: bytes) -> None:
        await self._publish_core(f"tb.{self.region}.health", data)

    async def _publish_core(self, subject: str, data: bytes) -> None:
        if not self.connected or self._nc is None or self._nc.is_closed:
            raise ConnectionError("NATS is not connected")
        try:
            await self._nc.publish(subject, data)
        except nats.errors.Error as exc:
            raise ConnectionError(f"{subject}: {exc}") from exc

    # ---------------------------------------------------------------- catalog

    async def _bucket(self, bucket: str) -> Any:
        try:
            return await self._shared_js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):  # made meanwhile
                await self._shared_js.create_key_value(
                    config=_bucket_config(bucket, self.max_message_bytes))
                await _forbid_rollups(self._shared_js, f"KV_{bucket}")
            return await self._shared_js.key_value(bucket)

    def _kv_subject(self, bucket: str, key: str) -> str:
        shared = self.settings.shared_prefix
        return f"$KV.{bucket}.{key}" if shared is None else f"{shared}.$KV.{bucket}.{key}"

    def stopping(self) -> None:
        """The node is stopping: bucket watches end at their next turn. (A cancellation
        alone may not end them: under Python 3.11 ``asyncio.wait_for``, which nats-py's
        fetches use, can lose one that arrives as a message does.)"""
        self._closing = True

    def rewatch(self, bucket: str) -> None:
        """Start a bucket's watch again from the values it holds (its handler looks again
        at what it refused, e.g. after the circle's keys changed)."""
        self._rewatch_rounds[bucket] = self._rewatch_rounds.get(bucket, 0) + 1

    def _watch_round(self, bucket: str) -> tuple[int, int]:
        return self._reconnect_round, self._rewatch_rounds.get(bucket, 0)

    async def delete_value(self, bucket: str, key: str) -> None:
        """A KV delete marker (what nats-py's ``KeyValue.delete`` publishes)."""
        try:
            await self._bucket(bucket)
            await self._js.publish(self._kv_subject(bucket, key), b"",
                                   headers={"KV-Operation": "DEL"}, timeout=10.0)
        except (nats.errors.Error, TimeoutError) as exc:
            raise ConnectionError(f"bucket {bucket}: {exc}") from exc

    async def put_values(self, bucket: str, items: Sequence[CatalogUpdate]) -> None:
        """Put ``(key, value)`` items in a KV bucket, many in flight at once (a KV put is a
        JetStream publish to ``$KV.<bucket>.<key>``); ``ConnectionError`` unless every one
        was stored."""
        try:
            await self._bucket(bucket)  # the bucket exists
        except (nats.errors.Error, TimeoutError) as exc:
            raise ConnectionError(f"bucket {bucket}: {exc}") from exc
        for start in range(0, len(items), self.max_inflight):
            chunk = items[start:start + self.max_inflight]
            acked = await self.publish(
                [(f"kv-{key}-{start + i}", self._kv_subject(bucket, key), value or b"")
                 for i, (key, value) in enumerate(chunk)], timeout=10.0, dedup=False)
            if len(acked) < len(chunk):
                raise ConnectionError(f"{len(chunk) - len(acked)} values were not stored in {bucket}")

    async def watch_bucket(
            self, bucket: str, handle: Callable[[list[CatalogUpdate], bool], Awaitable[None]]
    ) -> None:
        """Call ``handle(updates, caught_up)`` with every value of a KV bucket, in
        batches, then with each change; forever. ``caught_up`` is True once the values
        present at the start have all been handed over.

        Not nats-py's KV watcher: its ordered push consumer stalled under a circle's
        361,570 values (flow control behind a slow callback). An ephemeral **pull**
        consumer on the bucket's stream (every value the bucket keeps, so the earlier
        versions a case may be pinned to as well, then new ones) is paced
        by our own fetches. After a reconnect it is made again, from the current
        values (the handler drops what it knows)."""
        while not self._closing:
            started = self._watch_round(bucket)
            try:
                await self._bucket(bucket)
                sub = await self._shared_js.pull_subscribe(
                    f"$KV.{bucket}.>", stream=f"KV_{bucket}",
                    config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL,  # the kept history too
                                          ack_policy=AckPolicy.NONE, inactive_threshold=300.0))
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("cannot follow bucket %s yet: %s", bucket, exc)
                await asyncio.sleep(1.0)
                continue
            try:
                await self._follow(sub, bucket, handle, started)
            finally:
                # Bounded, and not awaited past its time: an unsubscribe right after a
                # fetch was cancelled (the node stopping) must not hold the shutdown.
                leaving = asyncio.ensure_future(sub.unsubscribe())
                await asyncio.wait({leaving}, timeout=2.0)
                if not leaving.done():
                    leaving.cancel()
                elif not leaving.cancelled() and leaving.exception() is not None:
                    log.debug("unsubscribe from %s: %s", bucket, leaving.exception())
            log.info("watch of %s starts again", bucket)

    async def _follow(self, sub: Any, bucket: str,
                      handle: Callable[[list[CatalogUpdate], bool], Awaitable[None]],
                      started: tuple[int, int]) -> None:
        prefix = f"$KV.{bucket}."
        caught_up = False
        while self._watch_round(bucket) == started and not self._closing:
            try:
                # Once caught up, wait for one value: a fetch of many that has one waits
                # out its whole timeout for more (nats-py); then take what else is there.
                messages = await sub.fetch(1 if caught_up else 1000, timeout=1.0)
                if caught_up:
                    with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):
                        messages += await sub.fetch(999, timeout=0.003)
            except (nats.errors.TimeoutError, TimeoutError):
                if not caught_up:  # nothing was there at all
                    caught_up = True
                    await handle([], True)
                continue
            except (nats.js.errors.NotFoundError, nats.js.errors.ServiceUnavailableError,
                    nats.errors.NoRespondersError, nats.errors.ConnectionClosedError) as exc:
                log.warning("consumer of %s lost (%s); making it again", bucket, exc)
                return
            batch: list[CatalogUpdate] = []
            for message in messages:
                operation = (message.headers or {}).get("KV-Operation")
                batch.append((message.subject[len(prefix):], None if operation else message.data))
            caught_up = caught_up or messages[-1].metadata.num_pending == 0
            await handle(batch, caught_up)

    # ---------------------------------------------------------------- callbacks

    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS: %s", exc)

    async def _on_disconnected(self) -> None:
        self.connected = False
        if not self._closing:
            log.warning("NATS disconnected; reconnecting")

    async def _on_reconnected(self) -> None:
        self.connected = True
        self._reconnect_round += 1
        log.info("NATS reconnected")
        asyncio.get_running_loop().create_task(self._recreate(1.0))



# -------------------------------------------------------------------- operator calls

async def _quiet(exc: Exception) -> None:
    """Errors of a one-off connection surface as its exceptions, not as log tracebacks."""
    log.debug("NATS: %s", exc)


async def _connect_once(urls: list[str], settings: NatsConfig) -> Any:
    try:
        return await nats.connect(servers=urls, allow_reconnect=False, max_reconnect_attempts=1,
                                  error_cb=_quiet, **_connect_options(settings))
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise ConnectionError(f"cannot connect to {', '.join(urls)}: {exc}") from exc


async def push_account(urls: list[str], settings: NatsConfig, account_jwt: str,
                       timeout: float = 5.0) -> str:
    """Send an account JWT to the running servers (``$SYS.REQ.CLAIMS.UPDATE``) with a
    system-account user's credentials; their full resolvers store it and share it in
    the cluster, and the account is usable at once, without a restart. Returns the
    server's message; ``ValueError`` if it refused the JWT."""
    client = await _connect_once(urls, settings)
    try:
        reply = await client.request("$SYS.REQ.CLAIMS.UPDATE", account_jwt.encode(), timeout=timeout)
    except (nats.errors.Error, TimeoutError) as exc:
        raise ConnectionError(f"no answer to the account update: {exc}") from exc
    finally:
        await client.close()
    try:
        answer = json.loads(reply.data)
    except ValueError as exc:
        raise ValueError(f"unreadable answer to the account update: {reply.data[:200]!r}") from exc
    if "error" in answer:
        raise ValueError(str(answer["error"].get("description", answer["error"])))
    return str(answer.get("data", {}).get("message", "jwt updated"))


async def ensure_shared_buckets(urls: list[str], settings: NatsConfig, *, max_value_bytes: int = 1 << 20,
                                replicas: int = 1, timeout: float = 10.0) -> list[str]:
    """Create the circle's shared KV buckets where ``settings`` lead (the exchange
    account on the hub) unless they exist; the names of those created."""
    client = await _connect_once(urls, settings)
    made = []
    try:
        js = client.jetstream(domain=settings.domain, timeout=timeout)
        for bucket in (CATALOG_BUCKET, CIRCLE_BUCKET):
            try:
                await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                await js.create_key_value(config=_bucket_config(bucket, max_value_bytes, replicas))
                made.append(bucket)
            await _forbid_rollups(js, f"KV_{bucket}")
    except (nats.errors.Error, TimeoutError) as exc:
        raise ConnectionError(f"shared buckets: {exc}") from exc
    finally:
        await client.close()
    return made
