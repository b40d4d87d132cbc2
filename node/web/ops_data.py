"""The operators' figures (运行监控): read from the node's own Prometheus registry, and
kept over time.

Theory of operation
-------------------
**One source.** ``figures`` collects ``node.metrics.registry`` exactly as ``GET
/metrics`` does and sums its samples per partner, so the dashboard and a Prometheus
scrape can never disagree: nothing here counts by itself.

**History.** A ``Recorder`` per web app takes ``figures`` every ``INTERVAL_S`` seconds
and keeps the last hour (``KEEP`` points) in a ring buffer, so a dashboard opened now
already shows the rates of the past hour; each new point wakes the dashboards' sockets
(``listeners``), which push it. Rates are differences of counters between points,
worked out by the page. The recorder's task belongs to the app: started and cancelled
by ``app.cleanup_ctx`` (``recording``).

A history point is small on purpose (``point_of``): per partner the four running
totals the charts need (sent, received, acknowledged, backlog) and the inbox backlog.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

__all__ = ["INTERVAL_S", "KEEP", "LATENCY_GROUPS", "PARTNER_FIELDS", "Figures", "Recorder",
           "bound_text", "figures", "latency_json", "point_of", "recording"]

log = logging.getLogger("tongban.web.ops")

#: Seconds between two history points, and how many are kept (an hour).
INTERVAL_S = 5.0
KEEP = 720

#: The protocol steps whose latency the dashboard draws, by the receipt kinds that end
#: them (``tongban_step_latency_seconds{step=...}``).
LATENCY_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "receive": ("签收", ("received",)),
    "review": ("初审（受理、补正、不予受理）", ("accepted", "supplement_requested", "refused")),
    "forward": ("流转至部门", ("forwarded",)),
    "outcome": ("办结 / 收到结果", ("concluded", "outcome_received")),
}

#: Per-partner columns: (key, metric family, samples kept).
_COUNTERS = {
    "sent": "tongban_messages_sent_total",
    "acknowledged": "tongban_messages_acknowledged_total",
    "retried": "tongban_messages_retried_total",
    "rejected": "tongban_messages_rejected_total",
    "deferred": "tongban_messages_deferred_total",
    "forward_failures": "tongban_forward_failures_total",
}
_GAUGES = {
    "dead": "tongban_dead_letter_cases",
    "outbox": "tongban_outbox_backlog",
    "oldest_s": "tongban_outbox_oldest_seconds",
}
PARTNER_FIELDS = ("sent", "received", "acknowledged", "retried", "rejected", "deferred",
                  "forward_failures", "dead", "outbox", "oldest_s")


@dataclasses.dataclass
class Figures:
    """One reading of the registry."""

    at: int  # ms
    partners: dict[str, dict[str, float]]  # partner label -> PARTNER_FIELDS
    nats_connected: bool
    reconnects: int
    inbox: int  # messages waiting in our inbox stream
    queues: dict[str, int]  # engine, relay
    cases: dict[str, int]  # by state
    deadlines: dict[str, int]  # "notice_soon", "promise_overdue" ...
    materials: dict[str, int]
    #: step group -> (upper bounds, per-bucket counts (not cumulative), count, sum)
    latency: dict[str, tuple[list[float], list[int], int, float]]

    def total(self, field: str) -> float:
        return sum(p.get(field, 0.0) for p in self.partners.values())


def figures(registry: CollectorRegistry, now: int) -> Figures:
    """The registry's figures as the dashboard shows them."""
    partners: dict[str, dict[str, float]] = collections.defaultdict(
        lambda: dict.fromkeys(PARTNER_FIELDS, 0.0))
    singles: dict[str, float] = {}
    labelled: dict[str, dict[str, int]] = collections.defaultdict(dict)
    buckets: dict[str, dict[float, float]] = {g: {} for g in LATENCY_GROUPS}
    counts: dict[str, tuple[int, float]] = dict.fromkeys(LATENCY_GROUPS, (0, 0.0))
    group_of = {step: group for group, (_, steps) in LATENCY_GROUPS.items() for step in steps}
    counter_of = {name: key for key, name in _COUNTERS.items()}
    gauge_of = {name: key for key, name in _GAUGES.items()}
    for family in registry.collect():
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            partner = labels.get("partner")
            if name == "tongban_messages_received_total" and partner is not None:
                if labels.get("outcome") != "rejected":  # those count as rejected
                    partners[partner]["received"] += value
            elif name in counter_of and partner is not None:
                partners[partner][counter_of[name]] += value
            elif name in gauge_of and partner is not None:
                partners[partner][gauge_of[name]] += value
            elif name.startswith("tongban_step_latency_seconds") and labels.get("step") in group_of:
                group = group_of[labels["step"]]
                if name.endswith("_bucket"):
                    bound = float(labels["le"])
                    buckets[group][bound] = buckets[group].get(bound, 0.0) + value
                elif name.endswith("_count"):
                    held, total = counts[group]
                    counts[group] = (held + int(value), total)
                elif name.endswith("_sum"):
                    held, total = counts[group]
                    counts[group] = (held, total + value)
            elif name == "tongban_cases":
                labelled["cases"][labels["state"]] = int(value)
            elif name == "tongban_queue_length":
                labelled["queues"][labels["queue"]] = int(value)
            elif name == "tongban_materials_backlog":
                labelled["materials"][labels["direction"]] = int(value)
            elif name == "tongban_deadline_cases":
                labelled["deadlines"][f"{labels['clock']}_{labels['level']}"] = int(value)
            elif not labels:
                singles[name] = value
    latency = {}
    for group, by_bound in buckets.items():
        bounds = sorted(by_bound)
        cumulative = [int(by_bound[b]) for b in bounds]
        per_bucket = [c - (cumulative[i - 1] if i else 0) for i, c in enumerate(cumulative)]
        latency[group] = (bounds, per_bucket, *counts[group])
    return Figures(
        at=now, partners=dict(partners),
        nats_connected=singles.get("tongban_nats_connected", 0.0) >= 1.0,
        reconnects=int(singles.get("tongban_nats_reconnects_total", 0)),
        inbox=int(singles.get("tongban_inbox_backlog", 0)),
        queues=labelled["queues"], cases=labelled["cases"], deadlines=labelled["deadlines"],
        materials=labelled["materials"], latency=latency)


