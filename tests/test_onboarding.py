"""docs/onboarding.md, followed step by step against a running circle.

The guide's fenced shell blocks carry markers (``<!-- step: NAME -->``); this test
reads them, writes in the placeholders (``<ACCOUNT>``, ``<NODE_URL>`` ...) from what
earlier steps printed, and runs every command as a real process, in order, each
in the working folder of whoever the guide says runs it: the joining region
(兰州市 620100), the hub operator or the convener (济南市 370100). The circle is the
hub + leaf topology of docs/topology.md on loopback: a three-server hub, the
convener's and a partner's (郑州市 410100) leaves and nodes, running before the
walk begins. The joining region's leaf and node are started by the guide's own
commands, its node from the guide's own ``node.toml``. What the guide promises
after each step is checked here. Blocks marked ``<!-- example -->`` are not run;
their commands must exist with the options they use.

A second test covers a region reached through a relay hub (经由): ``tongban
circle request-join --relay``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import signal
import stat
import sys
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import click
import pytest

from config import load_config, parse_config
from config.models import NatsConfig, TlsConfig
from node.app import Node
from node.children import die_with_parent
from node.cli import main
from node.natsd import EmbeddedNats, ServerProcess, topology_servers
from node.topology import HubServer, Plan, RegionLeaf, Topology
from node.transport import ensure_shared_buckets
from protocol.circle import Contact
from receipts import NodeKeys
from tests.api_token import HEADERS, HTTP, TOKEN_FILE
from tests.cluster import free_port
from tests.serving import serving, until

pytestmark = pytest.mark.timeout(150)

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "onboarding.md"
CIRCLE = "huanghe-2026"
CONVENER, PARTNER, NEWCOMER = "370100", "410100", "620100"
NAMES = {CONVENER: "济南市", PARTNER: "郑州市", NEWCOMER: "兰州市", "370000": "山东省"}

#: The steps of the guide, in order, and who runs each (the working folder).
STEPS = {"keys": "region", "account": "region", "admit": "hub", "pack": "hub", "creds": "region",
         "leaf": "region", "catalog": "region", "node": "region", "join": "region",
         "review": "convener", "approve": "convener", "member": "region", "visible": "partner",
         "search": "region", "submit": "region", "status": "region", "verify": "region"}
#: Steps that run until stopped, and the line that says they are ready.
SERVICES = {"leaf": re.compile(r"running; Ctrl-C"), "node": re.compile(r"ready: (http://\S+)")}


# ---------------------------------------------------------------------- reading the guide

@dataclasses.dataclass(frozen=True)
class Block:
    marker: str  # step | example | file
    name: str
    language: str
    text: str


_BLOCK = re.compile(r"(?:<!-- (step|example|file):? ?([\w.\-]*) -->\n)?```(\w*)\n(.*?)\n```",
                    re.DOTALL)


def guide_blocks(text: str) -> list[Block]:
    return [Block(marker or "", name, language, body)
            for marker, name, language, body in _BLOCK.findall(text)]


def commands(block: Block) -> list[list[str]]:
    """The command lines of a shell block, split as a shell would (continuations joined)."""
    lines = block.text.replace("\\\n", " ").splitlines()
    return [argv for argv in (shlex.split(line, comments=True) for line in lines) if argv]


def fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace(f"<{name}>", value)
    left = re.findall(r"<[A-Z_]+>", text)
    assert not left, f"no value for {left} in {text!r}"
    return text


def test_every_command_block_of_the_guide_is_run_or_an_example_of_a_real_command() -> None:
    blocks = guide_blocks(GUIDE.read_text(encoding="utf-8"))
    shell = [b for b in blocks if b.language == "sh"]
    assert all(b.marker in ("step", "example") for b in shell), \
        [b.text for b in shell if not b.marker]
    assert [b.name for b in shell if b.marker == "step"] == list(STEPS)
    assert [b.name for b in blocks if b.marker == "file"] == ["node.toml"]
    for block in shell:
        for argv in commands(block):
            if argv[0] == "export":  # an environment variable the CLI reads
                assert argv[1].split("=")[0] in {e for p in main.commands["submit"].params
                                                  for e in [getattr(p, "envvar", None)] if e}
                continue
            if argv[0] != "tongban":
                assert argv[0] == "tar", argv
                continue
            command: click.Command = main
            words = argv[1:]
            while isinstance(command, click.Group) and words and words[0] in command.commands:
                command = command.commands[words.pop(0)]
            assert not isinstance(command, click.Group) or all(
                w.startswith("--") for w in words), f"no such command: {argv}"
            known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            for word in words:
                if word.startswith("--"):
                    assert word.split("=")[0] in known, f"{' '.join(argv[:3])}: no option {word}"


# ---------------------------------------------------------------------- running commands

def _environment(**extra: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO),
            "PYTHONUNBUFFERED": "1", **extra}


def _argv(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "node.cli", *argv[1:]] if argv[0] == "tongban" else argv


async def run(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run one command of the guide; its exit status and everything it printed. It calls
    nodes with the token of the folder's own node (``data/api-token``, as the guide
    says), or, in the other regions' folders, with the suite's."""
    own = cwd / "data" / "api-token"
    token_file = str(own) if own.exists() else str(TOKEN_FILE)
    process = await asyncio.create_subprocess_exec(
        *_argv(argv), cwd=cwd, env=_environment(TONGBAN_TOKEN_FILE=token_file),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, out.decode()


class Service:
    """A command of the guide that runs until Ctrl-C (the leaf, the node); output in a log."""

    def __init__(self, name: str, argv: list[str], cwd: Path, log: Path, **env: str) -> None:
        self.name, self.argv, self.cwd, self.log, self.env = name, argv, cwd, log, env
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, ready: re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        with self.log.open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                *_argv(self.argv), cwd=self.cwd, env=_environment(**self.env),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                preexec_fn=die_with_parent)  # and its nats-server child with it
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            found = ready.search(self.output())
            if found:
                return found
            assert self.process.returncode is None, f"{self.name} exited:\n{self.output()}"
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} not ready in {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def stop(self) -> None:
        """Ctrl-C, as the guide says (SIGTERM works as well); killed if it hangs."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


# ---------------------------------------------------------------------- the running circle

def _node_config(top: Topology, base: Path, region: str, **extra: Any) -> Any:
    return parse_config({
        "region": region, "name": NAMES[region], "data_dir": str(base / region),
        "http": HTTP, "nats": top.node_settings(region),
        "circle": {"id": CIRCLE, "convener": CONVENER,
                   "anchor": str(base / CONVENER / "keys" / "public.json")}, **extra},
        base=base, environ={})


@contextlib.asynccontextmanager
async def running_circle(base: Path) -> AsyncIterator[
        tuple[Topology, dict[str, ServerProcess], Node, Node]]:
    """The hub, the convener's and the partner's leaves and nodes; the partner a member."""
    hub = [HubServer(f"hub-{i}", "127.0.0.1", free_port(), free_port(), free_port())
           for i in (1, 2, 3)]
    leaves = {r: RegionLeaf(r, "", "127.0.0.1", free_port(), convener=r == CONVENER)
              for r in (CONVENER, PARTNER)}
    top = Topology(base / "hub" / "circle")
    top.init(Plan(hub=hub, regions=leaves))
    keys = {r: NodeKeys.generate(r) for r in (CONVENER, PARTNER)}
    for region, pair in keys.items():
        pair.save(base / region / "keys", valid_from=0)
    servers: dict[str, ServerProcess] = topology_servers(top, hub=True, regions=(CONVENER, PARTNER))
    hubs = [s for name, s in servers.items() if name.startswith("hub-")]
    try:
        await asyncio.gather(*(s.start() for s in hubs))
        settings = NatsConfig(credentials=top.folder / "operator" / "exchange-admin.creds",
                              tls=TlsConfig(ca=top.folder / "tls" / "ca.pem"))
        for _ in range(60):  # the hub's JetStream elects its meta leader first
            with contextlib.suppress(ConnectionError):
                await ensure_shared_buckets(top.hub_urls(), settings, replicas=3)
                break
            await asyncio.sleep(0.5)
        for region in (CONVENER, PARTNER):
            await servers[f"leaf-{region}"].start()
        async with serving(top.leaf_url(CONVENER), _node_config(
                top, base, CONVENER, auto_review=True,
                catalog=str(REPO / "config" / "catalogs" / CONVENER))) as convener, \
                serving(top.leaf_url(PARTNER), _node_config(top, base, PARTNER)) as partner:
            assert convener.circle is not None
            assert partner.circle is not None
            await partner.circle.request_join(Contact(name="值班员", phone="0371-67180000"))
            await until(lambda: PARTNER in convener.circle.requests, timeout=20)
            await convener.circle.approve(PARTNER, keys[PARTNER].sign_key_id)
            await until(lambda: _member(partner, PARTNER), timeout=20)
            yield top, servers, convener, partner
    finally:
        for server in servers.values():
            await server.stop()


def _member(node: Node, region: str) -> bool:
    return (node.circle is not None and node.circle.current is not None
            and node.circle.current.member(region) is not None)


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


# ---------------------------------------------------------------------- the walk

async def test_a_partner_region_joins_by_following_the_onboarding_guide(tmp_path: Path) -> None:
    blocks = guide_blocks(GUIDE.read_text(encoding="utf-8"))
    steps = {b.name: b for b in blocks if b.marker == "step"}
    node_toml = next(b for b in blocks if b.marker == "file" and b.name == "node.toml")
    region, hub_dir = tmp_path / "lanzhou", tmp_path / "hub"
    region.mkdir()
    async with contextlib.AsyncExitStack() as stack:
        top, servers, convener, partner = await stack.enter_async_context(
            running_circle(tmp_path))
        assert convener.circle is not None
        values = {"LEAF_HOST": "127.0.0.1", "LEAF_PORT": str(free_port()),
                  "CONVENER_URL": convener.address,  # type: ignore[attr-defined]
                  "PARTNER_URL": partner.address}  # type: ignore[attr-defined]
        folders = {"region": region, "hub": hub_dir, "convener": tmp_path, "partner": tmp_path}
        said: dict[str, str] = {}  # by step, in the order they ran

        async def step(name: str, until_seen: Callable[[str], bool] | None = None,
                       timeout: float = 20.0) -> str:
            """Run a step's commands; with ``until_seen``, again until its output shows
            what the guide says it shows after a few seconds."""
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                output = ""
                for argv in commands(steps[name]):
                    argv = [fill(word, values) for word in argv]
                    if name in SERVICES:
                        service = Service(name, argv, folders[STEPS[name]], tmp_path / f"{name}.log",
                                          TONGBAN_HTTP__PORT="0")  # the guide's port may be taken
                        stack.push_async_callback(service.stop)
                        found = await service.start(SERVICES[name])
                        said[name] = found.group(0)
                        return found.group(1) if found.groups() else found.group(0)
                    status, out = await run(argv, folders[STEPS[name]])
                    assert status == 0, f"step {name}: {' '.join(argv)}\n{out}"
                    output += out
                if until_seen is None or until_seen(output):
                    said[name] = output
                    return output
                assert asyncio.get_running_loop().time() < deadline, f"step {name}:\n{output}"
                await asyncio.sleep(0.5)

        # 1 新成员: the node's keys, private ones 0600; the signing key id is printed.
        out = await step("keys")
        values["SIGN_KEY"] = re.search(r"signing key\s+(ed25519:[0-9a-f]{16})", out).group(1)  # type: ignore[union-attr]
        assert _private(region / "keys" / "sign.pem")
        assert _private(region / "keys" / "encrypt.pem")
        assert (region / "keys" / "public.json").is_file()

        # 2 新成员: its own NATS account; the seed stays with it.
        out = await step("account")
        values["ACCOUNT"] = re.search(r"NATS account\s+(A[A-Z2-7]{55})", out).group(1)  # type: ignore[union-attr]
        account_dir = region / "nats" / "regions" / NEWCOMER
        assert _private(account_dir / "account.nk")
        assert (account_dir / "account.pub").read_text().strip() == values["ACCOUNT"]

        # 3 hub operator: admitted from the public key alone, pushed to the running hub.
        hub_pids = {name: s.pid for name, s in servers.items()}
        out = await step("admit")
        assert "已推送 / pushed" in out
        admitted = top.region_dir(NEWCOMER)
        assert (admitted / "account.pub").read_text().strip() == values["ACCOUNT"]
        assert not (admitted / "account.nk").exists()  # the seed never left the region

        # 4 hub operator packs the files; they and the convener's public.json are sent.
        await step("pack")
        shutil.copy(hub_dir / f"{NEWCOMER}-nats.tar.gz", region)
        shutil.copy(tmp_path / CONVENER / "keys" / "public.json", region / f"{CONVENER}-public.json")

        # 5 新成员: mints its users with its own seed.
        await step("creds")
        for name in ("leaf.creds", "node.creds"):
            assert _private(account_dir / name), name
        assert (account_dir / "nats.toml").is_file()
        assert not (region / "nats" / "operator" / "operator.nk").exists()

        # 6 新成员: its leaf, from its own copy of the folder.
        await step("leaf")

        # 7 新成员 fills in its catalog (here: the sample one), and checks it.
        shutil.copytree(REPO / "config" / "catalogs" / NEWCOMER, region / "catalog")
        out = await step("catalog")
        assert "entries are valid" in out

        # 8 新成员: node.toml as the guide shows it; its [nats] is the one nats.toml holds.
        (region / "node.toml").write_text(fill(node_toml.text, values), encoding="utf-8")
        config = load_config(region / "node.toml")
        pasted = tomllib.loads((account_dir / "nats.toml").read_text(encoding="utf-8"))["nats"]
        assert config.nats == NatsConfig.model_validate(pasted)
        assert (config.region, config.circle and config.circle.convener) == (NEWCOMER, CONVENER)
        values["NODE_URL"] = await step("node")

        # 9 新成员 asks to join; 10 the convener sees it with the key to confirm, approves.
        out = await step("join")
        assert f"join request sent: {NEWCOMER} 兰州市 ({values['SIGN_KEY']})" in out
        out = await step("review", lambda o: f"待审批 / waiting: {NEWCOMER} 兰州市" in o)
        assert values["SIGN_KEY"] in out
        assert values["ACCOUNT"] in out
        out = await step("approve")
        assert f"已同意 / approved: {NEWCOMER}" in out
        await until(lambda: _member(convener, NEWCOMER) and _member(partner, NEWCOMER), timeout=20)
        assert convener.circle.current is not None
        member = convener.circle.current.member(NEWCOMER)
        assert member is not None
        assert member.nats_account == values["ACCOUNT"]

        # 11 新成员 sees itself joined; a partner finds its catalog; it finds theirs.
        await step("member", lambda o: f"{NEWCOMER} 兰州市  joined" in o)
        await step("visible", lambda o: f"{NEWCOMER}  异地就医备案" in o)
        await step("search", lambda o: f"{CONVENER}  异地就医备案" in o)

        # 12 新成员's window: routed to 济南市 from the catalogs, signed for and accepted there.
        out = await step("submit")
        assert f"→ {CONVENER}" in out
        values["CASE_ID"] = re.search(r"case (\S+) →", out).group(1)  # type: ignore[union-attr]
        out = await step("status", lambda o: re.search(r"\s(accepted|processing) ", o) is not None)
        assert (convener.store.case_row(values["CASE_ID"]) or {}).get("state") in (
            "accepted", "forwarding", "processing")

        # 13 新成员: the bundle verifies offline; the keys it relied on are the registry's.
        out = await step("verify")
        assert "证据包校验通过 / bundle verifies" in out
        assert "keys relied on (all trusted)" in out  # judged by the circle registry
        assert (region / "first-case.tbb").is_file()
        assert f"chain of {CONVENER}" in out
        verified, _, listed = out.partition("通办圈")
        relied = set(re.findall(r"ed25519:[0-9a-f]{16}", verified.partition("keys relied on")[2]))
        assert values["SIGN_KEY"] in relied
        assert len(relied) == 2  # its own and 济南's
        assert relied <= set(re.findall(r"ed25519:[0-9a-f]{16}", listed))

        assert list(said) == list(STEPS)  # every step of the guide, in its order
        # Nothing of the running hub was restarted for the newcomer.
        assert {name: s.pid for name, s in servers.items()} == hub_pids
        assert all(s.running for s in servers.values())


# ---------------------------------------------------------------------- a relay (经由)

async def test_a_region_reached_through_a_relay_hub_asks_to_join_with_its_relay(
        tmp_path: Path) -> None:
    """济南市 is reached through 山东省's hub node: it asks to join naming it; the registry
    every node adopts says so, and the convener (郑州市) sends to 济南 through 山东."""
    convener_code, hub_code, newcomer_code = "410100", "370000", "370100"
    keys = {r: NodeKeys.generate(r) for r in (convener_code, hub_code, newcomer_code)}
    for region, pair in keys.items():
        pair.save(tmp_path / region / "keys", valid_from=0)

    def config(region: str) -> Any:
        return parse_config({
            "region": region, "name": NAMES.get(region, region), "data_dir": str(tmp_path / region),
            "http": HTTP, "circle": {"id": CIRCLE, "convener": convener_code, "anchor": str(
                tmp_path / convener_code / "keys" / "public.json")}}, base=tmp_path, environ={})

    async def tongban(*args: str) -> tuple[int, str]:
        return await run(["tongban", "circle", *args], tmp_path)

    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, config(convener_code)) as convener, \
            serving(server.url, config(hub_code)) as hub, \
            serving(server.url, config(newcomer_code)) as newcomer, \
            aiohttp.ClientSession(headers=HEADERS) as http:
        assert convener.circle is not None
        assert hub.circle is not None
        await hub.circle.request_join(Contact(name="值班员"))
        await until(lambda: hub_code in convener.circle.requests)
        await convener.circle.approve(hub_code, keys[hub_code].sign_key_id)
        await until(lambda: _member(newcomer, hub_code))  # a registry is held before joining
        url = newcomer.address  # type: ignore[attr-defined]

        for relay, zh, en in (("3701", "不是 GB/T 2260 代码", "not a GB/T 2260 region code"),
                              (newcomer_code, "不能是本地区", "cannot be this region"),
                              ("620000", "不是通办圈成员", "is not a member")):
            status, out = await tongban("request-join", "--contact-name", "值班员", "--relay", relay,
                                        "--node", url)
            assert status == 2, out
            assert zh in out
            assert en in out
        async with http.post(f"{url}/api/circle/join",
                             json={"contact_name": "值班员", "relay": "abc"}) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "bad_relay"
        await asyncio.sleep(0.3)
        assert newcomer_code not in convener.circle.requests  # none of those was sent

        status, out = await tongban("request-join", "--contact-name", "值班员", "--relay", hub_code,
                                    "--node", url)
        assert status == 0, out
        await until(lambda: newcomer_code in convener.circle.requests)
        assert convener.circle.requests[newcomer_code].relay == hub_code
        status, out = await tongban("status", "--node", convener.address)  # type: ignore[attr-defined]
        assert f"经由 / via {hub_code}" in out
        status, out = await tongban("approve", newcomer_code, "--key",
                                    keys[newcomer_code].sign_key_id, "--node",
                                    convener.address)  # type: ignore[attr-defined]
        assert status == 0, out
        for node in (convener, hub, newcomer):
            await until(lambda n=node: _member(n, newcomer_code))
            assert node.circle is not None
            assert node.circle.current is not None
            listed = node.circle.current.member(newcomer_code)
            assert listed is not None
            assert listed.relay == hub_code
        status, out = await tongban("status", "--node", hub.address)  # type: ignore[attr-defined]
        assert f"{newcomer_code} 济南市  joined  经由 / via {hub_code}" in out
        await until(lambda: convener.router.next_hop(newcomer_code) == hub_code)
        # One hop at most: a region reached through a relay cannot be a relay itself.
        status, out = await tongban("request-join", "--contact-name", "值班员", "--relay",
                                    newcomer_code, "--node", hub.address)  # type: ignore[attr-defined]
        assert status == 2, out
        assert "one hop" in out
