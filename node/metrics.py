"""Prometheus metrics of one node, served at ``GET /metrics`` on its web port.

Theory of operation
-------------------
Each ``Node`` owns a ``NodeMetrics`` with a ``CollectorRegistry`` of its own, never
prometheus_client's global one: several nodes share a process in ``tongban demo``
and in the tests, and each scrape must show one node only.

Two kinds of figures:

* **counters and histograms** that the code paths update where things happen, in a
  few explicit calls: ``committed`` after the processor's group commit (messages
  written to the outbox, inbox messages settled, dead letters, the latency of every
  step whose receipt this node signed), ``published`` after the relay's publish
  (PubAcks, retries, delivery time), ``sent_again`` for an earlier answer resent to
  a duplicate, and ``partner_seen``;
* **gauges computed at scrape time** by ``_NodeState`` from the node's state: the
  store's backlogs and deadlines (its queries live in ``node.store``), the in-memory
  queues, the NATS connection.

Labels are bounded: ``partner`` is a region code (of an authenticated sender, a case's
other region, or an outbox subject; anything else is ``unknown`` or ``other``),
``kind`` a message kind of ``protocol.envelope.KINDS``, ``step`` a receipt kind,
``reason`` a reason code; never a case or message id.

Step latency: a step's time is its receipt's; the step before it is the case's latest
receipt on either chain (so 签收 at the handling side counts from the window's
``submitted`` receipt, by the window's clock: clock skew between nodes shows there).
The latest time per case is kept for the cases seen lately; otherwise read from the
store once.

``partner_seen(region, at_ms)`` is called for every heartbeat taken (node.health)
and every authenticated inbox message (whatever a partner sends shows it alive), so
``tongban_partner_last_seen_seconds`` is the Unix time anything was last heard from
the partner; its age is ``time() - tongban_partner_last_seen_seconds``.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from node.engine import Incoming, Result
from node.store import Changes
from protocol.calendar import add_working_days
from protocol.envelope import KINDS
from protocol.fields import REGION_PATTERN, date_of, end_of_day
from protocol.states import RECEIPT_NAMES_ZH, TIMER_EVENTS

if TYPE_CHECKING:
    from node.app import Node
    from node.engine import Command

__all__ = ["PATH", "NodeMetrics", "add_metrics_route", "deadline_counts"]

log = logging.getLogger("tongban.metrics")

PATH = "/metrics"
_REGION = re.compile(REGION_PATTERN)
_KINDS = frozenset(KINDS)
#: From a step taken by a program (milliseconds) to one a person takes within 20 working days.
STEP_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 4 * 3600, 8 * 3600,
                86400, 3 * 86400, 7 * 86400, 30 * 86400)
#: From the outbox to a PubAck: milliseconds, or hours while a partner is away.
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800,
                    3600, 86400)
#: Deadline levels, as the desk's queue shows them: ``soon`` is due by the end of the
#: next working day, ``overdue`` is past.
LEVELS = ("soon", "overdue")
#: Cases whose latest step time is kept, and outbox messages whose write time is kept.
RECENT_CASES = 10_000
QUEUED_LIMIT = 100_000

# No ``<counter>_created`` series beside every counter and histogram: they double what a
# scrape carries, and Prometheus' rate() does without them (a process-wide setting).
disable_created_metrics()  # type: ignore[no-untyped-call]

try:
    VERSION = importlib.metadata.version("tongban")
except importlib.metadata.PackageNotFoundError:  # run from a source tree
    VERSION = "unknown"


def partner_label(region: str | None) -> str:
    if region is None:
        return "unknown"
    return region if _REGION.match(region) else "other"


def subject_labels(subject: str) -> tuple[str, str]:
    """(partner, kind) of an inbox subject ``tb.<region>.in.<kind>``."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != "tb" or parts[2] != "in":
        return "other", "other"
    return partner_label(parts[1]), parts[3] if parts[3] in _KINDS else "other"


