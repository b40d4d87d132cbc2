"""The multi-server topology on loopback: a 3-server hub cluster, one leaf per region.

Real nats-servers (TLS on every port, decentralized JWT accounts minted by
``node.natsauth``, one account per region, written by ``node.topology``) and
real nodes in this process. The servers start once for the module; every test
starts the nodes it needs, and every process is stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import nats.errors
import nats.js.errors
import pytest
import pytest_asyncio
from click.testing import CliRunner

from config import parse_config
from config.models import NatsConfig, TlsConfig
from node.cli import main
from node.natsauth import KeyPair, creds_text, jwt_claims, mint_user, new_key, write_private
from node.natsd import ServerProcess, topology_servers
from node.topology import HubServer, Plan, RegionLeaf, Topology, region_domain
from node.transport import ensure_shared_buckets, push_account
from protocol.catalog import CatalogEntry, CatalogMaterial, FormField, TimeLimit
from protocol.fields import credit_check_char
from receipts import NodeKeys
from routing.catalog_files import write_catalog_csv
from tests.api_token import HEADERS, HTTP
from tests.cluster import free_port
from tests.serving import serving, until

pytestmark = pytest.mark.timeout(120)
#: The servers start once, on the module's event loop; so do the tests that use them.
ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

H, C, J = "370100", "410100", "510100"  # handling, collecting, a third member
N = "620100"  # admitted while everything runs
AUTHORITY = "11370100MB2851740" + credit_check_char("11370100MB2851740")
HUKOU = CatalogEntry.model_validate({
    "region": H, "code": "0000100001-370100000000-000-A", "version": 1, "status": "active",
    "effective_from": "2026-01-01", "basic_code": "0000100001", "name": "户口迁移（迁入）",
    "matter_type": "07", "level": 3, "authority": "济南市公安局", "authority_code": AUTHORITY,
    "service_objects": (1,), "handling_forms": (1, 2), "conditions": "申请人在本市有合法稳定住所。",
    "legal_limit": TimeLimit(days=20), "promised_limit": TimeLimit(days=10),
    "scope": "inter_provincial", "modes": ("online", "proxy"),
    "materials": (CatalogMaterial(name="居民户口簿", copies=1),),
    "form": (FormField(name="reason", label="迁移原因", kind="choice", choices=("投靠", "工作")),)})


class Servers:
    """The running topology: its folder and every server process."""

    def __init__(self, top: Topology, processes: dict[str, ServerProcess]) -> None:
        self.top = top
        self.processes = processes

    @property
    def hubs(self) -> list[ServerProcess]:
        return [p for name, p in self.processes.items() if name.startswith("hub-")]

    def settings(self, creds: str) -> NatsConfig:
        return NatsConfig(credentials=self.top.folder / creds,
                          tls=TlsConfig(ca=self.top.folder / "tls" / "ca.pem"))

    async def start_leaf(self, region: str) -> None:
        (process,) = topology_servers(self.top, hub=False, regions=(region,)).values()
        self.processes[process.name] = process
        await process.start()

    async def stop_all(self) -> None:
        for process in self.processes.values():
            await process.stop()


async def _buckets(servers: Servers) -> None:
    for _ in range(60):  # the hub's JetStream elects its meta leader first
        try:
            await ensure_shared_buckets(servers.top.hub_urls(),
                                        servers.settings("operator/exchange-admin.creds"), replicas=3)
            return
        except ConnectionError:
            await asyncio.sleep(0.5)
    raise AssertionError("the shared buckets could not be created")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Servers]:
    base = tmp_path_factory.mktemp("topology")
    hub = [HubServer(f"hub-{i}", "127.0.0.1", free_port(), free_port(), free_port()) for i in (1, 2, 3)]
    regions = {r: RegionLeaf(r, "", "127.0.0.1", free_port(), convener=r == H) for r in (H, C, J)}
    top = Topology(base / "circle")
    top.init(Plan(hub=hub, regions=regions))
    for region in (H, C, J, N):
        NodeKeys.generate(region).save(base / "nodes" / region / "keys", valid_from=0)
    write_catalog_csv([HUKOU], base / "catalog")
    running = Servers(top, topology_servers(top, hub=True, regions=(H, C, J)))
    try:
        await asyncio.gather(*(p.start() for p in running.hubs))
        await _buckets(running)
        for region in (H, C, J):
            await running.start_leaf(region)
            await asyncio.sleep(0.1)  # staggered, as the leaves of a real circle would be
        yield running
    finally:
        await running.stop_all()


def _node(servers: Servers, region: str, **extra: Any) -> Any:
    base = servers.top.folder.parent / "nodes"
    peers = [p for p in (H, C, J, N) if p != region]
    return parse_config({
        "region": region, "name": f"区域{region}", "data_dir": str(base / region),
        "http": HTTP, "nats": servers.top.node_settings(region),
        "peers": [{"region": p, "name": f"区域{p}", "public": str(base / p / "keys" / "public.json")}
                  for p in peers], **extra}, base=base, environ={})


def _handling(servers: Servers) -> Any:
    return _node(servers, H, auto_review=True, catalog=str(servers.top.folder.parent / "catalog"),
                 departments=[{"kind": "desk", "name": "办理窗口", "auto_conclude": True}])


async def _api(method: str, node: Any, path: str, **kwargs: Any) -> Any:
    async with aiohttp.ClientSession(headers=HEADERS) as session, session.request(
            method, f"{node.address}{path}", timeout=aiohttp.ClientTimeout(total=10), **kwargs) as reply:
        assert reply.status < 300, (reply.status, await reply.text())
        return await reply.json() if reply.content_type == "application/json" else await reply.read()


async def _states(node: Any) -> dict[str, int]:
    return dict((await _api("GET", node, "/api/health"))["states"])


async def _wait_state(node: Any, state: str, count: int, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await _states(node)).get(state, 0) < count:
        assert asyncio.get_running_loop().time() < deadline, (state, await _states(node))
        await asyncio.sleep(0.1)


async def _client(servers: Servers, region: str, creds: Path,
                  errors: list[str] | None = None) -> Any:
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc))

    context = ssl.create_default_context(cafile=str(servers.top.folder / "tls" / "ca.pem"))
    return await nats.connect(servers.top.leaf_url(region), user_credentials=str(creds), tls=context,
                              error_cb=on_error, allow_reconnect=False)


# ---------------------------------------------------------------------- the folder

def test_init_writes_a_stable_folder_with_private_files_0600(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["topology", "init", str(tmp_path / "t"), "--region", H,
                                       "--region", C, "--convener", H, "--port-base", "30000"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "t"
    for name in ("topology.json", "operator/operator.jwt", "operator/sys-admin.creds",
                 "tls/ca.pem", "tls/hub-1.pem", "tls/leaf-370100.pem", "hub/hub-1.conf",
                 "hub/hub-3.conf", f"regions/{C}/leaf.conf", f"regions/{C}/node.creds",
                 f"regions/{C}/nats.toml"):
        assert (folder / name).is_file(), name
    for secret in ("operator/operator.nk", "operator/exchange-admin.creds", "tls/ca-key.pem",
                   f"regions/{H}/account.nk", f"regions/{H}/leaf.creds", f"regions/{H}/node.creds"):
        assert (folder / secret).stat().st_mode & 0o777 == 0o600, secret
    top = Topology(folder)
    hub_jwt = jwt_claims(top.hub_account_jwt(H))
    assert hub_jwt["iss"] == top.plan.operator
    assert hub_jwt["sub"] == top.plan.regions[H].account
    assert "jetstream" not in str(hub_jwt["nats"]["limits"])  # nothing stored on the hub
    again = CliRunner().invoke(main, ["topology", "init", str(folder), "--region", H])
    assert again.exit_code == 2
    assert "not overwriting" in again.output
    bad = CliRunner().invoke(main, ["topology", "admit", str(folder), "12"])
    assert bad.exit_code == 2
    assert "GB/T 2260" in bad.output


# ---------------------------------------------------------------------- (e) TLS

@ON_MODULE_LOOP
async def test_a_plain_text_connection_is_refused(servers: Servers) -> None:
    leaf = servers.top.plan.regions[C]
    for url in (servers.top.hub_urls(scheme="nats")[0], f"nats://127.0.0.1:{leaf.port}"):
        with pytest.raises((nats.errors.NoServersError, nats.errors.Error, OSError)):
            await nats.connect(url, user_credentials=str(servers.top.folder / "regions" / C /
                                                         "node.creds"),
                               allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)


# ---------------------------------------------------------------------- (c) permissions

@ON_MODULE_LOOP
async def test_a_region_reaches_only_its_own_inbox_and_the_subjects_it_needs(servers: Servers) -> None:
    errors: list[str] = []
    client = await _client(servers, C, servers.top.folder / "regions" / C / "node.creds", errors)
    try:
        await client.subscribe(f"tb.{H}.in.>")  # another region's inbox subjects
        await client.publish(f"tb.{H}.health", b"forged heartbeat")  # not its own
        await client.publish(f"tb.{C}.in.submit", b"into its own inbox")  # loops: refused
        await client.publish("$KV.TB_CATALOG.x", b"around the mapping")
        with contextlib.suppress(nats.errors.Error, TimeoutError):  # consume H's inbox
            await client.request(f"$JS.{region_domain(H)}.API.CONSUMER.CREATE.TB_IN_{H}", b"{}",
                                 timeout=0.5)
        await client.flush()
        await until(lambda: len(errors) >= 5)
    finally:
        await client.close()
    assert all("permissions violation" in e.lower() for e in errors), errors
    assert any(f"subscription to \"tb.{H}.in.>\"" in e for e in errors), errors
    assert any(f"$js.{region_domain(H)}.api.consumer.create".lower() in e.lower() for e in errors), errors

    # Even a user the region mints for itself without any limit stays inside what its
    # account imports: nothing of H's inbox, nothing of the catalog but its own keys.
    account = KeyPair.from_seed((servers.top.folder / "regions" / C / "account.nk").read_text())
    user = new_key("user")
    assert user.seed is not None
    rogue = servers.top.folder.parent / "rogue.creds"
    write_private(rogue, creds_text(mint_user(account, user, "rogue"), user.seed))
    client = await _client(servers, C, rogue)
    try:
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError,
                            nats.js.errors.ServiceUnavailableError)):
            await client.jetstream(domain=region_domain(H), timeout=1).stream_info(f"TB_IN_{H}")
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            await client.jetstream().publish(f"tb.circle.api.$KV.TB_CATALOG.{H}.forged", b"x", timeout=2)
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            await client.jetstream().publish("tb.circle.api.$KV.TB_CIRCLE.registry", b"x", timeout=2)
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError,
                            nats.js.errors.ServiceUnavailableError)):
            await client.jetstream(prefix="tb.circle.api", timeout=1).delete_stream("KV_TB_CATALOG")
    finally:
        await client.close()


# ---------------------------------------------------------------------- (a) end to end

@ON_MODULE_LOOP
async def test_three_nodes_on_their_own_leaves_exchange_applications(servers: Servers) -> None:
    scan = os.urandom(300_000)
    async with serving(servers.top.leaf_url(H), _handling(servers)) as handling, \
            serving(servers.top.leaf_url(C), _node(servers, C)) as window, \
            serving(servers.top.leaf_url(J), _node(servers, J)) as third:
        # H's catalog went into the hub's shared bucket and came back to C's index.
        await until(lambda: window.catalog.index.counts()["matters"] == 1, timeout=20)
        material = await _api("POST", window, "/api/materials?name=户口簿", data=io.BytesIO(scan),
                              headers={"Content-Type": "application/pdf"})
        await _api("POST", window, "/api/cases", json={"handling": H, "materials": [material["object"]]})
        await _api("POST", third, "/api/cases", json={"handling": H})
        await _wait_state(window, "outcome_received", 1)
        await _wait_state(third, "outcome_received", 1)
        assert sum((await _states(handling)).values()) == 2
        for _ in range(100):  # the scan crossed two JetStream domains into H's object store
            with contextlib.suppress(AssertionError):
                got = await _api("GET", handling, f"/api/materials/{material['object']}")
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the material never arrived")
        assert hashlib.sha256(got).digest() == hashlib.sha256(scan).digest()


# ---------------------------------------------------------------------- (d) admission

@ON_MODULE_LOOP
async def test_a_new_region_is_admitted_by_pushing_its_account_without_a_restart(
        servers: Servers) -> None:
    pids = [p.pid for p in servers.hubs]
    hub_jwt = servers.top.admit(N, host="127.0.0.1", port=free_port())
    answer = await push_account(servers.top.hub_urls(), servers.settings("operator/sys-admin.creds"),
                                hub_jwt)
    assert "updated" in answer or "jwt" in answer.lower()
    await servers.start_leaf(N)
    async with serving(servers.top.leaf_url(H), _handling(servers)), \
            serving(servers.top.leaf_url(N), _node(servers, N)) as newcomer:
        await until(lambda: newcomer.catalog.index.counts()["matters"] == 1, timeout=20)
        await _api("POST", newcomer, "/api/cases", json={"handling": H})
        await _wait_state(newcomer, "outcome_received", 1)
    assert [p.pid for p in servers.hubs] == pids  # not restarted
    assert all(p.running for p in servers.hubs)


# ---------------------------------------------------------------------- (b) cut off

@ON_MODULE_LOOP
async def test_a_region_cut_off_from_the_hub_keeps_collecting_and_drains_later(
        servers: Servers) -> None:
    async with serving(servers.top.leaf_url(H), _handling(servers)), \
            serving(servers.top.leaf_url(C), _node(servers, C)) as window:
        before = (await _states(window)).get("outcome_received", 0)
        for hub in servers.hubs:
            await hub.stop()
        cases = [(await _api("POST", window, "/api/cases", json={"handling": H}))["case_id"]
                 for _ in range(3)]  # the window keeps collecting
        await asyncio.sleep(1.0)
        health = await _api("GET", window, "/api/health")
        assert health["outbox_backlog"] >= 3, health  # queued, waiting for the hub
        assert health["states"].get("outcome_received", 0) == before
        await asyncio.gather(*(hub.start() for hub in servers.hubs))  # same stores, same ports
        await _wait_state(window, "outcome_received", before + 3, timeout=45)
        for case_id in cases:
            kinds = [r["kind"] for r in (await _api("GET", window, f"/api/cases/{case_id}"))["receipts"]]
            assert "outcome_received" in kinds


async def test_no_one_can_wipe_a_bucket_or_a_materials_store_with_a_rollup(tmp_path: Path) -> None:
    """Permissions look only at subjects: a region allowed to write its own catalog key
    must not be able to empty the whole bucket with ``Nats-Rollup: all``."""
    import nats as nats_client

    from config.models import NatsConfig
    from node.natsd import EmbeddedNats
    from node.transport import CATALOG_BUCKET, NatsTransport

    async with EmbeddedNats(tmp_path / "nats") as server:
        transport = NatsTransport("370100", [server.url], NatsConfig())
        await transport.start()
        client = await nats_client.connect(server.url)
        try:
            await transport.put_values(CATALOG_BUCKET, [("410100.a", b"theirs"), ("370100.b", b"ours")])
            js = client.jetstream()
            for subject in (f"$KV.{CATALOG_BUCKET}.370100.b", "$O.TB_MAT_370100.M.eA"):
                with pytest.raises(nats_client.js.errors.APIError, match="rollup"):
                    await js.publish(subject, b"{}", headers={"Nats-Rollup": "all"})
            bucket = await js.key_value(CATALOG_BUCKET)
            assert (await bucket.get("410100.a")).value == b"theirs"
        finally:
            await client.close()
            await transport.close()
