"""The ``tongban`` command line.

Every command explains itself with ``--help``; errors a person can fix are printed
in Chinese and English and exit with status 2, a failed verification with 1.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from node import loop
from node.cli_accounts import accounts
from node.cli_catalog import catalog
from node.cli_circle import circle
from node.cli_http import fail, http_json, node_options
from node.cli_topology import topology
from protocol import ProtocolError
from protocol.fields import REGION_PATTERN
from receipts import BundleError, KeyFileError, KeyRegistry, NodeKeys, verify_bundle
from receipts.circle import check_registry, decode_registry, key_records
from receipts.keys import KeyRing
from receipts.registry import records_from_public_json

__all__ = ["main"]

_REGION = re.compile(REGION_PATTERN)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tongban")
def main() -> None:
    """tongban: the 跨域通办 node of one region.

    Each region runs one node. It publishes its 通办 matter catalog, receives
    applications collected by remote 通办专窗 windows, runs each through the
    signed receive → first-review → forward protocol, and returns the outcome.
    """


@main.group()
def keys() -> None:
    """Manage the node's signing and encryption keys."""


@keys.command("new")
@click.option("--region", required=True, help="GB/T 2260 region code of this node, e.g. 370100.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory to write sign.pem, encrypt.pem (mode 0600) and public.json.")
def keys_new(region: str, out: Path) -> None:
    """Generate an Ed25519 signing key and an X25519 encryption key.

    The private keys are written with mode 0600 and never overwritten. Send
    public.json to the convening region (牵头单位) to join the circle.
    """
    if not _REGION.match(region):
        fail(f"地区代码 {region!r} 不是 GB/T 2260 代码（6、9 或 12 位数字）",
              f"region {region!r} is not a GB/T 2260 code (6, 9 or 12 digits)")
    generated = NodeKeys.generate(region)
    try:
        generated.save(out, valid_from=int(time.time() * 1000))
    except KeyFileError as exc:
        fail("无法写入密钥", str(exc))
    except OSError as exc:
        fail(f"无法写入目录 {out}", f"cannot write to {out}: {exc.strerror}")
    click.echo(f"signing key    {generated.sign_key_id}")
    click.echo(f"encryption key {generated.encrypt_key_id}")
    click.echo(f"written to     {out}/ (sign.pem, encrypt.pem: mode 0600; public.json)")


@keys.command("nats-account")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory to write account.nk (mode 0600) and account.pub: in the region's "
                   "copy of the topology folder, regions/<region code>/.")
def keys_nats_account(out: Path) -> None:
    """Generate the region's own NATS account key (an NKey).

    The seed (account.nk, mode 0600) stays with the region: it signs the region's
    NATS users ('tongban topology creds'). Send the public key (A…, also in
    account.pub) to the hub operator, who admits the account with 'tongban topology
    admit FOLDER <region> --account A…', and give it with the join request
    ('tongban circle request-join --nats-account A…'). Never overwrites a seed.
    """
    from node.natsauth import new_key, write_private

    seed_file = out / "account.nk"
    if seed_file.exists():
        fail(f"账户私钥 {seed_file} 已存在，不会覆盖",
             f"{seed_file} already exists; not overwriting an account seed")
    pair = new_key("account")
    assert pair.seed is not None
    try:
        write_private(seed_file, pair.seed + "\n")
        (out / "account.pub").write_text(pair.public + "\n", encoding="utf-8")
    except OSError as exc:
        fail(f"无法写入目录 {out}", f"cannot write to {out}: {exc.strerror}")
    click.echo(f"NATS account   {pair.public}")
    click.echo(f"written to     {out}/ (account.nk: mode 0600; account.pub)")


@keys.command("rotate")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="The node's key folder (keys_dir, by default <data_dir>/keys).")
def keys_rotate(directory: Path) -> None:
    """Prepare the next key pair (密钥轮换) in DIR/next/.

    The node keeps signing with its current keys. Then ask to rotate with 'tongban
    circle rotate' (the request brings the new keys, endorsed by the current signing
    key); once the convener approves and the registry lists the new keys, the node
    signs with them, and keeps opening messages sealed to its earlier encryption key
    until that key ends (the overlap) and a grace period after. Ended pairs move to
    DIR/retired/. Nothing is overwritten; one prepared pair at a time.
    """
    try:
        prepared = KeyRing.prepare(directory, valid_from=int(time.time() * 1000))
    except KeyFileError as exc:
        fail("无法准备新密钥", str(exc))
    except OSError as exc:
        fail(f"无法写入目录 {directory}", f"cannot write to {directory}: {exc.strerror}")
    click.echo(f"next signing key    {prepared.sign_key_id}")
    click.echo(f"next encryption key {prepared.encrypt_key_id}")
    click.echo(f"written to          {directory / 'next'}/ (mode 0600; public.json)")
    click.echo("then: tongban circle rotate --contact-name <联系人> --node <this node's address>, "
               f"and have the convener approve with --key {prepared.sign_key_id}")


