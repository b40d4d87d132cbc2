"""``GET /metrics`` of two running nodes, and the masked JSON log lines (node.metrics,
node.logs).

Two in-process nodes on one embedded nats-server: the window at 郑州 (410100) sends
three applications to 济南 (370100), which reviews them by rule and whose department
concludes them at once; each node's scrape then shows, per partner, what the other
one's shows from the other end."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config import parse_config
from node.app import Node
from node.logs import JsonFormatter, MaskingFilter, Personal, configure, mask_text
from node.natsd import EmbeddedNats
from node.store.accounts import FILENAME, AccountStore
from node.web.auth import HASHER
from receipts import NodeKeys
from tests.api_token import HEADERS, HTTP, signed_in_http
from tests.serving import serving, until

pytestmark = pytest.mark.timeout(60)

C, H = "410100", "370100"
APPLICATIONS = 3
PASSWORD = "correct-horse-9"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _config(base: Path, region: str, peer: str) -> Any:
    return parse_config({
        "region": region, "name": {C: "郑州市", H: "济南市"}[region],
        "data_dir": str(base / region), "http": HTTP, "auto_review": region == H,
        "departments": [{"kind": "desk", "name": "济南市民政局", "auto_conclude": True}],
        "peers": [{"region": peer, "name": peer, "public": str(base / peer / "keys" / "public.json")}],
    }, base=base, environ={})


def _samples(text: str) -> Samples:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(value for (sample, found), value in samples.items()
               if sample == name and set(labels.items()) <= set(found))


def _accounts(config: Any) -> None:
    store = AccountStore(config.data_dir / FILENAME)
    for username, role in (("clerk", "clerk"), ("ops", "operator")):
        store.create(username=username, display_name=username, roles=(role,), region=H,
                     password_hash=HASHER.hash(PASSWORD), now=0, actor="test")
    store.close()


async def _signed_in(base: str, username: str) -> aiohttp.ClientSession:
    http, _ = await signed_in_http(base, username, PASSWORD)
    return http


async def test_both_ends_of_a_partnership_count_the_same_messages(tmp_path: Path) -> None:
    for region in (C, H):
        NodeKeys.generate(region).save(tmp_path / region / "keys", valid_from=0)
    collecting, handling = _config(tmp_path, C, H), _config(tmp_path, H, C)
    _accounts(handling)
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, collecting) as window, serving(server.url, handling) as jinan, \
            aiohttp.ClientSession(headers=HEADERS) as http:
        base_c, base_h = window.address, jinan.address  # type: ignore[attr-defined]
        for _ in range(APPLICATIONS):
            async with http.post(f"{base_c}/api/cases", json={"handling": H}) as reply:
                assert reply.status == 201, await reply.text()

        def settled(node: Node, state: str) -> bool:
            return (node.store.count_states().get(state, 0) == APPLICATIONS
                    and node.store.outbox_backlog() == 0)

        await until(lambda: settled(window, "outcome_received")
                    and settled(jinan, "outcome_acknowledged"), timeout=20)

        async def scrape(base: str) -> Samples:
            async with http.get(f"{base}/metrics") as reply:
                assert reply.status == 200, await reply.text()
                assert reply.headers["Content-Type"].startswith("text/plain; version=")
                return _samples(await reply.text())

        at_c, at_h = await scrape(base_c), await scrape(base_h)

        # Per partner and kind: what one end sent (and JetStream acknowledged), the
        # other end received and applied.
        assert _total(at_c, "tongban_messages_sent_total", partner=H, kind="application") == 3
        assert _total(at_c, "tongban_messages_sent_total", partner=H, kind="outcome_ack") == 3
        for kind in ("received", "decision", "forwarded", "outcome"):
            assert _total(at_h, "tongban_messages_sent_total", partner=C, kind=kind) == 3, kind
        for sender, receiver, partner_of_sender, partner_of_receiver in (
                (at_c, at_h, H, C), (at_h, at_c, C, H)):
            sent = _total(sender, "tongban_messages_sent_total", partner=partner_of_sender)
            assert sent == _total(sender, "tongban_messages_acknowledged_total",
                                  partner=partner_of_sender)
            assert sent == _total(receiver, "tongban_messages_received_total",
                                  partner=partner_of_receiver, outcome="applied")
        assert _total(at_c, "tongban_messages_sent_total") == 6
        assert _total(at_h, "tongban_messages_sent_total") == 12
        assert _total(at_h, "tongban_messages_rejected_total") == 0
        assert _total(at_h, "tongban_message_delivery_seconds_count", partner=C) == 12

        # Each protocol step of the handling side has its latency observed, per partner.
        for step in ("received", "accepted", "forwarded", "concluded", "outcome_acknowledged"):
            assert _total(at_h, "tongban_step_latency_seconds_count", step=step, partner=C) == 3, step
        assert _total(at_c, "tongban_step_latency_seconds_count", step="outcome_received",
                      partner=H) == 3
        assert _total(at_c, "tongban_step_latency_seconds_count", step="collected") == 0  # first

        for samples in (at_c, at_h):
            assert _total(samples, "tongban_nats_connected") == 1
            assert ("tongban_inbox_backlog", ()) in samples
            assert ("tongban_queue_length", (("queue", "engine"),)) in samples
            for clock in ("notice", "promise"):
                for level in ("soon", "overdue"):
                    assert (("tongban_deadline_cases", (("clock", clock), ("level", level)))
                            in samples)
            assert _total(samples, "tongban_deadline_cases") == 0
            assert _total(samples, "tongban_process_resident_memory_bytes") > 0
        assert at_c[("tongban_outbox_backlog", (("partner", H),))] == 0
        assert at_h[("tongban_outbox_backlog", (("partner", C),))] == 0
        assert at_h[("tongban_cases", (("state", "outcome_acknowledged"),))] == 3
        assert at_h[("tongban_partner_last_seen_seconds", (("partner", C),))] > time.time() - 60
        assert not any("case" in dict(labels) for _, labels in at_h)  # no case ids as labels

        # Who may read it: the local token, or an operator's session; nobody else.
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.get(f"{base_h}/metrics") as reply:
                assert reply.status == 401
                assert (await reply.json())["error"] == "sign_in"
            async with anonymous.get(f"{base_h}/metrics",
                                     headers={"Authorization": "Bearer " + "x" * 40}) as reply:
                assert reply.status == 401
                assert (await reply.json())["error"] == "bad_token"
        async with await _signed_in(base_h, "clerk") as clerk, clerk.get(f"{base_h}/metrics") as reply:
            assert reply.status == 403
            assert (await reply.json())["error"] == "role"
        async with await _signed_in(base_h, "ops") as ops, ops.get(f"{base_h}/metrics") as reply:
            assert reply.status == 200
            assert "tongban_messages_received_total" in await reply.text()


# ---------------------------------------------------------------- logs


def _record(message: str, *args: Any, exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord("tongban.test", logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_json_log_line_masks_personal_data() -> None:
    record = _record("申请人 %s 身份证 %s 手机 %s 座机 0531-88881234 旧证 370102900307123",
                     Personal.name("张三丰"), "37010219900307123X", "13812345678")
    MaskingFilter().filter(record)
    line = JsonFormatter(region=H).format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == ("申请人 张*丰 身份证 3701**********123X 手机 138****5678 "
                                "座机 053******1234 旧证 370*********123")
    assert (entry["level"], entry["logger"], entry["region"]) == ("WARNING", "tongban.test", H)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", entry["time"])
    for secret in ("张三丰", "37010219900307123X", "13812345678", "88881234", "370102900307123"):
        assert secret not in line


def test_an_exception_and_the_text_format_are_masked_too() -> None:
    try:
        raise ValueError("bad phone +86 139-1234-5678 for input_value='李四', input_type=str]")
    except ValueError:
        record = _record("failed", exc_info=sys.exc_info())
    MaskingFilter().filter(record)
    entry = json.loads(JsonFormatter().format(record))
    assert "139-1234-5678" not in entry["exception"]
    assert "+86 139******5678" in entry["exception"]
    assert "李四" not in entry["exception"]
    assert "region" not in entry  # not known: left out

    stream = io.StringIO()
    handler = configure("text", stream=stream)
    try:
        logging.getLogger("tongban.test").warning("call %s", "18612345678")
    finally:
        logging.getLogger().removeHandler(handler)
    assert "186****5678" in stream.getvalue()
    assert "18612345678" not in stream.getvalue()


def test_the_node_s_own_identifiers_stay_and_long_lines_are_quick() -> None:
    plain = ("case 370100-20260601-000001 message 410100-000000000012 at 1780000000000 "
             "region 370100 digest 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
    assert mask_text(plain) == plain
    started = time.perf_counter()
    for hostile in ("1" * 100_000, "0531-" * 20_000, "input_value=" * 10_000, "1 " * 50_000):
        mask_text(hostile)
    assert time.perf_counter() - started < 2.0