def point_of(found: Figures) -> dict[str, Any]:
    """A history point: the running totals the charts turn into rates, and the backlogs."""
    return {"t": found.at, "in": found.inbox,
            "p": {partner: [int(f["sent"]), int(f["received"]), int(f["acknowledged"]),
                            int(f["outbox"])] for partner, f in sorted(found.partners.items())}}


def latency_json(found: Figures) -> dict[str, Any]:
    """The step latencies for the page's histograms: bucket bars with readable bounds."""
    groups = {}
    for group, (bounds, per_bucket, count, total) in found.latency.items():
        groups[group] = {"label": LATENCY_GROUPS[group][0], "count": count,
                         "mean": round(total / count, 3) if count else None,
                         "bars": [{"le": bound_text(b), "n": n}
                                  for b, n in zip(bounds, per_bucket, strict=True)]}
    return groups


def bound_text(seconds: float) -> str:
    """A bucket's upper bound as people read it: ≤10 毫秒, ≤5 分钟, ≤3 天 ..."""
    if math.isinf(seconds):
        return "更长"
    for unit, size in (("天", 86400), ("小时", 3600), ("分钟", 60), ("秒", 1)):
        if seconds >= size:
            return f"≤{seconds / size:g} {unit}"
    return f"≤{seconds * 1000:g} 毫秒"


class Recorder:
    """The last hour of figures of one node, a point every ``interval`` seconds."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], int], *,
                 interval: float = INTERVAL_S, keep: int = KEEP) -> None:
        self.registry = registry
        self.clock = clock
        self.interval = interval
        self.points: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self.latest: Figures | None = None
        #: Set at every new point (the dashboards' sockets).
        self.listeners: set[asyncio.Event] = set()

    def __repr__(self) -> str:
        return f"<Recorder points={len(self.points)} every {self.interval:g} s>"

    def take(self) -> Figures:
        found = figures(self.registry, self.clock())
        self.latest = found
        self.points.append(point_of(found))
        for event in self.listeners:
            event.set()
        return found

    async def run(self) -> None:
        while True:
            try:
                self.take()
            except Exception:  # the store is closing, a collector failed: try again later
                log.debug("figures not taken", exc_info=True)
            await asyncio.sleep(self.interval)


def recording(app: web.Application, make: Callable[[web.Application], Recorder],
              key: web.AppKey[Recorder]) -> None:
    """Keep a recorder for the app's lifetime (``app.cleanup_ctx``)."""

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        recorder = make(app)
        app[key] = recorder
        task = asyncio.create_task(recorder.run(), name="ops-recorder")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.cleanup_ctx.append(lifetime)
