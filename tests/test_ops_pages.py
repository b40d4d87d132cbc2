"""The operators' pages (运维) in a real browser, across two running nodes on one embedded
nats-server: 郑州 (410100) collects applications for 济南 (370100), whose 运维 watches
the 运行监控 dashboard follow the traffic live, retries a dead letter from the page once
the department answers again, marks a refused message handled (both audited), traces a
case across both regions and downloads its evidence bundle, and reads the 时限预警; then a
partner is stopped and restarted and shows as silent, then healthy. Screenshots go to
test-artifacts/web/ops-*.png."""

from __future__ import annotations

import asyncio
import datetime
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import nats
import pytest
from playwright.async_api import Browser, Page, async_playwright
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from config import parse_config
from node.app import Node, wall_clock_ms
from node.engine import Command
from node.metrics import STEP_BUCKETS
from node.natsd import EmbeddedNats
from node.store import Changes, Store
from node.store.accounts import FILENAME, AccountStore
from node.web import ops_data
from node.web.auth import HASHER
from node.web.desk import clock_of
from node.web.ops_cases import escalation
from protocol import bodies as b
from protocol.calendar import WeekdayCalendar, add_working_days
from protocol.fields import date_of, end_of_day
from receipts import NodeKeys, verify_bundle
from tests.api_token import HEADERS, HTTP
from tests.serving import serving, until
from tests.test_desk_pages import ARTIFACTS, CHROMIUM, PASSWORD, no_horizontal_scroll, signed_in

pytestmark = [pytest.mark.timeout(120)]

WINDOW, JINAN = "410100", "370100"
NAMES = {WINDOW: "郑州市", JINAN: "济南市"}
DEPARTMENT = "dept.jinan.civil"
CHINA = datetime.timezone(datetime.timedelta(hours=8))
#: username -> (name, roles, region of the account, node it is made on)
ACCOUNTS = {
    "ops": ("钱运维", ("operator",), JINAN, JINAN),
    "outsider": ("孙郑州", ("operator",), WINDOW, JINAN),
    "clerk": ("李收件", ("clerk",), JINAN, JINAN),
}


def _config(base: Path, region: str, peer: str) -> Any:
    return parse_config({
        "region": region, "name": NAMES[region], "data_dir": str(base / region), "http": HTTP,
        "auto_review": False,
        "departments": [{"kind": "nats", "name": "济南市民政局", "subject": DEPARTMENT}],
        "retry": {"attempts": 2, "initial_s": 0.05, "max_s": 0.1, "jitter_s": 0,
                  "deadline_s": 10, "timeout_s": 0.5},
        "health": {"heartbeat_seconds": 1, "silent_after_seconds": 3},
        "alerts": {"check_seconds": 1, "min_free_mb": 0, "min_free_percent": 0},
        "peers": [{"region": peer, "name": NAMES[peer],
                   "public": str(base / peer / "keys" / "public.json")}],
    }, base=base, environ={})


def _prepare(base: Path) -> tuple[Any, Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run 'make chromium' (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for region in (WINDOW, JINAN):
        NodeKeys.generate(region).save(base / region / "keys", valid_from=0)
    window, jinan = _config(base, WINDOW, JINAN), _config(base, JINAN, WINDOW)
    store = AccountStore(jinan.data_dir / FILENAME)
    for username, (name, roles, home, _) in ACCOUNTS.items():
        store.create(username=username, display_name=name, roles=roles, region=home,
                     password_hash=HASHER.hash(PASSWORD), now=wall_clock_ms(), actor="test")
    store.close()
    return window, jinan


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"ops-{name}.png"), full_page=True)


def _state(node: Node, case_id: str) -> str | None:
    return (node.store.case_row(case_id) or {}).get("state")


async def _text_is(page: Page, selector: str, text: str, timeout: float = 20_000) -> None:
    await page.wait_for_function(
        "([s, t]) => document.querySelector(s)?.textContent.trim() === t", arg=[selector, text],
        timeout=timeout)