def _trusted_registry(path: Path, anchor: Path | None) -> KeyRegistry:
    """The member keys of a signed circle registry, once the convener's key (``anchor``)
    is seen to have signed it."""
    if anchor is None:
        fail("--registry 需要 --anchor（牵头单位的 public.json）",
             "--registry needs --anchor, the convener's public.json")
    try:
        signers = KeyRegistry(records_from_public_json(json.loads(anchor.read_text("utf-8"))))
    except (OSError, ValueError, KeyFileError) as exc:
        fail(f"无法读取牵头单位公钥 {anchor}", f"cannot use {anchor} as the anchor: {exc}")
    try:
        signed = decode_registry(path.read_bytes())
        checked = check_registry(signed, signers, circle=signed.registry.circle,
                                 now=signed.registry.issued_at)
    except OSError as exc:
        fail(f"无法读取 {path}", f"cannot read {path}: {exc.strerror}")
    except (ProtocolError, ValueError) as exc:
        fail(f"通办圈名册 {path} 未通过校验", f"the circle registry {path} does not check: {exc}")
    return KeyRegistry(key_records(checked.members))


@main.command()
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trust", "trusted", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="public.json of a region whose keys you trust (repeat for each side).")
@click.option("--registry", "circle_registry", type=click.Path(dir_okay=False, path_type=Path),
              help="A signed circle registry to trust (a node keeps the one it trusts in its "
                   "data_dir as circle-registry.bin); needs --anchor.")
@click.option("--anchor", type=click.Path(dir_okay=False, path_type=Path),
              help="The convener's public.json, which must have signed --registry.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(bundle: Path, trusted: tuple[Path, ...], circle_registry: Path | None,
           anchor: Path | None, as_json: bool) -> None:
    """Check an evidence bundle offline: signatures, decryption, chains, causes.

    Exits 0 when every link holds; otherwise names the first broken link and
    exits 1. With --registry (a circle's members) or --trust (partners' public.json),
    every key the bundle uses must be a trusted one and is judged by the trusted
    validity; without them, compare the keys it lists with the registry you trust.
    """
    try:
        data = bundle.read_bytes()
    except OSError as exc:
        fail(f"无法读取 {bundle}", f"cannot read {bundle}: {exc.strerror}")
    registry = None
    if circle_registry is not None and trusted:
        fail("--registry 与 --trust 只能选一个", "give either --registry or --trust, not both")
    if circle_registry is not None:
        registry = _trusted_registry(circle_registry, anchor)
    elif anchor is not None:
        fail("--anchor 需与 --registry 一起使用", "--anchor goes with --registry")
    if trusted:
        registry = KeyRegistry()
        for path in trusted:
            try:
                for record in records_from_public_json(json.loads(path.read_text("utf-8"))):
                    registry.add(record)
            except (OSError, ValueError, KeyFileError) as exc:
                fail(f"无法读取可信公钥 {path}", f"cannot use {path} as trusted keys: {exc}")
    try:
        report = verify_bundle(data, registry)
    except BundleError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "link": exc.link, "problem": exc.problem},
                                  ensure_ascii=False))
        else:
            click.echo(f"证据包校验失败 / bundle does NOT verify\n"
                       f"first broken link: {exc.link}\nproblem: {exc.problem}")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"ok": True, "case": report.case, "made_by": report.made_by,
                               "envelopes": report.envelopes, "chains": report.chains,
                               "last": report.last_kinds, "keys": report.keys},
                              ensure_ascii=False))
        return
    click.echo(f"证据包校验通过 / bundle verifies: case {report.case}, made by {report.made_by}")
    click.echo(f"  envelopes: {report.envelopes}")
    for region, count in report.chains.items():
        click.echo(f"  chain of {region}: {count} receipts, last {report.last_kinds[region]!r}")
    trusting = bool(trusted or circle_registry)
    click.echo("  keys relied on" + (" (all trusted):" if trusting else " (compare with the registry):"))
    for described in report.key_records:
        click.echo(f"    {described}")


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="The node's TOML configuration (see config/examples/).")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True,
              envvar="TONGBAN_LOG_FORMAT", help="Logs on standard error: one JSON object a line "
              "(for a log collector) or text; personal data is masked either way.")
