"""运维告警: what an operator must act on, shown in the dashboard and sent to a webhook.

Theory of operation
-------------------
Every ``[alerts] check_seconds`` (and whenever a partner turns silent or healthy)
``Alerts`` looks at the node and keeps the set of conditions that hold now:

* ``overdue_cases``: cases past their 5-working-day 补正 notice or their promised
  completion date (critical), or due by the end of the next working day (warning);
* ``retries_exhausted``: cases whose forwarding to the department gave up (dead
  letters, waiting for an operator's 重试);
* ``partner_silent``: a partner with no heartbeat for longer than its threshold,
  one alert per partner, saying how many of our messages wait for it;
* ``storage_low``: the disk of the data dir has less free space than
  ``min_free_mb`` or ``min_free_percent``.

An alert is *firing* from the check that first sees it until the check that no
longer does (*resolved*); each start and end goes into the history and, with
``[alerts] webhook``, is POSTed as JSON (``{"event": "firing"|"updated"|"resolved", "alert":
{...}, "region", "name", "at"}``) in the background, with a few retries, so a slow
webhook never holds the node. An alert whose count changes (3 overdue cases, then 5)
stays the same alert, with its text brought up to date; when its level changes (due
soon, then overdue) it is also sent again as ``updated``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from tenacity import AsyncRetrying, RetryError, stop_after_attempt, wait_exponential

from config import ConfigError
from config.models import AlertsConfig
from protocol.fields import clock_text

if TYPE_CHECKING:
    from node.app import Node

__all__ = ["Alert", "Alerts"]

log = logging.getLogger("tongban.alerts")

#: Alert starts and ends kept for the dashboard.
HISTORY = 200


@dataclasses.dataclass(frozen=True)
class Alert:
    key: str  # e.g. partner_silent:370100
    kind: str  # overdue_cases | retries_exhausted | partner_silent | storage_low
    level: str  # warning | critical
    title: str  # what happened, in Chinese
    detail: str  # what it means and what to do next
    since: int  # ms

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Alerts:
    def __init__(self, node: Node, config: AlertsConfig, clock: Callable[[], int]) -> None:
        self.node = node
        self.config = config
        self.clock = clock
        self._active: dict[str, Alert] = {}
        self._history: collections.deque[tuple[int, str, Alert]] = collections.deque(
            maxlen=HISTORY)
        #: Set whenever an alert starts, ends or changes.
        self.changed: set[asyncio.Event] = set()
        #: Set to look again at once (the partners' health changed).
        self.recheck = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._token = None if config.webhook_token_file is None else _read_token(
            config.webhook_token_file)

    def __repr__(self) -> str:
        return f"<Alerts {self.node.region} active={sorted(self._active)}>"

    def active(self) -> list[Alert]:
        order = {"critical": 0, "warning": 1}
        return sorted(self._active.values(), key=lambda a: (order.get(a.level, 2), a.since))

    def history(self) -> list[tuple[int, str, Alert]]:
        return list(reversed(self._history))

    async def run(self) -> None:
        """Check until cancelled; then wait a moment for webhooks still being sent."""
        try:
            while True:
                try:
                    self.check()
                except Exception:  # a failing check must not end the node's monitoring
                    log.exception("checking for alerts")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.recheck.wait(), self.config.check_seconds)
                self.recheck.clear()
        finally:
            if self._sending:
                await asyncio.wait(self._sending, timeout=5)

    def check(self) -> None:
        now = self.clock()
        found = {alert.key: alert for alert in self._conditions(now)}
        changed = False
        for key in sorted(self._active.keys() - found.keys()):
            ended = self._active.pop(key)
            self._record(now, "resolved", ended)
            changed = True
        for key, alert in found.items():
            held = self._active.get(key)
            if held is None:
                self._active[key] = alert
                self._record(now, "firing", alert)
                changed = True
            elif (held.title, held.detail, held.level) != (alert.title, alert.detail, alert.level):
                self._active[key] = dataclasses.replace(alert, since=held.since)
                if held.level != alert.level:  # e.g. due soon → overdue: the webhook hears it
                    self._record(now, "updated", self._active[key])
                changed = True
        if changed:
            for event in self.changed:
                event.set()

    # ---------------------------------------------------------------- conditions

    def _conditions(self, now: int) -> list[Alert]:
        from node.metrics import deadline_counts

        node = self.node
        alerts: list[Alert] = []
        counts = deadline_counts(node, now)
        overdue = counts[("notice", "overdue")] + counts[("promise", "overdue")]
        soon = counts[("notice", "soon")] + counts[("promise", "soon")]
        if overdue:
            alerts.append(Alert(
                "overdue_cases", "overdue_cases", "critical", f"{overdue} 件办件已超期",
                f"补正告知期限超期 {counts[('notice', 'overdue')]} 件，承诺办结时限超期 "
                f"{counts[('promise', 'overdue')]} 件。请在“时限预警”中逐件督办。", now))
        elif soon:
            alerts.append(Alert(
                "overdue_cases", "overdue_cases", "warning", f"{soon} 件办件即将到期",
                "这些办件的补正告知期限或承诺办结时限在下一个工作日结束前到期，请提醒审核员和办理部门及时处理。",
                now))
        dead = sum(node.store.count_in_state_by_peer("dead_letter").values())
        if dead:
            alerts.append(Alert(
                "retries_exhausted", "retries_exhausted", "critical",
                f"{dead} 件办件流转失败，重试已用尽",
                "办件未能转交办理部门，自动重试已停止。请检查部门系统后在“死信处理”页面重试。", now))
        for partner in node.health.partners():
            if partner.silent:
                heard = (f"最后心跳 {clock_text(partner.last_seen)}" if partner.last_seen
                         else "本节点启动后尚未收到心跳")
                alerts.append(Alert(
                    f"partner_silent:{partner.region}", "partner_silent", "critical",
                    f"通办伙伴 {partner.name} 超过 {partner.threshold_s} 秒无心跳",
                    f"{heard}；本节点有 {partner.queued} 条报文待其接收，恢复后会自动送达。"
                    "请联系对方节点运维人员确认其节点和 NATS 连接。", now))
        low = _storage_low(node.config.data_dir, self.config)
        if low is not None:
            alerts.append(Alert(
                "storage_low", "storage_low", "critical", "本节点存储空间不足",
                f"数据目录所在磁盘仅剩 {low}。空间耗尽时节点将无法收件和签收，请立即清理或扩容。", now))
        return alerts

    # ---------------------------------------------------------------- history and webhook

    def _record(self, now: int, event: str, alert: Alert) -> None:
        self._history.append((now, event, alert))
        level = logging.INFO if event == "resolved" else logging.WARNING
        log.log(level, "alert %s: %s (%s)", event, alert.title, alert.key)
        if self.config.webhook is not None:
            task = asyncio.get_running_loop().create_task(self._post(event, alert, now))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _post(self, event: str, alert: Alert, now: int) -> None:
        assert self.config.webhook is not None
        payload = {"event": event, "alert": alert.as_json(), "region": self.node.region,
                   "name": self.node.config.name, "at": now}
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(4),
                                               wait=wait_exponential(multiplier=0.5, max=10)):
                with attempt:
                    async with aiohttp.ClientSession(
                            timeout=aiohttp.ClientTimeout(total=10)) as http, http.post(
                            str(self.config.webhook), json=payload, headers=headers) as response:
                        response.raise_for_status()
        except (RetryError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("alert webhook %s failed: %s", self.config.webhook, exc)


def _storage_low(path: Path, config: AlertsConfig) -> str | None:
    """How much is free, when that is too little; otherwise ``None``."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    free_mb = usage.free / (1 << 20)
    percent = 100 * usage.free / usage.total if usage.total else 100.0
    if free_mb < config.min_free_mb or percent < config.min_free_percent:
        return f"{free_mb:,.0f} MB（{percent:.1f}%）"
    return None


def _read_token(path: Path) -> str:
    """The webhook's bearer token; ``ConfigError`` when the file cannot be used."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"无法读取告警 webhook 的令牌文件 / cannot read the alert webhook's "
                          f"token file [alerts] webhook_token_file = {path}: {exc}") from exc
    if not token or any(c.isspace() for c in token):
        raise ConfigError(f"告警 webhook 的令牌文件 {path} 应为一行令牌 / the alert webhook's "
                          "token file must hold the token on one line")
    return token
