"""A circle's NATS topology on disk: hub cluster, one leaf per region, keys, TLS.

``tongban topology init`` writes everything a hub (three clustered nats-servers,
JetStream domain ``HUB``) and its region leaves need into one folder;
``admit`` adds a region later. Nothing here starts a server or opens a socket:
``node.natsd.ServerProcess`` runs the configs, ``node.transport`` pushes accounts.

Theory of operation
-------------------
The folder is the unit an operator hands around (docs/topology.md)::

    topology.json                  the plan: hosts, ports, domains, account keys (public)
    operator/operator.jwt          trusted by every server
    operator/{operator,system,exchange}.nk      seeds (0600): the hub operator's
    operator/{system,exchange}.jwt
    operator/sys-admin.creds       pushes account JWTs ($SYS.REQ.CLAIMS.UPDATE)
    operator/exchange-admin.creds  creates the shared buckets
    tls/ca.pem, tls/ca-key.pem     the project's CA (key 0600)
    tls/<server>.pem, <server>-key.pem          one certificate per server
    hub/hub-<n>.conf               the three hub servers
    regions/<code>/account.nk      the region's account seed (0600; the region's own)
    regions/<code>/{hub,leaf}-account.jwt        signed by the operator
    regions/<code>/{leaf,node}.creds            signed by the region's account
    regions/<code>/leaf.conf       the region's leaf server
    regions/<code>/nats.toml       the [nats] section for the region's node
    data/<server>/                 JetStream stores, resolver directories, logs

Every path inside a config is relative to the folder, so the servers run with
the folder as their working directory (``ServerProcess`` does; so can a
container that mounts it). Seeds, keys and .creds are written mode 0600.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.natsauth import (
    SHARED_API,
    KeyPair,
    creds_text,
    exchange_account_claims,
    mint_account,
    mint_operator,
    mint_user,
    new_key,
    node_permissions,
    region_account_claims,
    system_account_claims,
    write_private,
)

__all__ = ["HubServer", "Plan", "RegionLeaf", "Topology", "TopologyError", "region_domain"]

PLAN_FILE = "topology.json"


class TopologyError(Exception):
    """The folder or a request about it is wrong; ``zh`` and ``en`` say why."""

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(en)
        self.zh = zh
        self.en = en


def region_domain(region: str) -> str:
    """A region leaf's JetStream domain (domains must not start with a digit)."""
    return f"R{region}"


@dataclasses.dataclass(frozen=True)
class HubServer:
    name: str  # hub-1 …
    host: str  # how others reach it (127.0.0.1, or a container name)
    client_port: int
    cluster_port: int
    leaf_port: int


@dataclasses.dataclass(frozen=True)
class RegionLeaf:
    region: str
    account: str  # the account's public key (A…)
    host: str
    port: int
    convener: bool = False

    @property
    def name(self) -> str:
        return f"leaf-{self.region}"


