"""``Node``: one region's running node, its workers and their lifetimes.

Theory of operation
-------------------
Work flows through one **processor** task, the only caller of the engine, so a
case is never decided twice at once::

    fetcher ──► queue ◄── commands (staff, API, timers, forwarder)
                  │
             processor: engine.process(batch) → store.commit → ack / nak / term
                  │                                  │
             relay ◄── new outbox rows        forwarder ◄── newly accepted cases

* the **fetcher** pulls the inbox in batches while the queue has room
  (back-pressure: a slow disk slows the fetching, nothing piles up in memory);
* the **processor** takes everything waiting (up to ``limits.commit_batch``),
  runs it through the engine, waits for the group commit, then acknowledges;
* the **relay** publishes outbox rows with bounded in-flight ``publish_async``
  and records PubAcks; what was not acknowledged is published again, same id;
* **timers** fire persisted deadlines (补正 notice, 承诺时限) as commands;
* the **forwarder** hands accepted applications to the department with retries.

Every task belongs to one ``asyncio.TaskGroup``; ``run`` returns only when all of
them have stopped, the transport is closed and the store is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from config import ConfigError
from config.models import NodeConfig
from node.alerts import Alerts
from node.catalog import Catalog
from node.circle import Circle
from node.departments import Handover, forward_with_retries, make_department
from node.engine import Command, Engine, Incoming, Result
from node.health import PartnerHealth
from node.logs import current_region
from node.material_transfers import MaterialTransfers
from node.materials import MaterialShelf
from node.metrics import NodeMetrics
from node.store import Changes, Store
from node.store.catalog import CatalogIndex
from node.store.video import FILENAME as VIDEO_FILENAME
from node.store.video import VideoStore
from node.transport import CATALOG_BUCKET, Inbound, NatsTransport, Transport
from node.video import VirtualWindow
from node.workdays import ChinaCalendar
from protocol import bodies as b
from protocol import decode
from protocol.calendar import WorkingCalendar
from protocol.circle import CircleRegistry
from protocol.fields import date_of
from protocol.joint import withdrawable
from protocol.routes import RouteRefusal, SignedRouteRefusal
from receipts import KeyRecord, KeyRegistry, Postmaster
from receipts.errors import KeyFileError
from receipts.keys import KeyRing
from receipts.registry import records_from_public_json
from receipts.routes import sign_refusal
from routing.catalog_files import read_catalog_path
from routing.router import MemberPath, NoRoute, Offer, Route, Router

__all__ = ["Node", "wall_clock_ms"]

log = logging.getLogger("tongban.node")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Node:
    def __init__(
        self,
        config: NodeConfig,
        *,
        urls: list[str] | None = None,
        transport: Transport | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        calendar: WorkingCalendar | None = None,
    ) -> None:
        self.config = config
        self.region = config.region
        self.clock = clock
        # Every pair still of use (a rotation, §13.1): the circle switches it over.
        self.keys = KeyRing.load(config.key_path, config.region)
        self.registry = KeyRegistry()
        self.registry.add_node(self.keys.current, valid_from=0)
        if config.circle is None:  # partners' keys as configured, until a circle is
            for peer in config.peers:
                for record in _peer_keys(peer.region, peer.public):
                    self.registry.add(record)
        self.postmaster = Postmaster(self.keys, self.registry)
        self.transport: Transport = transport or NatsTransport(
            config.region, urls or list(config.nats.urls), config.nats,
            max_message_bytes=config.limits.max_message_bytes,
            max_inflight=config.limits.outbox_inflight, ack_wait_s=config.limits.ack_wait_s)
        self.circle = None if config.circle is None else Circle(  # checks the anchor first
            config.circle, self.keys, self.registry, self.transport, clock,
            config.data_dir / "circle-registry.bin")
        self.store = Store(config.data_dir / "node.db")
        self.catalog = Catalog(config.region, CatalogIndex(config.data_dir / "catalog.db"),
                               self.transport, self.postmaster, clock)
        self.router = Router(config.region, self._offers,
                             lambda: self.catalog.index.generation)
        if self.circle is None:  # the configured partners, reached directly
            self.router.set_members({p.region: MemberPath("joined") for p in config.peers})
        else:
            self.circle.observers.append(self._members_changed)
            if self.circle.current is not None:
                self._members_changed(self.circle.current)
        self.engine = Engine(region=config.region, postmaster=self.postmaster, store=self.store,
                             calendar=calendar or ChinaCalendar(fallback=True),
                             policy=self.catalog.policy, router=self.router)
        self.departments = [make_department(d, self._department_request)
                            for d in config.departments]
        self._queue: asyncio.Queue[tuple[Incoming | Command, Any]] = asyncio.Queue(
            maxsize=4 * config.limits.commit_batch)
        self._outbox: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
        self._timer_wake = asyncio.Event()
        self.materials = MaterialShelf(config.data_dir / "materials",
                                       config.limits.max_material_bytes)
        self.transfers = MaterialTransfers(self.store, self.materials, self.transport, clock,
                                           config.limits.unused_material_days)
        self._timers_in_flight: set[tuple[str, str]] = set()
        self._forwarding: set[str] = set()
        self._tasks: asyncio.TaskGroup | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self.ready = asyncio.Event()
        self._stopping = False
        self.counts = {"processed": 0, "batches": 0, "published": 0, "rejected": 0}
        #: 远程虚拟窗口: video sessions with partners' windows and reviewers.
        self.video = VirtualWindow(config.region, config.name,
                                   VideoStore(config.data_dir / VIDEO_FILENAME), self.transport,
                                   self.keys, self.registry, self.router, config.video, clock)
        #: Called with every ``Result`` once it is on disk (live pages, benchmarks).
        self.observers: list[Callable[[Result], None]] = []
        #: ``GET /metrics``: counters updated below, gauges read from this node (node.metrics).
        self.metrics = NodeMetrics(self)
        #: Heartbeats out and in; which partners are silent (node.health).
        self.health = PartnerHealth(config.region, config.health, self.transport, self.keys,
                                    self.registry, self.router, self.store, clock)
        self.health.observers.append(self.metrics.partner_seen)
        #: What operators must act on: the dashboard and the webhook (node.alerts).
        self.alerts = Alerts(self, config.alerts, clock)
        self.health.changed.add(self.alerts.recheck)

    def __repr__(self) -> str:
        return f"<Node {self.region} {self.counts} queue={self._queue.qsize()}>"

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "queue": self._queue.qsize(), "outbox": self._outbox.qsize(),
                "connected": self.transport.connected, **self.store.stats()}

    # ------------------------------------------------------------------ lifetime

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; everything started here is stopped here."""
        # The region in the log lines of this node's tasks (several nodes share a process).
        region_token = current_region.set(self.region)
        self.store.start()
        try:
            await self.transport.start()
            try:
                if self.config.catalog is not None:
                    entries = await asyncio.to_thread(read_catalog_path, self.config.catalog,
                                                      self.region)
                    await self.catalog.publish(entries)
                async with asyncio.TaskGroup() as tasks:
                    self._tasks = tasks
                    workers = [self._fetcher, self._processor, self._relay, self._timers,
                               self.transfers.move, self.transfers.sweep,
                               self.catalog.follow]
                    if self.circle is not None:
                        workers.append(self.circle.follow)
                    for worker in workers:
                        self._tasks_create(worker(), name=f"{self.region}-{worker.__name__}")
                    self._resume_forwarding()
                    self._resume_joints()
                    if self.config.auto_review:
                        self._resume_review()
                    await self.video.start()
                    await self.health.listen()
                    for watcher, name in ((self.video.watch, "video"),
                                          (self.health.beat, "heartbeat"),
                                          (self.alerts.run, "alerts")):
                        self._tasks_create(watcher(), name=f"{self.region}-{name}")
                    self.ready.set()
                    await stop.wait()
                    await self.video.stop()
                    await self._stop_tasks()
                    self._fail_waiting(ConnectionAbortedError("the node is stopping"))
            finally:
                self._tasks = None
                await self.transport.close()
                for department in self.departments:
                    await department.close()
        finally:
            current_region.reset(region_token)
            await self.store.close()
            self.catalog.index.close()
            self.video.close()

    async def command(self, command: Command) -> Result:
        """Run one of our own events through the engine; returns once it is on disk."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        await self._queue.put((command, future))
        return await future

    async def _own_commands(self, commands: list[Command]) -> None:
        """Steps the node takes by itself (automatic review, withdrawals of a failed joint
        case ...), in a task of their own: a batch that fails is logged, not fatal; what
        it was for is found again at the next start."""
        try:
            for result in await self.commands(commands):
                if result.outcome not in ("applied", "duplicate"):
                    log.warning("%s of case %s: %s", result.outcome, result.case_id, result.detail)
        except ConnectionAbortedError:
            pass  # the node is stopping
        except Exception:
            log.exception("the node's own steps failed: %s",
                          ", ".join(f"{c.event} {c.case_id}" for c in commands))

    async def commands(self, commands: list[Command]) -> list[Result]:
        futures = []
        for command in commands:
            future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
            await self._queue.put((command, future))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    # ------------------------------------------------------------------ workers

    def route(self, matter: str, locations: Sequence[str],
              mode: str = "proxy") -> list[Route] | SignedRouteRefusal:
        """The handling region(s) for an application (基本编码 ``matter``, the applicant's
        ``locations``: one, or one per place for 多地联办), or this node's signed refusal
        when no member can handle it."""
        now = self.clock()
        today = date_of(now).isoformat()
        try:
            if mode == "joint":
                routes = self.router.route_all(matter, locations, today=today)
                if len(routes) < 2:
                    raise NoRoute("这些地点都属于同一个办理地，请按异地代收代办办理",
                                  "every location belongs to one handling region: submit it "
                                  "as 异地代收代办 (proxy)")
                return routes
            return [self.router.route(matter, locations[0], today=today, mode=mode)]
        except NoRoute as exc:
            log.info("no route for matter %s at %s: %s", matter, ",".join(locations), exc.en)
            return sign_refusal(self.postmaster.signer, RouteRefusal(
                collecting=self.region, matter=matter, locations=tuple(locations),
                mode="joint" if mode == "joint" else "proxy", zh=exc.zh, en=exc.en, at=now))

    def window_no(self, now: int) -> str:
        """A 收件编号 for an application the window takes in now."""
        return f"{self.region}-{date_of(now):%Y%m%d}-{now % 10**9:09d}"

    def joint_policy(self, routes: Sequence[Route]) -> str:
        """What a refused part does: the strictest of the parts' catalog entries."""
        entries = [self.catalog.entry(r.handling, r.code, r.version) for r in routes]
        lenient = all(e is not None and e.joint_failure == "part_only" for e in entries)
        return "part_only" if lenient else "whole_case"

    def _offers(self, basic_code: str) -> list[Offer]:
        return [Offer(*row) for row in self.catalog.index.offers(basic_code)]

    def _members_changed(self, registry: CircleRegistry) -> None:
        """A newer circle registry: routes follow its members; catalog entries refused
        for their key may be good now."""
        self.router.set_members({m.region: MemberPath(m.status, m.relay) for m in registry.members})
        if self.catalog.refused_for_keys:
            self.catalog.refused_for_keys = False
            self.transport.rewatch(CATALOG_BUCKET)

    async def _fetcher(self) -> None:
        if self.circle is not None:  # judge no partner's message before knowing the members
            await self.circle.caught_up.wait()
        batch = self.config.limits.inbox_batch
        while not self._stopping:
            room = self._queue.maxsize - self._queue.qsize()
            if room < batch:
                await asyncio.sleep(0.005)
                continue
            for message in await self.transport.fetch(batch, timeout=1.0):
                await self._queue.put((Incoming(message.msg_id, message.data), message))

    async def _processor(self) -> None:
        limit = self.config.limits.commit_batch
        while True:
            items = [await self._queue.get()]
            while len(items) < limit and not self._queue.empty():
                items.append(self._queue.get_nowait())
            await self._process(items)

    async def _process(self, items: list[tuple[Incoming | Command, Any]]) -> None:
        now = self.clock()
        try:
            changes, results = self.engine.process([item for item, _ in items], now)
            await self.store.commit(changes)
            self.engine.confirm()
        except Exception as exc:  # nothing was written: every input comes back later
            log.exception("batch of %d failed; redelivering", len(items))
            for item, handle in items:
                if isinstance(item, Incoming):
                    await _quietly(handle.nak(2.0))
                elif not handle.done():
                    handle.set_exception(exc)
            return
        self.counts["batches"] += 1
        self.counts["processed"] += len(items)
        follow_up: list[Command] = []
        for (item, handle), result in zip(items, results, strict=True):
            if isinstance(item, Incoming):
                await self._settle(handle, result)
            elif not handle.done():
                handle.set_result(result)
            self._after(result, follow_up)
            for observer in self.observers:
                observer(result)
        self.metrics.committed([item for item, _ in items], results, changes, now)
        follow_up += self._joint_withdrawals(changes.joints)
        for msg_id, subject, wire, _ in changes.outbox:
            self._outbox.put_nowait((msg_id, subject, wire))
        if changes.resend:
            for resent in self.store.outbox_items(changes.resend):
                self._outbox.put_nowait(resent)
                self.metrics.sent_again(resent[1])
        if changes.timers_set:
            self._timer_wake.set()
        if changes.materials:
            self.transfers.wake.set()
        if follow_up:  # the queue is bounded and the fetcher may have filled it: not here
            self._tasks_create(self._own_commands(follow_up), name=f"{self.region}-follow-up")

    async def _settle(self, message: Inbound, result: Result) -> None:
        if result.outcome == "deferred":
            await _quietly(message.nak(1.0))
        elif result.outcome == "rejected":
            self.counts["rejected"] += 1
            await _quietly(message.term())
        else:
            await _quietly(message.ack())

    def _after(self, result: Result, follow_up: list[Command]) -> None:
        """Start what a committed step calls for: forwarding, automatic review."""
        step = result.step
        if step is None or result.case_id is None:
            return
        if step.new_state == "forwarding" and (step.old_state != "forwarding"
                                               or step.event == "operator_retry"):
            self._start_forwarding(result.case_id)
        if self.config.auto_review and step.new_state == "received" and step.old_state == "new":
            follow_up.extend(self._automatic_review(result.case_id))

    def _automatic_review(self, case_id: str) -> list[Command]:
        """初审 by rules: accept a received application at once."""
        case = self.engine.load_case(case_id)
        if case is None or case.state != "received":
            return []
        now = self.clock()
        return [Command(case_id, "accept", b.Accept(
            doc_no=f"受理-{case_id}"[:50], accepted_at=now,
            promised_date=case.promised_date_from(now), decided_by="自动初审"))]

    def _resume_review(self) -> None:
        """Reviews queued in memory when an earlier run stopped are queued again."""
        pending = [command for row in self.store.cases(state="received", limit=100_000)
                   for command in self._automatic_review(row["case_id"])]
        if pending:
            self._tasks_create(self._own_commands(pending), name=f"{self.region}-resume-review")

    async def _relay(self) -> None:
        limit = min(self.config.limits.outbox_inflight, 1000)
        timeout = self.config.limits.publish_timeout_s
        after = ""
        while page := self.store.pending_outbox(1000, after):  # what an earlier run left
            for item in page:
                self._outbox.put_nowait(item)
            after = page[-1][0]
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < limit and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            acked = await self.transport.publish(batch, timeout)
            self.metrics.published(batch, acked, self.clock())
            if acked:
                now = self.clock()
                await self.store.commit(Changes(sent=[(now, msg_id) for msg_id in acked]))
                self.counts["published"] += len(acked)
            if len(acked) < len(batch):
                done = set(acked)
                await asyncio.sleep(0.5)  # the server is busy or away: try again, same ids
                for item in batch:
                    if item[0] not in done:
                        self._outbox.put_nowait(item)

    async def _timers(self) -> None:
        while True:
            now = self.clock()
            for case_id, name, _ in self.store.due_timers(now):
                if (case_id, name) not in self._timers_in_flight:
                    self._timers_in_flight.add((case_id, name))
                    self._tasks_create(self._fire_timer(case_id, name))
            upcoming = self.store.next_timer()
            wait = 60.0 if upcoming is None else max(0.01, min(60.0, (upcoming - now) / 1000))
            self._timer_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wake.wait(), wait)

    async def _fire_timer(self, case_id: str, name: str) -> None:
        try:
            result = await self.command(Command(case_id, f"{name}_due"))
            if result.outcome != "applied":
                log.warning("timer %s of %s: %s", name, case_id, result.detail)
        finally:
            self._timers_in_flight.discard((case_id, name))

    # ------------------------------------------------------------------ forwarding

    def _joint_withdrawals(self, joints: list[dict[str, Any]]) -> list[Command]:
        """多地联办 under ``whole_case``: a part failed, so the parts still open are withdrawn."""
        now = self.clock()
        return [Command(case_id, "withdraw", b.Withdrawal(
                    reason="多地联办的其他部分不予受理或已撤回，联办件整体撤回 / another part of the "
                           "joint case was refused or withdrawn: the whole case is withdrawn",
                    requested_at=now, requested_by="多地联办（系统）"))
                for joint in joints for case_id in joint.get("withdraw", ())]

    def _resume_joints(self) -> None:
        """Withdrawals a failed joint case called for, if an earlier run stopped before
        they were made."""
        pending = []
        for joint in self.store.joints(open_only=True, limit=100_000):
            if joint["state"] != "failed":
                continue
            rows = [self.store.case_row(case_id) for case_id, _ in joint["parts"]]
            withdraw = [row["case_id"] for row, outcome in zip(rows, joint["outcomes"], strict=True)
                        if row is not None and outcome is None and withdrawable(row["state"])]
            pending += self._joint_withdrawals([{"withdraw": withdraw}])
        if pending:
            self._tasks_create(self._own_commands(pending), name=f"{self.region}-resume-joints")

    def _resume_forwarding(self) -> None:
        for row in self.store.cases(state="forwarding", limit=100_000):
            self._start_forwarding(row["case_id"])

    def _start_forwarding(self, case_id: str) -> None:
        if case_id not in self._forwarding and self._tasks is not None:
            self._forwarding.add(case_id)
            self._tasks_create(self._forward(case_id))

    def _fail_waiting(self, error: BaseException) -> None:
        """Commands still queued will not run: their callers learn it now."""
        while not self._queue.empty():
            _, handle = self._queue.get_nowait()
            if isinstance(handle, asyncio.Future) and not handle.done():
                handle.set_exception(error)

    async def _forward(self, case_id: str) -> None:
        try:
            case = self.engine.load_case(case_id)
            raw = self.store.body(case_id, "application")
            if case is None or raw is None or case.state != "forwarding":
                return
            application = b.Application.model_validate(decode(raw))
            department = self.departments[0]
            handover = Handover(case_id, application.matter.code, application)

            async def failed(attempt: int, error: str) -> None:
                await self.store.commit(Changes(forward_errors=[
                    (case_id, self.clock(), attempt, error)]))  # why, for the operators
                await self.command(Command(case_id, "forward_failed"))

            delivered, attempts, error = await forward_with_retries(
                department, handover, self.config.retry,
                attempts_before=case.forward_attempts, on_failure=failed)
            now = self.clock()
            if not delivered:
                log.error("dead letter: case %s could not be forwarded to %s (%s)",
                          case_id, department.name, error)
                await self.store.commit(Changes(forward_errors=[(case_id, now, attempts, error)]))
                await self.command(Command(case_id, "forward_exhausted"))
                return
            commands = [Command(case_id, "forwarded", b.Forwarded(
                department=department.name, department_code=department.code,
                forwarded_at=now, attempts=max(1, attempts)))]
            if department.auto_conclude:
                commands.append(Command(case_id, "conclude", b.Outcome(
                    result="approved", concluded_at=now, description="自动办结",
                    issuer=department.name, handler="自动办理", delivery="electronic")))
            await self.commands(commands)
        finally:
            self._forwarding.discard(case_id)

    async def _department_request(self, subject: str, data: bytes, timeout: float) -> bytes:
        request = getattr(self.transport, "request", None)
        if request is None:
            raise ConnectionError("this transport cannot make NATS requests")
        return await request(subject, data, timeout)  # type: ignore[no-any-return]

    async def _stop_tasks(self) -> None:
        """Every task this node started stops now: workers, forwarding, timers. Cancelled
        again while any is left: under Python 3.11 ``asyncio.wait_for`` (inside nats-py's
        fetches) can lose a cancellation that arrives as a message does, and the loops
        around those fetches also end on the stop flags."""
        self._stopping = True
        self.transport.stopping()
        while self._running:
            for task in list(self._running):
                task.cancel()
            await asyncio.wait(list(self._running), timeout=1.0)

    def _tasks_create(self, coroutine: Any, name: str | None = None) -> None:
        if self._tasks is None:
            coroutine.close()
            return
        task = self._tasks.create_task(coroutine, name=name)
        self._running.add(task)
        task.add_done_callback(self._running.discard)


def _peer_keys(region: str, path: Path) -> list[KeyRecord]:
    try:
        records = records_from_public_json(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ConfigError(f"伙伴 {region} 的公钥文件不存在 / the public keys of partner {region} "
                          f"are missing: {path}") from None
    except (OSError, ValueError, KeyFileError) as exc:
        raise ConfigError(f"伙伴 {region} 的公钥文件无效 / {path} is not a valid public.json of "
                          f"partner {region}: {exc}") from exc
    if any(record.region != region for record in records):
        raise ConfigError(f"{path} holds the keys of {records[0].region}, not of {region}")
    return records


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception as exc:  # an ack lost to a reconnect is redelivered and deduplicated
        log.debug("ack/nak/term failed: %s", exc)