async def _department_answers(url: str) -> Any:
    """The department's own system, answering every handover with ``ok``."""
    client = await nats.connect(url)

    async def answer(msg: Any) -> None:
        await msg.respond(b"ok")

    await client.subscribe(DEPARTMENT, cb=answer)
    await client.flush()
    return client


async def _browser(playwright: Any) -> Browser:
    return await playwright.chromium.launch(executable_path=CHROMIUM,  # type: ignore[no-any-return]
                                            args=["--no-sandbox"])


@pytest.mark.asyncio
async def test_the_operator_watches_traces_retries_and_reads_deadlines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops_data, "INTERVAL_S", 0.5)
    window_config, jinan_config = _prepare(tmp_path)
    ahead = [0]  # ms 济南's clock runs ahead (the deadlines, at the end)
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, window_config) as window, \
            serving(server.url, jinan_config, clock=lambda: wall_clock_ms() + ahead[0],
                    calendar=WeekdayCalendar()) as jinan, \
            aiohttp.ClientSession(headers=HEADERS) as http, async_playwright() as playwright:
        browser = await _browser(playwright)
        department = None
        try:
            # 1. The dashboard, reached from the navigation: connected, nothing sent yet.
            _, ops = await signed_in(browser, jinan, "ops")
            await ops.click("nav a:has-text('运行监控')")
            await ops.wait_for_url("**/ops")
            assert await ops.locator("#nats-state").inner_text() == "已连接"
            row = f"#messages tr[data-partner='{WINDOW}']"
            assert await ops.locator(f"{row} td[data-figure='received']").inner_text() == "0"
            await ops.evaluate("window.notReloaded = true")

            # 2. Traffic flows: the counts go up without a reload, the charts draw it.
            cases = []
            for _ in range(3):
                async with http.post(f"{window.address}/api/cases",  # type: ignore[attr-defined]
                                     json={"handling": JINAN}) as reply:
                    assert reply.status == 201, await reply.text()
                    cases.append((await reply.json())["case_id"])
            await _text_is(ops, f"{row} td[data-figure='received']", "3")
            await _text_is(ops, f"{row} td[data-figure='sent']", "3")  # 签收 back to 郑州
            await _text_is(ops, f"{row} td[data-figure='acknowledged']", "3")
            await ops.wait_for_function("""() => [...document.querySelectorAll(
                '#chart-received polyline')].some(line => line.getAttribute('points')
                .split(' ').length >= 2)""")
            await ops.wait_for_function("""() => document.querySelector(
                '#latency-receive .latency-text').textContent.includes('共 3 次')""")
            assert await ops.locator("#latency-receive svg rect").count() > 0
            assert await ops.evaluate("window.notReloaded") is True
            health = ops.locator(f"#health tr[data-partner='{WINDOW}']")
            assert await health.get_attribute("data-silent") == "no"
            assert "正常" in await health.inner_text()
            assert await no_horizontal_scroll(ops)
            await shot(ops, "01-dashboard-live")

            # 3. One case accepted; nobody answers on the department's subject: a dead
            #    letter, alerted on the dashboard.
            dead = cases[0]
            case = jinan.engine.load_case(dead)
            assert case is not None
            now = jinan.clock()
            result = await jinan.command(Command(dead, "accept", b.Accept(
                doc_no="济民受〔2026〕0001号", accepted_at=now,
                promised_date=case.promised_date_from(now), decided_by="王审核")))
            assert result.outcome == "applied"
            await until(lambda: _state(jinan, dead) == "dead_letter", timeout=20)
            alert = ops.locator("#alert-list li[data-kind='retries_exhausted']")
            await alert.wait_for(timeout=20_000)
            assert "流转失败" in await alert.inner_text()
            assert await ops.evaluate("window.notReloaded") is True
            await shot(ops, "02-dashboard-alert")

            # 4. The department answers again; the operator retries from the page.
            await ops.click("#card-dead a")
            await ops.wait_for_url("**/ops/dead-letters")
            letter = ops.locator(f"#dead-letters tr[data-case='{dead}']")
            assert "济南市民政局" in await letter.locator(".reason").inner_text()
            assert await no_horizontal_scroll(ops)
            await shot(ops, "03-dead-letter")
            department = await _department_answers(server.url)
            await letter.locator("button:has-text('重试')").click()
            await ops.wait_for_url("**/ops/dead-letters?done=retry*")
            assert dead in await ops.locator("#ops-notice").inner_text()
            await until(lambda: _state(jinan, dead) == "processing", timeout=20)
            trail = ops.locator("#ops-audit tbody tr").first
            assert "死信重试流转" in await trail.inner_text()
            assert "ops" in await trail.inner_text()
            assert dead in await trail.inner_text()
            await ops.reload()
            assert await ops.locator(f"#dead-letters tr[data-case='{dead}']").count() == 0

            # 5. A message nobody could read is refused; the operator ignores it.
            client = await nats.connect(server.url)
            try:
                await client.jetstream().publish(f"tb.{JINAN}.in.application", b"not a message",
                                                 headers={"Nats-Msg-Id": "garbage-1"})
            finally:
                await client.close()
            await until(lambda: jinan.store.rejection_rows() != [], timeout=20)
            await ops.reload()
            refused = ops.locator("#rejections tr[data-msg='garbage-1']")
            assert "报文格式错误" in await refused.inner_text()
            await refused.locator("button:has-text('忽略')").click()
            await ops.wait_for_url("**/ops/dead-letters?done=discard*")
            assert await ops.locator("#rejections tr[data-msg='garbage-1']").count() == 0
            assert "garbage-1" in (await ops.locator("#handled-rejections").text_content() or "")
            trail = ops.locator("#ops-audit tbody tr").first
            assert "忽略拒收报文" in await trail.inner_text()
            assert "ops" in await trail.inner_text()
            await shot(ops, "04-audit-trail")
            actions = [row.action for row in jinan_audit(jinan_config)]
            assert actions[:2] == ["discard_rejection", "retry_forward"]

            # 6. The trace, found by its number: both chains verified, the bundle offline.
            await ops.fill("#ops-case", dead)
            await ops.press("#ops-case", "Enter")
            await ops.wait_for_url(f"**/ops/cases/{dead}")
            verdict = await ops.locator("#trace-verdict").inner_text()
            assert "签名有效、回执链完整" in verdict
            assert "证据包校验通过" in verdict
            receipts = ops.locator("#trace-receipts tbody tr")
            assert await receipts.count() >= 6
            assert set(await receipts.evaluate_all("rows => rows.map(r => r.dataset.ok)")) == {"yes"}
            actors = set(await receipts.evaluate_all("rows => rows.map(r => r.dataset.actor)"))
            assert actors == {WINDOW, JINAN}
            kinds = await receipts.evaluate_all("rows => rows.map(r => r.dataset.kind)")
            for kind in ("collected", "submitted", "accepted", "dead_lettered", "forwarded"):
                assert kind in kinds, kind
            directions = set(await ops.locator("#trace-messages tbody tr").evaluate_all(
                "rows => rows.map(r => r.dataset.direction)"))
            assert directions == {"in", "out"}
            assert await no_horizontal_scroll(ops)
            await shot(ops, "05-trace")
            async with ops.expect_download() as download_info:
                await ops.click("#download-bundle")
            download = await download_info.value
            saved = await download.path()
            assert saved is not None
            report = verify_bundle(await asyncio.to_thread(Path(saved).read_bytes),
                                   jinan.registry)
            assert report.case == dead
            assert set(report.chains) == {WINDOW, JINAN}
            response = await ops.goto("/ops/cases/no-such-case")
            assert response is not None
            assert response.status == 404
            assert "请核对办件编号" in await ops.locator(".next-step").inner_text()

            # 7. 济南's clock moves on to the day before the 补正 notice of the two cases
            #    still to review: both are listed at 1 级 提醒, counted for 郑州.
            snapshot = jinan.store.case_snapshot(cases[1]) or {}
            due_day = date_of(snapshot["timers"]["notice"])
            calendar = WeekdayCalendar()
            day_before = due_day - datetime.timedelta(days=1)
            while not calendar.is_working_day(day_before):
                day_before -= datetime.timedelta(days=1)
            assert add_working_days(calendar, day_before, 1) == due_day
            target = datetime.datetime.combine(day_before, datetime.time(10), CHINA)
            ahead[0] = int(target.timestamp() * 1000) - wall_clock_ms()
            _, ops = await signed_in(browser, jinan, "ops")  # the old session went idle
            await ops.goto("/ops/deadlines")
            listed = ops.locator("#deadlines tbody tr")
            assert await listed.count() == 2
            assert set(await listed.evaluate_all("rows => rows.map(r => r.dataset.case)")) == \
                set(cases[1:])
            assert set(await listed.evaluate_all("rows => rows.map(r => r.dataset.level)")) == {"1"}
            assert "补正告知期限" in await listed.first.inner_text()
            assert "提醒" in await listed.first.inner_text()
            counted = ops.locator(f"#by-partner tr[data-partner='{WINDOW}']")
            assert await counted.locator("td[data-level='1']").inner_text() == "2"
            assert await no_horizontal_scroll(ops)
            await shot(ops, "06-deadlines")
            await listed.first.locator("a.mono").click()
            await ops.wait_for_url("**/ops/cases/*")
        finally:
            if department is not None:
                await department.close()
            await browser.close()