def node(config_path: Path, log_format: str) -> None:
    """Run one region's node until Ctrl-C (starts nats-server itself if no URL is set)."""
    import asyncio

    from config import ConfigError, load_config
    from node.serve import serve, stop_on_signals
    from receipts import KeyFileError as _KeyFileError

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        fail("配置有误", str(exc))

    async def run() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)

        async def ready(node: object, address: str) -> None:
            click.echo(f"tongban node {config.region} {config.name} ready: {address}")

        await serve(config, stop, on_ready=ready)

    _logging(log_format, config.region)
    from node.catalog import CatalogConflict
    from routing.catalog_files import CatalogFileError

    try:
        loop.run(run())
    except _KeyFileError as exc:
        fail("密钥无法加载", str(exc))
    except ConfigError as exc:
        fail("配置有误", str(exc))
    except CatalogFileError as exc:
        fail("本地区事项清单有误，节点未启动", str(exc))
    except CatalogConflict as exc:
        fail("事项清单与已发布的版本冲突，节点未启动", str(exc))


@main.command()
@click.option("--base-port", default=8081, show_default=True,
              help="HTTP port of the first node (0: any free ports).")
@click.option("--once", is_flag=True, help="Walk one sample application, then stop.")
@click.option("--log-format", type=click.Choice(["json", "text"]), default="text", show_default=True,
              envvar="TONGBAN_LOG_FORMAT", help="Logs on standard error (personal data masked).")
def demo(base_port: int, once: bool, log_format: str) -> None:
    """Embedded nats-server and three region nodes (郑州, 济南, 成都) with a sample walk."""

    from node.demo import run_demo

    _logging(log_format)
    sys.exit(loop.run(run_demo(base_port=base_port, once=once)))


@main.command()
@node_options("Web address of the collecting node.")
@click.option("--matter", help="基本编码 of the matter: the node routes it from the catalogs.")
@click.option("--location", help="The applicant's GB/T 2260 location (户籍地, 住所地 or 参保地) "
                                 "that routing turns on; with --matter.")
@click.option("--handling", help="Region code of the handling region (instead of --matter).")
def submit(url: str, matter: str | None, location: str | None, handling: str | None) -> None:
    """Collect and send a sample application at a running node; print its receipt.

    With --matter and --location the node finds the handling region from the
    circle's catalogs (docs/protocol.md §14.1); when there is none, it says exactly
    why. With --handling the sample goes to that region."""
    if (matter is None) == (handling is None):
        fail("请给出 --matter 与 --location，或给出 --handling",
             "give --matter with --location, or --handling")
    if matter is not None and location is None:
        fail("请用 --location 写明申请人所在地的行政区划代码",
             "give the applicant's location code with --location")
    body = {"matter": matter, "location": location} if matter else {"handling": handling}
    reply = http_json("POST", f"{url}/api/cases", body)
    click.echo(f"已收件并推送 / collected and sent: case {reply['case_id']} → {reply['handling']} "
               f"(matter {reply['matter']}, state {reply['state']})")
    click.echo(json.dumps(reply, ensure_ascii=False, indent=2))


@main.command()
@click.argument("case_id")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write it (default: <case id>.tbb).")
@node_options("Web address of the node that holds the case.")
def bundle(case_id: str, out: Path | None, url: str) -> None:
    """Download a case's evidence bundle (证据包); check it with 'tongban verify'."""
    from node.cli_http import request

    data = request("GET", f"{url}/api/cases/{case_id}/bundle")
    target = out or Path(f"{case_id}.tbb")
    partial = target.with_name(target.name + ".part")
    try:
        partial.write_bytes(data)
        partial.replace(target)
    except OSError as exc:
        fail(f"无法写入 {target}", f"cannot write {target}: {exc.strerror}")
    click.echo(f"已写出证据包 / bundle written: {target} ({len(data):,} bytes)")


@main.command()
@click.argument("case_id")
@node_options("Web address of the node that holds the case.")
def status(case_id: str, url: str) -> None:
    """Show a case's state and its receipt chain at a running node."""
    reply = http_json("GET", f"{url}/api/cases/{case_id}")
    click.echo(f"{reply['case_id']}  {reply['state']} {reply['state_zh']}  (peer {reply['peer']})")
    receipts = reply["receipts"]
    assert isinstance(receipts, list)
    for receipt in receipts:
        click.echo(f"  {receipt['actor']}#{receipt['index']:<3} {receipt['kind']:<22} "
                   f"{receipt['digest'][:16]}…  {receipt['data']}")


def _logging(log_format: str = "text", region: str | None = None) -> None:
    """Warnings and errors on standard error, personal data masked (node.logs)."""
    from node.logs import configure

    configure(log_format, region=region)


