"""``tongban topology``: the circle's NATS servers (hub cluster, region leaves), keys and TLS.

The folder these commands write is described in docs/topology.md; every server
config in it is run with the folder as working directory.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import click

from config.models import NatsConfig, TlsConfig
from node import loop
from node.cli_http import fail
from node.topology import Topology, TopologyError, default_plan
from protocol.fields import REGION_PATTERN

__all__ = ["topology"]

_REGION = re.compile(REGION_PATTERN)
FOLDER = click.argument("folder", type=click.Path(file_okay=False, path_type=Path))


def _region(code: str) -> str:
    if not _REGION.match(code):
        fail(f"地区代码 {code!r} 不是 GB/T 2260 代码（6、9 或 12 位数字）",
             f"region {code!r} is not a GB/T 2260 code (6, 9 or 12 digits)")
    return code


def _operator_settings(top: Topology, creds: str) -> NatsConfig:
    return NatsConfig(credentials=top.folder / "operator" / creds,
                      tls=TlsConfig(ca=top.folder / "tls" / "ca.pem"))


def _push(top: Topology, region: str) -> None:
    from node.transport import push_account

    try:
        message = loop.run(push_account(top.hub_urls(), _operator_settings(top, "sys-admin.creds"),
                                        top.hub_account_jwt(region)))
    except ConnectionError as exc:
        fail("无法连接枢纽服务器，账户未推送（可稍后用 'tongban topology push' 重试）",
             f"cannot reach the hub; the account was not pushed (retry with 'tongban topology "
             f"push'): {exc}")
    except ValueError as exc:
        fail("枢纽服务器拒绝了账户 JWT", f"the hub refused the account JWT: {exc}")
    click.echo(f"已推送 / pushed: region {region}: {message}")


@click.group()
def topology() -> None:
    """通办圈 NATS 拓扑: a hub cluster plus one leaf server per region, decentralized
    JWT accounts (one per region) and TLS, all written into one folder."""


@topology.command("init")
@FOLDER
@click.option("--region", "regions", multiple=True, required=True,
              help="A member region (GB/T 2260 code); repeat for each.")
@click.option("--convener", help="The convening region (牵头单位): writes the circle registry.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address nodes and servers use to reach the region leaves (and the hub, "
                   "unless --hub-host is given).")
@click.option("--listen", default="127.0.0.1", show_default=True,
              help="Address every server binds (0.0.0.0 in containers).")
@click.option("--port-base", default=4222, show_default=True,
              help="Hub client ports base+0..2, routes base+1000.., leaf connections "
                   "base+3200..; region leaves base+100.. in the order given.")
@click.option("--hub-host", "hub_hosts", multiple=True,
              help="Name of hub server 1, 2, 3 (give three, e.g. hub-1 hub-2 hub-3 in compose).")
@click.option("--leaf-host", help="Address of each region's leaf, '{region}' replaced by its code "
                                  "(e.g. leaf-{region} in compose); default: --host.")
@click.option("--name", "names", multiple=True, help="Another name for every server certificate.")
@click.option("--force", is_flag=True, help="Overwrite a topology already in FOLDER.")
def topology_init(folder: Path, regions: tuple[str, ...], convener: str | None, host: str,
                  listen: str, port_base: int, hub_hosts: tuple[str, ...], leaf_host: str | None,
                  names: tuple[str, ...], force: bool) -> None:
    """Write operator, accounts, credentials, TLS certificates and server configs.

    Seeds, private keys and .creds files are written with mode 0600.
    """
    codes = [_region(r) for r in dict.fromkeys(regions)]
    if convener is not None and convener not in codes:
        fail(f"牵头地区 {convener} 不在 --region 中", f"the convener {convener} is not one of --region")
    if hub_hosts and len(hub_hosts) != 3:
        fail("--hub-host 需给出三个名称", "--hub-host takes three names, one per hub server")
    if not 1024 <= port_base <= 65535 - 3300:
        fail(f"端口基数 {port_base} 超出范围", f"--port-base {port_base} is out of range")
    plan = default_plan(codes, convener=convener, host=host, listen=listen, port_base=port_base,
                        hub_hosts=list(hub_hosts) or None, leaf_host=leaf_host, names=list(names))
    try:
        Topology(folder).init(plan, overwrite=force)
    except TopologyError as exc:
        fail(exc.zh, exc.en)
    except OSError as exc:
        fail(f"无法写入 {folder}", f"cannot write to {folder}: {exc}")
    click.echo(f"topology written to {folder}/")
    click.echo(f"  hub: {', '.join(Topology(folder).hub_urls())} (JetStream domain {plan.hub_domain})")
    for code in codes:
        click.echo(f"  region {code}: leaf {Topology(folder).leaf_url(code)}; node settings "
                   f"regions/{code}/nats.toml")
    click.echo(f"start the servers: tongban topology run {folder} --region …")


@topology.command("admit")
@FOLDER
@click.argument("region")
@click.option("--account", help="The region's NATS account public key (A…), if the region made its "
                                "own key; otherwise one is made here.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address of the region's leaf.")
@click.option("--port", type=int, help="Client port of the region's leaf (default: the next free).")
@click.option("--convener", is_flag=True, help="The region is the convener.")
@click.option("--push/--no-push", default=True, show_default=True,
              help="Push the account JWT to the running hub at once.")
def topology_admit(folder: Path, region: str, account: str | None, host: str, port: int | None,
                   convener: bool, push: bool) -> None:
    """Admit a new REGION: mint its account JWTs and push the hub's to the running hub.

    No server restarts and no other member's JWT changes. Then start the region's
    leaf ('run --region REGION --no-hub') and its node.
    """
    top = Topology(folder)
    try:
        plan = top.plan
        if port is None:
            used = [r.port for r in plan.regions.values()] or [plan.hub[0].client_port + 99]
            port = max(used) + 1
        top.admit(_region(region), host=host, port=port, account=account, convener=convener)
    except TopologyError as exc:
        fail(exc.zh, exc.en)
    click.echo(f"admitted / 已准入: region {region}, leaf {top.leaf_url(region)}")
    if account is not None:
        click.echo(f"  the region mints its own users: 'tongban topology creds {folder} {region}' "
                   f"with regions/{region}/account.nk")
    if push:
        _push(top, region)


@topology.command("push")
@FOLDER
@click.argument("region")
def topology_push(folder: Path, region: str) -> None:
    """Push REGION's account JWT to the running hub again (after a failed 'admit')."""
    top = Topology(folder)
    try:
        top.hub_account_jwt(_region(region))
    except TopologyError as exc:
        fail(exc.zh, exc.en)
    _push(top, region)


