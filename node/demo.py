"""``tongban demo``: an embedded nats-server and three region nodes on this machine.

郑州 (410100) runs a 通办专窗 that collects; 济南 (370100) and 成都 (510100) handle.
Until the staff pages exist, the handling nodes review automatically and their
department desks decide at once, so one sample application walks the whole way:
collected → sent → 签收 → 受理 → forwarded → 办结 → acknowledged, and its evidence
bundle is checked exactly as ``tongban verify`` checks it.

Each node gets demo sign-ins for its web pages (``DEMO_ACCOUNTS``), all with one
password made up for this run and printed with the nodes' addresses.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import click

from config import parse_config
from config.models import NodeConfig
from node.app import Node
from node.engine import Command
from node.evidence import bundle_for
from node.natsd import EmbeddedNats
from node.serve import serve, stop_on_signals
from node.store.accounts import FILENAME, ROLES, AccountStore
from protocol.states import STATE_NAMES_ZH
from receipts import NodeKeys, verify_bundle

__all__ = ["DEMO_ACCOUNTS", "REGIONS", "run_demo"]

REGIONS = {"410100": "郑州市", "370100": "济南市", "510100": "成都市"}
COLLECTING = "410100"
#: The sample catalogs shipped with the project (config/catalogs/<region>/).
CATALOGS = Path(__file__).resolve().parent.parent / "config" / "catalogs"
#: Sign-ins every demo node gets: username → (name, role).
DEMO_ACCOUNTS = {"clerk": ("示例收件员", "clerk"), "reviewer": ("示例审核员", "reviewer"),
                 "admin": ("示例管理员", "admin")}


def demo_accounts(configs: list[NodeConfig]) -> str:
    """Create the demo sign-ins of every node (kept ones stay as they are); the password
    of those created now."""
    from node.web.auth import HASHER

    password = f"tongban-{secrets.token_hex(4)}"
    password_hash = HASHER.hash(password)  # one password for all: hashed once
    now = time.time_ns() // 1_000_000
    for config in configs:
        store = AccountStore(config.data_dir / FILENAME)
        try:
            for username, (name, role) in DEMO_ACCOUNTS.items():
                if store.account(username) is None:
                    store.create(username=username, display_name=name, roles=[role],
                                 region=config.region, password_hash=password_hash, now=now,
                                 actor="demo")
        finally:
            store.close()
    return password


def demo_configs(base: Path, base_port: int) -> list[NodeConfig]:
    for region in REGIONS:
        if not (base / region / "keys" / "sign.pem").exists():
            NodeKeys.generate(region).save(base / region / "keys", valid_from=0)
    configs = []
    for offset, (region, name) in enumerate(REGIONS.items()):
        configs.append(parse_config({
            "region": region,
            "name": name,
            "data_dir": str(base / region),
            "catalog": str(CATALOGS / region),
            "http": {"port": base_port + offset if base_port else 0},
            "auto_review": region != COLLECTING,
            "departments": [{"kind": "desk", "name": f"{name}政务服务中心办理窗口",
                             "auto_conclude": region != COLLECTING}],
            "peers": [{"region": r, "name": n, "public": str(base / r / "keys" / "public.json")}
                      for r, n in REGIONS.items() if r != region],
        }, base=base, environ={}))
    return configs


async def run_demo(*, base_port: int = 8081, once: bool = False, keep: Path | None = None) -> int:
    base = keep or Path(tempfile.mkdtemp(prefix="tongban-demo-"))
    stop = asyncio.Event()
    stop_on_signals(stop)
    nodes: dict[str, tuple[Node, str]] = {}
    try:
        async with EmbeddedNats(base / "nats") as nats_server:
            configs = demo_configs(base, base_port)
            password = await asyncio.to_thread(demo_accounts, configs)
            started = asyncio.Event()

            async def ready(node: Node, address: str) -> None:
                nodes[node.region] = (node, address)
                if len(nodes) == len(configs):
                    started.set()

            runs = [asyncio.create_task(serve(config, stop, urls=[nats_server.url], on_ready=ready))
                    for config in configs]
            waiting = asyncio.create_task(started.wait())
            await asyncio.wait([waiting, *runs], return_when=asyncio.FIRST_COMPLETED)
            if not started.is_set():
                stop.set()
                await asyncio.gather(*runs, return_exceptions=True)
                for run in runs:
                    if run.done() and run.exception():
                        raise run.exception()  # type: ignore[misc]
                return 1
            click.echo(f"tongban demo · NATS {nats_server.url} · data {base}")
            for region, (node, address) in sorted(nodes.items()):
                role = "通办专窗（收件地）" if region == COLLECTING else "办理地（自动初审、部门自动办结）"
                click.echo(f"  {REGIONS[region]} {region}  {address}/   {address}/api/health   {role}")
                click.echo(f"      本机接口令牌 / local API token: {node.config.token_path}")
            click.echo("网页登录 / web sign-in, on every node: " + ", ".join(
                f"{username} ({ROLES[role]})" for username, (_, role) in DEMO_ACCOUNTS.items())
                + f"; 密码 / password: {password}")
            ok = await walk(nodes[COLLECTING][0], "370100")
            if once:
                stop.set()
            else:
                window, address = nodes[COLLECTING]
                click.echo(f"\nRunning. Try: tongban submit --node {address} --handling 510100 "
                           f"--token-file {window.config.token_path}   (Ctrl-C to stop)")
            await asyncio.gather(*runs)
            return 0 if ok else 1
    finally:
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)


async def walk(collecting: Node, handling: str) -> bool:
    """One sample application through the whole protocol, printed step by step."""
    await collecting.catalog.wait_for_region(handling, timeout=15.0)
    now = collecting.clock()
    click.echo(f"\n示例办件 / sample application: {REGIONS[collecting.region]} → {REGIONS[handling]}")
    application = collecting.catalog.sample_application(handling, now, f"ZZ-DEMO-{now % 10**6:06d}")
    click.echo(f"  事项 / matter: {application.matter.name} ({application.matter.code} "
               f"v{application.matter.version})")
    result = await collecting.command(Command(None, "collect", application, peer=handling))
    assert result.case_id is not None
    await collecting.command(Command(result.case_id, "submit"))
    seen = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = collecting.store.case_row(result.case_id)
        state = row["state"] if row else None
        if state != seen:
            click.echo(f"  {result.case_id}: {state} {STATE_NAMES_ZH.get(state or '', '')}")
            seen = state
        if state == "outcome_received":
            break
        await asyncio.sleep(0.05)
    bundle = bundle_for(collecting.store, collecting.registry, collecting.region, result.case_id,
                        collecting.clock())
    report = verify_bundle(bundle)
    click.echo(f"  证据包校验通过 / evidence bundle verifies: {report.chains}")
    return seen == "outcome_received"