@dataclasses.dataclass
class Plan:
    """What ``topology.json`` holds: everything public about the topology."""

    hub: list[HubServer]
    regions: dict[str, RegionLeaf]
    listen: str = "127.0.0.1"  # the address every server binds
    hub_domain: str = "HUB"
    names: list[str] = dataclasses.field(default_factory=list)  # extra certificate names
    operator: str = ""
    system_account: str = ""
    exchange_account: str = ""

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["version"] = 1
        return json.dumps(data, ensure_ascii=False, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        data.pop("version", None)
        data["hub"] = [HubServer(**h) for h in data["hub"]]
        data["regions"] = {code: RegionLeaf(**r) for code, r in data["regions"].items()}
        return cls(**data)


# ------------------------------------------------------------------ TLS

def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tongban circle"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def make_ca(folder: Path, days: int = 3650) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("tongban circle CA"))
            .issuer_name(_name("tongban circle CA")).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    write_private(folder / "ca-key.pem", _pem_key(key))
    (folder / "ca.pem").write_text(cert.public_bytes(serialization.Encoding.PEM).decode())


def make_server_cert(folder: Path, server: str, names: list[str], days: int = 825) -> None:
    """A certificate for one server, signed by the folder's CA: for serving clients
    and leaves, and as a client on routes (both extended key usages)."""
    ca_key = serialization.load_pem_private_key((folder / "ca-key.pem").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TopologyError("CA 私钥类型不对", "the CA key is not an EC key")
    sans: list[x509.GeneralName] = []
    for name in dict.fromkeys(["127.0.0.1", "localhost", server, *names]):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(server)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_private(folder / f"{server}-key.pem", _pem_key(key))
    (folder / f"{server}.pem").write_text(cert.public_bytes(serialization.Encoding.PEM).decode())


# ------------------------------------------------------------------ the folder

def _q(value: str) -> str:
    return json.dumps(value)


class Topology:
    """One topology folder: read its plan, mint into it, write server configs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __repr__(self) -> str:
        return f"<Topology {self.folder}>"

    @property
    def plan(self) -> Plan:
        path = self.folder / PLAN_FILE
        try:
            return Plan.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise TopologyError(f"{self.folder} 不是拓扑目录（没有 {PLAN_FILE}）",
                                f"{self.folder} is not a topology folder (no {PLAN_FILE}); "
                                f"run 'tongban topology init' first") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise TopologyError(f"{path} 内容有误", f"{path} is damaged: {exc}") from exc

    def _save(self, plan: Plan) -> None:
        (self.folder / PLAN_FILE).write_text(plan.to_json(), encoding="utf-8")

    def _seed(self, relative: str) -> KeyPair:
        path = self.folder / relative
        try:
            return KeyPair.from_seed(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise TopologyError(f"缺少密钥文件 {path}", f"missing key file {path}") from exc

    # -------------------------------------------------------------- paths

    def region_dir(self, region: str) -> Path:
        return self.folder / "regions" / region

    def hub_config(self, server: str) -> Path:
        return self.folder / "hub" / f"{server}.conf"

    def leaf_config(self, region: str) -> Path:
        return self.region_dir(region) / "leaf.conf"

    def hub_urls(self, *, scheme: str = "tls") -> list[str]:
        return [f"{scheme}://{h.host}:{h.client_port}" for h in self.plan.hub]

    def leaf_url(self, region: str) -> str:
        leaf = self.plan.regions[region]
        return f"tls://{leaf.host}:{leaf.port}"

    # -------------------------------------------------------------- init and admit

    def init(self, plan: Plan, *, overwrite: bool = False) -> None:
        """Mint the operator, system and exchange accounts, the CA and certificates,
        every listed region, and write every server's configuration."""
        if (self.folder / PLAN_FILE).exists() and not overwrite:
            raise TopologyError(f"{self.folder} 已有拓扑，不会覆盖",
                                f"{self.folder} already holds a topology; not overwriting it")
        operator, system, exchange = new_key("operator"), new_key("account"), new_key("account")
        plan.operator, plan.system_account, plan.exchange_account = (
            operator.public, system.public, exchange.public)
        ops = self.folder / "operator"
        for name, pair in (("operator", operator), ("system", system), ("exchange", exchange)):
            assert pair.seed is not None
            write_private(ops / f"{name}.nk", pair.seed + "\n")
        (ops / "operator.jwt").write_text(mint_operator(operator, system.public, "tongban circle"))
        (ops / "system.jwt").write_text(mint_account(operator, system.public, "SYS",
                                                     system_account_claims()))
        (ops / "exchange.jwt").write_text(mint_account(
            operator, exchange.public, "exchange", exchange_account_claims()))
        for name, account in (("sys-admin", system), ("exchange-admin", exchange)):
            user = new_key("user")
            assert user.seed is not None
            write_private(ops / f"{name}.creds", creds_text(mint_user(account, user, name), user.seed))
        tls = self.folder / "tls"
        tls.mkdir(parents=True, exist_ok=True)
        make_ca(tls)
        for server in plan.hub:
            make_server_cert(tls, server.name, [server.host, *plan.names])
        regions, plan.regions = plan.regions, {}
        self._save(plan)
        for region in regions.values():
            self.admit(region.region, host=region.host, port=region.port, convener=region.convener)
        for server in plan.hub:
            self._write_hub(server)

    def admit(self, region: str, *, host: str, port: int, account: str | None = None,
              convener: bool = False) -> str:
        """Mint a region's account JWTs (its hub JWT is returned, to be pushed).

        Without ``account`` the region's account NKey is made here and its seed kept in
        ``regions/<code>/account.nk``, and its leaf and node credentials are minted
        too; with ``account`` (the public key the region sent) only the JWTs are
        written: the region mints its own users (``creds``)."""
        plan = self.plan
        if region in plan.regions:
            raise TopologyError(f"地区 {region} 已在拓扑中", f"region {region} is already admitted")
        if port in {p for r in plan.regions.values() for p in (r.port,)} | {
                p for h in plan.hub for p in (h.client_port, h.cluster_port, h.leaf_port)}:
            raise TopologyError(f"端口 {port} 已被占用", f"port {port} is already used in the topology")
        directory = self.region_dir(region)
        if account is None:
            pair = new_key("account")
            assert pair.seed is not None
            write_private(directory / "account.nk", pair.seed + "\n")
            account = pair.public
        elif not (account.startswith("A") and len(account) == 56):
            raise TopologyError(f"{account!r} 不是 NATS 账户公钥", f"{account!r} is not a NATS "
                                f"account public key (A…, 56 characters)")
        operator = self._seed("operator/operator.nk")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "account.pub").write_text(account + "\n")
        hub_jwt = mint_account(operator, account, f"region {region}", region_account_claims(
            region, plan.exchange_account, convener=convener, leaf=False))
        (directory / "hub-account.jwt").write_text(hub_jwt)
        (directory / "leaf-account.jwt").write_text(mint_account(
            operator, account, f"region {region}", region_account_claims(
                region, plan.exchange_account, convener=convener, leaf=True)))
        leaf = RegionLeaf(region=region, account=account, host=host, port=port, convener=convener)
        plan.regions[region] = leaf
        self._save(plan)
        make_server_cert(self.folder / "tls", leaf.name, [host, *plan.names])
        if (directory / "account.nk").exists():
            self.creds(region)
        self._write_leaf(leaf)
        for server in plan.hub:  # for later restarts; the running hub takes the pushed JWT
            if self.hub_config(server.name).exists():
                self._write_hub(server)
        return hub_jwt

    def creds(self, region: str, *, extra_publish: tuple[str, ...] = ()) -> None:
        """(The region) mint its leaf server's and its node's users with its account seed."""
        leaf = self._region(region)
        account = self._seed(f"regions/{region}/account.nk")
        if account.public != leaf.account:
            raise TopologyError(f"{region} 的账户私钥与已准入的公钥不符",
                                f"the account seed of {region} does not match its admitted account")
        directory = self.region_dir(region)
        for name, permissions in (
                ("leaf", None),  # the account's imports bound what the leaf can reach
                ("node", node_permissions(region, convener=leaf.convener,
                                          extra_publish=extra_publish))):
            user = new_key("user")
            assert user.seed is not None
            write_private(directory / f"{name}.creds",
                          creds_text(mint_user(account, user, f"{region} {name}", permissions),
                                     user.seed))
        self._write_node_settings(leaf)

    def hub_account_jwt(self, region: str) -> str:
        self._region(region)
        return (self.region_dir(region) / "hub-account.jwt").read_text().strip()

    def _region(self, region: str) -> RegionLeaf:
        try:
            return self.plan.regions[region]
        except KeyError as exc:
            raise TopologyError(f"地区 {region} 不在拓扑中", f"region {region} is not admitted") from exc

    # -------------------------------------------------------------- server configs

    def _tls_block(self, server: str, *, verify_ca: bool) -> str:
        ca = f"\n    ca_file: {_q('tls/ca.pem')}" if verify_ca else ""
        return (f"tls {{\n    cert_file: {_q(f'tls/{server}.pem')}\n"
                f"    key_file: {_q(f'tls/{server}-key.pem')}{ca}\n    timeout: 5\n  }}")

    def _preload(self, accounts: dict[str, str]) -> str:
        lines = "\n".join(f"  {public}: {_q(jwt)}" for public, jwt in accounts.items())
        return f"resolver_preload: {{\n{lines}\n}}"

    def _write_hub(self, server: HubServer) -> None:
        plan = self.plan
        ops = self.folder / "operator"
        accounts = {plan.system_account: (ops / "system.jwt").read_text(),
                    plan.exchange_account: (ops / "exchange.jwt").read_text()}
        for code in plan.regions:
            accounts[plan.regions[code].account] = self.hub_account_jwt(code)
        routes = ", ".join(_q(f"tls://{h.host}:{h.cluster_port}") for h in plan.hub if h != server)
        data = f"data/{server.name}"
        text = f"""# hub server {server.name}, written by 'tongban topology' (cwd: the topology folder)
server_name: {server.name}
listen: {_q(f"{plan.listen}:{server.client_port}")}
{self._tls_block(server.name, verify_ca=False)}
operator: {_q("operator/operator.jwt")}
system_account: {plan.system_account}
resolver {{
  type: full
  dir: {_q(f"{data}/jwt")}
  allow_delete: false
  interval: "2m"
}}
{self._preload(accounts)}
jetstream {{
  store_dir: {_q(f"{data}/jetstream")}
  domain: {plan.hub_domain}
}}
cluster {{
  name: tongban-hub
  listen: {_q(f"{plan.listen}:{server.cluster_port}")}
  routes: [{routes}]
  {self._tls_block(server.name, verify_ca=True)}
}}
leafnodes {{
  listen: {_q(f"{plan.listen}:{server.leaf_port}")}
  {self._tls_block(server.name, verify_ca=False)}
}}
"""
        path = self.hub_config(server.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def _write_leaf(self, leaf: RegionLeaf) -> None:
        plan = self.plan
        ops = self.folder / "operator"
        accounts = {plan.system_account: (ops / "system.jwt").read_text(),
                    leaf.account: (self.region_dir(leaf.region) / "leaf-account.jwt").read_text()}
        hubs = ", ".join(_q(f"tls://{h.host}:{h.leaf_port}") for h in plan.hub)
        text = f"""# leaf of region {leaf.region}, written by 'tongban topology' (cwd: the topology folder)
server_name: {leaf.name}
listen: {_q(f"{plan.listen}:{leaf.port}")}
{self._tls_block(leaf.name, verify_ca=False)}
operator: {_q("operator/operator.jwt")}
system_account: {plan.system_account}
resolver: MEMORY
{self._preload(accounts)}
jetstream {{
  store_dir: {_q(f"data/{leaf.name}/jetstream")}
  domain: {region_domain(leaf.region)}
}}
leafnodes {{
  reconnect: "1s"
  remotes: [
    {{
      urls: [{hubs}]
      credentials: {_q(f"regions/{leaf.region}/leaf.creds")}
      account: {leaf.account}
      tls {{ ca_file: {_q("tls/ca.pem")} }}
    }}
  ]
}}
"""
        self.leaf_config(leaf.region).write_text(text)

    def _write_node_settings(self, leaf: RegionLeaf) -> None:
        """The ``[nats]`` section of the region's node configuration (absolute paths)."""
        folder = self.folder.resolve()
        text = f"""# [nats] of the node of region {leaf.region}: paste into its node.toml
[nats]
urls = [{_q(self.leaf_url(leaf.region))}]
credentials = {_q(str(folder / "regions" / leaf.region / "node.creds"))}
shared_api = {_q(SHARED_API)}

[nats.tls]
ca = {_q(str(folder / "tls" / "ca.pem"))}
"""
        (self.region_dir(leaf.region) / "nats.toml").write_text(text)

    def node_settings(self, region: str) -> dict[str, Any]:
        """The region node's ``nats`` settings as a dict (``NatsConfig`` fields)."""
        self._region(region)
        folder = self.folder.resolve()
        return {"urls": [self.leaf_url(region)],
                "credentials": str(folder / "regions" / region / "node.creds"),
                "shared_api": SHARED_API, "tls": {"ca": str(folder / "tls" / "ca.pem")}}

    def server_configs(self, *, hub: bool = True, regions: tuple[str, ...] = ()) -> dict[str, Path]:
        """``{server name: config path}`` of the hub servers and/or the regions' leaves."""
        plan = self.plan
        found = {h.name: self.hub_config(h.name) for h in plan.hub} if hub else {}
        for region in regions:
            found[self._region(region).name] = self.leaf_config(region)
        return found


def default_plan(regions: list[str], *, convener: str | None, host: str = "127.0.0.1",
                 listen: str = "127.0.0.1", port_base: int = 4222,
                 hub_hosts: list[str] | None = None, leaf_host: str | None = None,
                 names: list[str] | None = None) -> Plan:
    """Hub servers on ``port_base``+0..2 (clients), +1000.. (routes), +3200.. (leaves);
    region leaves on ``port_base``+100.. in the order given, at ``leaf_host`` (``{region}``
    replaced by the code: ``leaf-{region}`` in compose, one container per leaf) or ``host``."""
    hosts = hub_hosts or [host] * 3
    hub = [HubServer(name=f"hub-{i + 1}", host=hosts[i], client_port=port_base + i,
                     cluster_port=port_base + 1000 + i, leaf_port=port_base + 3200 + i)
           for i in range(3)]
    leaves = {code: RegionLeaf(region=code, account="",
                               host=(leaf_host or host).replace("{region}", code),
                               port=port_base + 100 + i, convener=code == convener)
              for i, code in enumerate(regions)}
    return Plan(hub=hub, regions=leaves, listen=listen, names=list(names or []))