def jinan_audit(config: Any) -> list[Any]:
    store = AccountStore(config.data_dir / FILENAME)
    try:
        return store.audit(10)
    finally:
        store.close()


@pytest.mark.asyncio
async def test_a_partner_stopped_and_restarted_shows_silent_then_healthy(tmp_path: Path) -> None:
    window_config, jinan_config = _prepare(tmp_path)
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, jinan_config) as jinan, async_playwright() as playwright:
        browser = await _browser(playwright)
        try:
            _, ops = await signed_in(browser, jinan, "ops")
            partner = f"#health tr[data-partner='{WINDOW}']"
            async with serving(server.url, window_config):
                await ops.goto("/ops")
                await ops.wait_for_selector(f"{partner}[data-silent='no']", timeout=20_000)
                assert await ops.locator("#no-alerts").count() == 1
            # 郑州 stopped: silent after its 3 s, on the open page, with an alert on top.
            await ops.wait_for_selector(f"{partner}[data-silent='yes']", timeout=20_000)
            assert "无心跳" in await ops.locator(partner).inner_text()
            alert = ops.locator(f"#alert-list li[data-key='partner_silent:{WINDOW}']")
            await alert.wait_for(timeout=20_000)
            assert "郑州市" in await alert.inner_text()
            await shot(ops, "07-partner-silent")
            async with serving(server.url, window_config):
                await ops.wait_for_selector(f"{partner}[data-silent='no']", timeout=20_000)
                await ops.locator("#no-alerts").wait_for(timeout=20_000)
                history = await ops.locator("#alert-history").inner_text()
                assert "恢复" in history
                assert "告警" in history
                await shot(ops, "08-partner-healthy")

            # Only the node's own operators: a clerk and another region's operator are refused.
            for username, status in (("clerk", 403), ("outsider", 403)):
                _, other = await signed_in(browser, jinan, username)
                response = await other.goto("/ops")
                assert response is not None
                assert response.status == status, username
                assert await other.locator("nav a:has-text('运行监控')").count() == (
                    1 if username == "outsider" else 0)
        finally:
            await browser.close()


