"""Department adapters: how an accepted application reaches the competent department.

Three kinds (``config.models.DepartmentConfig``):

* ``desk``: the node's built-in department desk; forwarding always succeeds and
  staff work the case in the node's pages (``auto_conclude`` decides at once, for
  the demo and the benchmarks);
* ``webhook``: an HTTP POST to the department's own system with the header
  ``Idempotency-Key: <case id>``, so a retried forward never creates two files
  there; 2xx is success, 408/429/5xx and network errors are worth retrying, other
  4xx are final;
* ``nats``: a NATS request on the department's subject (through the transport).

``forward_with_retries`` drives one adapter with tenacity: exponential backoff with
jitter, at most ``attempts`` tries and ``deadline_s`` seconds in all; every failed
try is reported (the case machine counts it, durably), and exhaustion ends in the
dead-letter state with an operator alert.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from config.models import DeskDepartment, NatsDepartment, RetryPolicy, WebhookDepartment
from protocol import bodies as b
from protocol.codec import encode

__all__ = ["Department", "DepartmentFailed", "DepartmentUnavailable", "forward_with_retries",
           "make_department"]

log = logging.getLogger("tongban.departments")


class DepartmentUnavailable(Exception):
    """A try failed in a way worth retrying (5xx, timeout, connection refused)."""


class DepartmentFailed(Exception):
    """The department refused the application for good (a 4xx other than 408/429)."""


@dataclasses.dataclass(frozen=True)
class Handover:
    case_id: str
    matter: str
    application: b.Application


class Department(Protocol):
    name: str
    code: str | None
    auto_conclude: bool

    async def deliver(self, handover: Handover, timeout: float) -> None: ...
    async def close(self) -> None: ...


class Desk:
    def __init__(self, config: DeskDepartment) -> None:
        self.name = config.name
        self.code = config.code
        self.auto_conclude = config.auto_conclude

    async def deliver(self, handover: Handover, timeout: float) -> None:
        return None  # the case is now on the desk's queue (state "processing")

    async def close(self) -> None:
        return None


class Webhook:
    auto_conclude = False

    def __init__(self, config: WebhookDepartment) -> None:
        self.name = config.name
        self.code = config.code
        self.url = str(config.url)
        self.token = os.environ.get(config.secret_env) if config.secret_env else None
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, handover: Handover, timeout: float) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {"Idempotency-Key": handover.case_id, "Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = {"case_id": handover.case_id, "matter": handover.matter,
                   "application": handover.application.model_dump(mode="json")}
        try:
            async with self._session.post(self.url, data=json.dumps(payload, ensure_ascii=False),
                                          headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
                status = reply.status
                await reply.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DepartmentUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if status in (408, 429) or status >= 500:
            raise DepartmentUnavailable(f"HTTP {status}")
        if status >= 400:
            raise DepartmentFailed(f"HTTP {status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class NatsSubject:
    auto_conclude = False

    def __init__(self, config: NatsDepartment,
                 request: Callable[[str, bytes, float], Awaitable[bytes]]) -> None:
        self.name = config.name
        self.code = config.code
        self.subject = config.subject
        self._request = request

    async def deliver(self, handover: Handover, timeout: float) -> None:
        data = encode({"case_id": handover.case_id, "matter": handover.matter,
                       "application": handover.application.model_dump()})
        try:
            reply = await self._request(self.subject, data, timeout)
        except (TimeoutError, ConnectionError) as exc:
            raise DepartmentUnavailable(str(exc) or type(exc).__name__) from exc
        if reply[:2] != b"ok":
            raise DepartmentFailed(reply[:200].decode(errors="replace"))

    async def close(self) -> None:
        return None


def make_department(config: DeskDepartment | WebhookDepartment | NatsDepartment,
                    request: Callable[[str, bytes, float], Awaitable[bytes]]) -> Department:
    if isinstance(config, DeskDepartment):
        return Desk(config)
    if isinstance(config, WebhookDepartment):
        return Webhook(config)
    return NatsSubject(config, request)


async def forward_with_retries(
    department: Department,
    handover: Handover,
    policy: RetryPolicy,
    *,
    attempts_before: int,
    on_failure: Callable[[int, str], Awaitable[None]],
) -> tuple[bool, int, str]:
    """Try until delivered or exhausted: ``(delivered, attempts, last error)``."""
    remaining = max(1, policy.attempts - attempts_before)
    last_error = ""

    async def failed(state: RetryCallState) -> None:
        nonlocal last_error
        outcome = state.outcome
        last_error = str(outcome.exception()) if outcome is not None else ""
        await on_failure(attempts_before + state.attempt_number, last_error)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(remaining) | stop_after_delay(policy.deadline_s),
        wait=wait_exponential_jitter(multiplier=policy.initial_s, max=policy.max_s,
                                     jitter=policy.jitter_s),
        retry=retry_if_exception_type(DepartmentUnavailable),
        before_sleep=failed,
        reraise=True,
    )
    attempt_number = 0
    try:
        async for attempt in retrying:
            attempt_number = attempt.retry_state.attempt_number
            with attempt:
                await department.deliver(handover, policy.timeout_s)
    except (DepartmentUnavailable, DepartmentFailed) as exc:
        log.warning("forwarding %s to %s failed for good after %d attempts: %s",
                    handover.case_id, department.name, attempts_before + attempt_number, exc)
        return False, attempts_before + attempt_number, str(exc)
    return True, attempts_before + attempt_number, last_error