class NodeMetrics:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.region = node.region
        self.registry = registry = CollectorRegistry(auto_describe=False)
        messages = ("partner", "kind")
        self.sent = Counter(
            "tongban_messages_sent", "Messages queued for a partner's inbox (outbox rows written, "
            "and earlier answers sent again for a duplicate); partner: the region whose inbox "
            "it goes to (the next hop through a relay)", messages, registry=registry)
        self.acknowledged = Counter(
            "tongban_messages_acknowledged", "Messages JetStream stored in the partner's inbox "
            "(PubAck received)", messages, registry=registry)
        self.retried = Counter(
            "tongban_messages_retried", "Publishes repeated, same message id, because no PubAck "
            "came in time", messages, registry=registry)
        self.received = Counter(
            "tongban_messages_received", "Inbox messages settled, by outcome (applied, duplicate, "
            "relayed: acknowledged; rejected: terminated)", (*messages, "outcome"),
            registry=registry)
        self.deferred = Counter(
            "tongban_messages_deferred", "Inbox messages handed back for later delivery (nak: "
            "out of order, transient errors)", ("partner", "reason"), registry=registry)
        self.rejected = Counter(
            "tongban_messages_rejected", "Inbox messages refused as poison and terminated (dead: "
            "never delivered again; listed as rejections)", ("partner", "reason"),
            registry=registry)
        self.forward_failures = Counter(
            "tongban_forward_failures", "Failed attempts to forward an accepted case to the "
            "department (流转); partner: the case's collecting region", ("partner",),
            registry=registry)
        self.dead_letters = Counter(
            "tongban_dead_letters", "Cases moved to the dead-letter state: forwarding ran out "
            "of attempts (流转失败，待人工处理)", ("partner",), registry=registry)
        self.step_latency = Histogram(
            "tongban_step_latency_seconds", "Time from a case's previous step to a step of ours, "
            "by the receipt kind this node signed (received: 签收, accepted/refused/"
            "supplement_requested: 初审, forwarded: 流转, concluded: 办结 ...)",
            ("step", "partner"), buckets=STEP_BUCKETS, registry=registry)
        self.delivery = Histogram(
            "tongban_message_delivery_seconds", "Time from a message's outbox row to its PubAck",
            ("partner",), buckets=DELIVERY_BUCKETS, registry=registry)
        self.partner_last_seen = Gauge(
            "tongban_partner_last_seen_seconds", "Unix time anything (a message, a heartbeat) was "
            "last heard from the partner", ("partner",), registry=registry)
        ProcessCollector(namespace="tongban", registry=registry)
        registry.register(_NodeState(node))
        self._last_step: OrderedDict[str, int] = OrderedDict()  # case -> latest receipt time
        self._queued: dict[str, int] = {}  # msg id -> outbox write time, until its PubAck

    def __repr__(self) -> str:
        return f"<NodeMetrics {self.region} cases={len(self._last_step)} queued={len(self._queued)}>"

    # ------------------------------------------------------------------ hooks

    def partner_seen(self, region: str, at_ms: int) -> None:
        """Something authenticated came from ``region`` at ``at_ms`` (heartbeats call it)."""
        self.partner_last_seen.labels(partner_label(region)).set(at_ms / 1000)

    def committed(self, inputs: Sequence[Incoming | Command], results: Sequence[Result],
                  changes: Changes, now: int) -> None:
        """A batch is on disk: count what it sent, what became of its inbox messages,
        and its steps. A failure here is logged, never the processor's."""
        try:
            self._committed(inputs, results, changes, now)
        except Exception:
            log.exception("metrics of a batch not counted")

    def _committed(self, inputs: Sequence[Incoming | Command], results: Sequence[Result],
                   changes: Changes, now: int) -> None:
        for msg_id, subject, _, created in changes.outbox:
            self.sent.labels(*subject_labels(subject)).inc()
            if len(self._queued) < QUEUED_LIMIT:
                self._queued.setdefault(msg_id, created)
        for item, result in zip(inputs, results, strict=True):
            partner = partner_label(result.peer)
            if isinstance(item, Incoming):
                self._settled(result, partner, now)
            step = result.step
            if step is None:
                continue
            if step.event == "forward_failed":
                self.forward_failures.labels(partner).inc()
            if step.new_state == "dead_letter" and step.old_state != "dead_letter":
                self.dead_letters.labels(partner).inc()
        if changes.receipts:
            self._steps(changes)

    def sent_again(self, subject: str) -> None:
        self.sent.labels(*subject_labels(subject)).inc()

    def published(self, batch: Sequence[tuple[str, str, bytes]], acked: Sequence[str],
                  now: int) -> None:
        try:
            self._published(batch, acked, now)
        except Exception:  # the relay goes on
            log.exception("metrics of a publish not counted")

    def _published(self, batch: Sequence[tuple[str, str, bytes]], acked: Sequence[str],
                   now: int) -> None:
        done = set(acked)
        for msg_id, subject, _ in batch:
            partner, kind = subject_labels(subject)
            if msg_id not in done:
                self.retried.labels(partner, kind).inc()
                continue
            self.acknowledged.labels(partner, kind).inc()
            created = self._queued.pop(msg_id, None)
            if created is not None:
                self.delivery.labels(partner).observe(max(0, now - created) / 1000)

    # ------------------------------------------------------------------ helpers

    def _settled(self, result: Result, partner: str, now: int) -> None:
        if result.peer is not None:  # authenticated: the partner is alive
            self.partner_seen(result.peer, now)
        reason = result.reason.code if result.reason is not None else "unknown"
        if result.outcome == "deferred":
            self.deferred.labels(partner, reason).inc()
            return
        kind = result.kind if result.kind in _KINDS else "unknown"
        self.received.labels(partner, kind, result.outcome).inc()
        if result.outcome == "rejected":
            self.rejected.labels(partner, reason).inc()

    def _steps(self, changes: Changes) -> None:
        """Observe the latency of each receipt of ours in a committed batch (in the order
        the engine wrote them: the partner's receipts a message carried come first)."""
        peers = {row["case_id"]: row["peer"] for row in changes.cases}
        recent = self._last_step
        for row in changes.receipts:
            case_id, at = row["case_id"], row["at"]
            known = recent.get(case_id)
            if row["actor"] != self.region:  # theirs: only moves on a time already known
                if known is not None:
                    recent[case_id] = max(known, at)
                continue
            previous = known
            if previous is None:
                try:
                    previous = self.node.store.previous_receipt_at(case_id, row["actor"], row["idx"])
                except sqlite3.Error:
                    previous = None
            if previous is not None:
                step = row["kind"] if row["kind"] in RECEIPT_NAMES_ZH else "other"
                self.step_latency.labels(step, partner_label(peers.get(case_id))).observe(
                    max(0, at - previous) / 1000)
            recent[case_id] = max(at, previous or at)
            recent.move_to_end(case_id)
            while len(recent) > RECENT_CASES:
                recent.popitem(last=False)