@contextlib.contextmanager
def _progress_bar(label: str) -> Iterator[Callable[[str, float], None]]:
    """A progress bar on stderr (drawn only on a terminal); yields ``report(phase, fraction)``."""
    if not sys.stderr.isatty():  # a log, not a terminal: one line per phase
        said: set[str] = set()

        def tell(phase: str, fraction: float) -> None:
            kind = re.sub(r"[0-9,/]+", "", phase)
            if kind not in said:
                said.add(kind)
                click.echo(f"{label}: {phase}", err=True)

        yield tell
        return
    with click.progressbar(length=1000, label=label, file=sys.stderr, show_eta=True,
                           show_percent=True) as bar:
        def report(phase: str, fraction: float) -> None:
            bar.label = f"{label}: {phase}"
            bar.update(max(0, min(1000, int(fraction * 1000)) - bar.pos))

        yield report


@main.group()
def bench() -> None:
    """Benchmarks that measure this machine (figures for the closing notes)."""


@bench.command("e2e")
@click.option("--seconds", default=20.0, show_default=True, help="Measuring time of each phase.")
@click.option("--window", default=2000, show_default=True, help="Applications in flight.")
@click.option("--soak", default=0.0, show_default=True,
              help="Also run this many seconds at half load, sampling memory (600 for 10 min).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def bench_e2e(seconds: float, window: int, soak: float, as_json: bool) -> None:
    """Two nodes over one nats-server: apps/s, latency, memory, and the raw NATS floor."""
    from node.bench_e2e import run

    if not as_json:
        click.echo(f"measuring: warm-up, {seconds:g} s at full load, {seconds:g} s at half "
                   f"load{f', {soak:g} s soak' if soak else ''} ...", err=True)
    _logging()
    with _progress_bar("bench e2e") as progress:
        result = run(seconds=seconds, window=window, soak=soak, progress=progress)
    click.echo(json.dumps(result, ensure_ascii=False, indent=None if as_json else 2))


@bench.command("catalog")
@click.option("--regions", default=418, show_default=True, help="Member regions of the circle.")
@click.option("--matters", default=865, show_default=True, help="Matters in each region's catalog.")
@click.option("--updates", default=20, show_default=True, help="Single-entry updates timed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def bench_catalog(regions: int, matters: int, updates: int, as_json: bool) -> None:
    """A new node takes in a whole circle's catalogs: sync time, search latency, update
    propagation, memory."""
    from node.bench_catalog import run

    if not as_json:
        click.echo(f"measuring: {regions} regions × {matters} matters = {regions * matters:,} "
                   f"entries ...", err=True)
    _logging()
    with _progress_bar("bench catalog") as progress:
        result = run(regions=regions, matters=matters, updates=updates, progress=progress)
    click.echo(json.dumps(result, ensure_ascii=False, indent=None if as_json else 2))


@bench.command("circle")
@click.option("--members", default=418, show_default=True, help="Member regions of the circle.")
@click.option("--matters", default=865, show_default=True, help="Matters routed among them.")
@click.option("--workers", default=2, show_default=True,
              help="Processes simulating the members (each member follows the registry).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def bench_circle(members: int, matters: int, workers: int, as_json: bool) -> None:
    """A circle of many members: registry check time, join propagation, routing."""
    from node.bench_circle import run

    if not as_json:
        click.echo(f"measuring a circle of {members} members ...", err=True)
    _logging()
    with _progress_bar("bench circle") as progress:
        result = run(members=members, matters=matters, workers=workers, progress=progress)
    click.echo(json.dumps(result, ensure_ascii=False, indent=None if as_json else 2))


@bench.command("protocol")
@click.option("--seconds", default=2.0, show_default=True, help="Measuring time per figure.")
@click.option("--batch", default=64, show_default=True, help="Items per Merkle-batched signature.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def bench_protocol(seconds: float, batch: int, as_json: bool) -> None:
    """Receipts and envelopes per second next to raw Ed25519 sign/verify."""
    from node.bench_protocol import run

    if not as_json:
        click.echo(f"measuring {seconds:g} s per figure ...", err=True)
    with _progress_bar("bench protocol") as progress:
        result = run(seconds=seconds, batch=batch, progress=progress)
    click.echo(json.dumps(result, indent=None if as_json else 2))


@bench.command("video")
@click.option("--count", default=1000, show_default=True, help="Signals timed one at a time.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def bench_video(count: int, as_json: bool) -> None:
    """The virtual window's signaling: sign-and-check cost, node-to-node hop, rate."""
    from node.bench_video import run

    if not as_json:
        click.echo(f"measuring {count} signals between two nodes ...", err=True)
    _logging()
    with _progress_bar("bench video") as progress:
        result = run(count=count, progress=progress)
    click.echo(json.dumps(result, indent=None if as_json else 2))


main.add_command(accounts)
main.add_command(catalog)
main.add_command(circle)
main.add_command(topology)

if __name__ == "__main__":
    main()