@topology.command("creds")
@FOLDER
@click.argument("region")
@click.option("--allow-publish", "extra", multiple=True,
              help="Another subject the node may publish to (a department on NATS); repeat.")
def topology_creds(folder: Path, region: str, extra: tuple[str, ...]) -> None:
    """(The region) mint its leaf's and its node's credentials with its account seed
    (regions/REGION/account.nk)."""
    try:
        Topology(folder).creds(_region(region), extra_publish=extra)
    except TopologyError as exc:
        fail(exc.zh, exc.en)
    click.echo(f"written: regions/{region}/leaf.creds, regions/{region}/node.creds (mode 0600)")


@topology.command("check")
@FOLDER
def topology_check(folder: Path) -> None:
    """Ask nats-server whether every server config in FOLDER is valid (nats-server -t)."""
    from node.natsd import NatsServerError, check_config

    top = Topology(folder)
    try:
        configs = top.server_configs(hub=True, regions=tuple(top.plan.regions))
    except TopologyError as exc:
        fail(exc.zh, exc.en)
    bad = 0
    for name, path in configs.items():
        try:
            problem = check_config(path, folder)
        except NatsServerError as exc:
            fail("找不到 nats-server", str(exc))
        click.echo(f"  {name:<20} {'ok' if problem is None else problem}")
        bad += problem is not None
    if bad:
        fail(f"{bad} 个配置无效", f"{bad} configuration(s) are invalid")


@topology.command("buckets")
@FOLDER
def topology_buckets(folder: Path) -> None:
    """Create the circle's shared buckets (catalog, registry) on the running hub."""
    from node.transport import ensure_shared_buckets

    top = Topology(folder)
    try:
        made = loop.run(ensure_shared_buckets(top.hub_urls(), _operator_settings(
            top, "exchange-admin.creds"), replicas=min(3, len(top.plan.hub))))
    except TopologyError as exc:
        fail(exc.zh, exc.en)
    except ConnectionError as exc:
        fail("无法在枢纽上创建共享存储桶", f"cannot create the shared buckets on the hub: {exc}")
    click.echo(f"shared buckets: {'created ' + ', '.join(made) if made else 'already there'}")


@topology.command("run")
@FOLDER
@click.option("--hub/--no-hub", default=True, show_default=True, help="Run the three hub servers.")
@click.option("--region", "regions", multiple=True, help="Run this region's leaf; repeat.")
def topology_run(folder: Path, hub: bool, regions: tuple[str, ...]) -> None:
    """Run hub servers and/or region leaves until Ctrl-C (logs in data/<server>/)."""
    from node.natsd import NatsServerError, topology_servers
    from node.serve import stop_on_signals
    from node.transport import ensure_shared_buckets

    top = Topology(folder)
    try:
        servers = topology_servers(top, hub=hub, regions=tuple(_region(r) for r in regions))
        plan = top.plan
    except TopologyError as exc:
        fail(exc.zh, exc.en)
    if not servers:
        fail("没有要运行的服务器", "nothing to run: give --hub or --region")

    async def run() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        try:
            hubs = [s for s in servers.values() if s.name.startswith("hub-")]
            await asyncio.gather(*(s.start() for s in hubs))
            if hubs:
                made = await _buckets_when_ready(top, len(plan.hub))
                click.echo(f"hub up; shared buckets {'created' if made else 'present'}")
            for server in servers.values():
                if server not in hubs:
                    await server.start()
                    await asyncio.sleep(0.2)  # stagger: leaves connecting at once storm the hub
            for server in servers.values():
                click.echo(f"  {server.name:<20} pid {server.pid}  {server.host}:{server.port}")
            click.echo("running; Ctrl-C stops every server")
            await stop.wait()
        finally:
            for server in servers.values():
                await server.stop()

    async def _buckets_when_ready(top: Topology, count: int) -> list[str]:
        for _ in range(60):  # the hub's JetStream needs its meta leader first
            try:
                return await ensure_shared_buckets(top.hub_urls(), _operator_settings(
                    top, "exchange-admin.creds"), replicas=min(3, count))
            except ConnectionError:
                await asyncio.sleep(1.0)
        raise NatsServerError("共享存储桶无法创建 / the shared buckets could not be created")

    try:
        loop.run(run())
    except NatsServerError as exc:
        fail("服务器未能启动", str(exc))