# ---------------------------------------------------------------- no browser


def test_escalation_levels_follow_the_desk_clocks() -> None:
    """1 提醒: due by the end of the next working day; 2 督办: overdue; 3 通报: overdue by
    more than 3 working days (Monday to Friday here)."""
    node: Any = SimpleNamespace(engine=SimpleNamespace(calendar=WeekdayCalendar()))
    monday = datetime.date(2026, 6, 1)
    now = int(datetime.datetime.combine(monday, datetime.time(9), CHINA).timestamp() * 1000)

    def level(state: str, snapshot: dict[str, Any], late: int = 0) -> int:
        return escalation(clock_of(node, state, snapshot, now), late)

    def notice(day: datetime.date) -> dict[str, Any]:
        return {"timers": {"notice": end_of_day(day)}}

    assert level("received", notice(datetime.date(2026, 6, 5))) == 0
    assert level("received", notice(datetime.date(2026, 6, 2))) == 1
    assert level("received", notice(datetime.date(2026, 5, 29)), late=1) == 2
    assert level("processing", {"promised_date": "2026-05-26", "timers": {}}, late=3) == 2
    assert level("processing", {"promised_date": "2026-05-25", "timers": {}}, late=4) == 3
    assert level("suspended", {"promised_date": "2026-05-25", "suspended_on": "2026-05-20",
                               "timers": {}}) == 0