class _NodeState:
    """The gauges read at scrape time."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def describe(self) -> list[Metric]:
        return []  # nothing read at registration: the store may not be open yet

    def collect(self) -> Iterator[Metric]:
        node = self.node
        now = node.clock()
        info = GaugeMetricFamily("tongban_node_info", "The node: region, name, version",
                                 labels=("region", "name", "version"))
        info.add_metric((node.region, node.config.name, VERSION), 1.0)
        yield info
        transport = node.transport
        yield GaugeMetricFamily("tongban_nats_connected", "1 while the NATS connection is up",
                                value=1.0 if transport.connected else 0.0)
        reconnects = getattr(transport, "reconnects", None)
        if isinstance(reconnects, int):
            yield CounterMetricFamily("tongban_nats_reconnects", "Reconnects to NATS since the "
                                      "start", value=reconnects)
        pending = getattr(transport, "inbox_pending", None)
        if isinstance(pending, int):
            yield GaugeMetricFamily("tongban_inbox_backlog", "Messages waiting in the node's "
                                    "inbox stream, as of its last fetch", value=pending)
        stats = node.stats()
        queues = GaugeMetricFamily("tongban_queue_length", "In memory: inputs waiting for the "
                                   "engine (inbox messages and commands), messages waiting for "
                                   "the relay", labels=("queue",))
        queues.add_metric(("engine",), stats["queue"])
        queues.add_metric(("relay",), stats["outbox"])
        yield queues
        stored = node.store.stats()
        for name, text, value in (
                ("tongban_engine_inputs", "Inputs the engine processed", node.counts["processed"]),
                ("tongban_engine_batches", "Batches the engine processed", node.counts["batches"]),
                ("tongban_store_commits", "Changes written by the store", stored["commits"]),
                ("tongban_store_transactions", "Store transactions (group commits)",
                 stored["batches"])):
            yield CounterMetricFamily(name, text, value=value)
        try:
            yield from self._stored(now)
        except sqlite3.Error as exc:  # the store is closed (stopping) or failing: said by the rest
            log.debug("metrics from the store: %s", exc)

    def _stored(self, now: int) -> Iterator[Metric]:
        node, store = self.node, self.node.store
        backlog = GaugeMetricFamily("tongban_outbox_backlog", "Messages written to the outbox "
                                    "and not yet stored in the partner's inbox",
                                    labels=("partner",))
        oldest = GaugeMetricFamily("tongban_outbox_oldest_seconds", "Age of the oldest message "
                                   "not yet stored in the partner's inbox", labels=("partner",))
        by_partner = dict.fromkeys(_partners(node), (0, now))
        for subject, count, created in store.outbox_pending_by_subject():
            partner, _ = subject_labels(subject)
            held, first = by_partner.get(partner, (0, now))
            by_partner[partner] = (held + count, min(first, created))
        for partner, (count, first) in sorted(by_partner.items()):
            backlog.add_metric((partner,), count)
            oldest.add_metric((partner,), max(0, now - first) / 1000)
        yield backlog
        yield oldest
        materials = GaugeMetricFamily("tongban_materials_backlog", "Scans still to put into a "
                                      "partner's object store or to fetch from ours",
                                      labels=("direction",))
        moving = store.materials_backlog()
        for direction in ("to_send", "to_fetch"):
            materials.add_metric((direction,), moving.get(direction, 0))
        yield materials
        cases = GaugeMetricFamily("tongban_cases", "Cases by state", labels=("state",))
        for state, count in sorted(store.count_states().items()):
            cases.add_metric((state,), count)
        yield cases
        dead = GaugeMetricFamily("tongban_dead_letter_cases", "Cases waiting in the dead-letter "
                                 "state for an operator (运维: 流转重试)", labels=("partner",))
        for peer, count in sorted(store.count_in_state_by_peer("dead_letter").items()):
            dead.add_metric((partner_label(peer),), count)
        yield dead
        yield self._deadlines(now)

    def _deadlines(self, now: int) -> Metric:
        family = GaugeMetricFamily("tongban_deadline_cases", "Cases due by the end of the next "
                                   "working day (soon) or past due (overdue), by clock",
                                   labels=("clock", "level"))
        for (clock, level), count in deadline_counts(self.node, now).items():
            family.add_metric((clock, level), count)
        return family


def deadline_counts(node: Node, now: int) -> dict[tuple[str, str], int]:
    """Cases about to miss or past a deadline, by (clock, level): the 5-working-day 补正
    notice (``notice``, 行政许可法 §32) and the promised completion date (``promise``);
    ``soon`` is due by the end of the next working day."""
    try:
        soon = end_of_day(add_working_days(node.engine.calendar, date_of(now), 1))
    except ValueError:  # the calendar does not cover the next days
        soon = now + 86_400_000
    counts = {(clock, level): 0 for clock in TIMER_EVENTS for level in LEVELS}
    for name, late, count in node.store.timers_due_by(soon, now):
        if name in TIMER_EVENTS:
            counts[(name, "overdue" if late else "soon")] += count
    counts[("promise", "overdue")] += node.store.overdue_promises()
    return counts


def _partners(node: Node) -> list[str]:
    """The regions this node exchanges with: configured peers, or the circle's members."""
    if node.circle is None:
        return [partner_label(peer.region) for peer in node.config.peers]
    current = node.circle.current
    if current is None:
        return []
    return [partner_label(m.region) for m in current.members if m.region != node.region]


def add_metrics_route(app: web.Application, node_key: web.AppKey[Node]) -> None:
    """``GET /metrics`` in Prometheus' text format. Who may read it is decided before the
    handler, by ``node.web.auth``'s middleware (the local token, or 运维 / 管理员)."""

    async def metrics(request: web.Request) -> web.Response:
        node = request.app[node_key]
        return web.Response(body=generate_latest(node.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get(PATH, metrics)