def test_the_figures_are_the_registrys_summed_per_partner() -> None:
    registry = CollectorRegistry(auto_describe=False)
    sent = Counter("tongban_messages_sent", "", ("partner", "kind"), registry=registry)
    received = Counter("tongban_messages_received", "", ("partner", "kind", "outcome"),
                       registry=registry)
    backlog = Gauge("tongban_outbox_backlog", "", ("partner",), registry=registry)
    steps = Histogram("tongban_step_latency_seconds", "", ("step", "partner"),
                      buckets=STEP_BUCKETS, registry=registry)
    sent.labels(WINDOW, "received").inc(3)
    sent.labels(WINDOW, "decision").inc(2)
    received.labels(WINDOW, "application", "applied").inc(4)
    received.labels(WINDOW, "application", "rejected").inc(1)
    backlog.labels(WINDOW).set(7)
    for seconds in (0.02, 0.03, 40):
        steps.labels("received", WINDOW).observe(seconds)
    steps.labels("accepted", WINDOW).observe(2)
    steps.labels("refused", JINAN).observe(2)
    found = ops_data.figures(registry, int(time.time() * 1000))
    partner = found.partners[WINDOW]
    assert (partner["sent"], partner["received"], partner["outbox"]) == (5, 4, 7)
    bounds, bars, count, _ = found.latency["receive"]
    assert count == 3
    assert bars[bounds.index(0.05)] == 2
    assert bars[bounds.index(60)] == 1
    assert found.latency["review"][2] == 2
    point = ops_data.point_of(found)
    assert point["p"][WINDOW] == [5, 4, 0, 7]
    assert ops_data.bound_text(0.05) == "≤50 毫秒"
    assert ops_data.bound_text(300) == "≤5 分钟"


@pytest.mark.asyncio
async def test_the_store_keeps_forward_errors_and_handled_rejections(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.db")
    store.start()
    try:
        await store.commit(Changes(
            forward_errors=[("c-1", 1000, 1, "HTTP 503"), ("c-1", 2000, 2, "nobody listens")],
            rejections=[{"digest": b"", "msg_id": "m-1", "sender": None, "case_id": None,
                         "code": "malformed", "detail": "bytes", "at": 500}]))
        assert [e["error"] for e in store.forward_errors("c-1")] == ["nobody listens", "HTTP 503"]
        [row] = store.rejection_rows()
        await store.commit(Changes(rejections_handled=[(row["id"], 3000, "ops")]))
        await store.commit(Changes(rejections_handled=[(row["id"], 4000, "other")]))
        assert store.rejection_rows() == []
        [handled] = store.rejection_rows(handled=True)
        assert (handled["handled_at"], handled["handled_by"]) == (3000, "ops")  # the first mark
    finally:
        await store.close()
