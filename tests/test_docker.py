"""docker/: the image and the compose file of a three-region circle, checked without
a Docker engine.

The topology folder is generated with the command the compose file documents
(through the real CLI), ``docker-compose config`` (Debian's docker-compose; ``make
test`` installs it) resolves the compose file against it, and the result is read
back: every service, what each mounts (a region's seeds reach that region's
containers only), where each node connects, the hub's routes, healthchecks and
start order; every server configuration compose runs passes ``nats-server -t``.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509

from config.loading import load_config
from node.cli import main
from node.natsd import check_config
from node.topology import Topology

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
REGIONS = ("410100", "370100", "510100")
CONVENER = "410100"
WEB_PORTS = {"410100": 8081, "370100": 8082, "510100": 8083}  # as config/examples
HUBS = ("hub-1", "hub-2", "hub-3")
TOPOLOGY = PurePosixPath("/topology")  # where containers see the topology folder


def _init_command(text: str) -> list[str]:
    """The documented 'tongban topology init …' command (continuation lines joined)."""
    joined = re.sub(r"\\\s*\n\s*#?\s*", " ", text)
    found = re.search(r"tongban (topology init [^\n`]+)", joined)
    assert found, "no 'tongban topology init' command"
    return shlex.split(found.group(1))


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    command = _init_command(COMPOSE.read_text(encoding="utf-8"))
    assert command[2] == "docker/circle"
    target = tmp_path_factory.mktemp("compose") / "circle"
    result = CliRunner().invoke(main, [*command[:2], str(target), *command[3:]])
    assert result.exit_code == 0, result.output
    return target


@pytest.fixture(scope="module")
def compose(folder: Path) -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is missing: 'make test' installs Debian's docker-compose package "
                    "(apt-get install docker-compose); no Docker engine is needed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "CIRCLE_", "DOCKER_"))}
    env.update(CIRCLE_TOPOLOGY=str(folder), CIRCLE_UID="1234", CIRCLE_GID="1234")
    result = subprocess.run([binary, "-f", str(COMPOSE), "config"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    parsed = yaml.safe_load(result.stdout)
    assert isinstance(parsed, dict)
    return parsed


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def _binds(service: dict[str, Any]) -> dict[PurePosixPath, tuple[str, bool]]:
    """``{container path: (source, read-only)}`` of a service's volumes."""
    found = {}
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        source, target, mode = parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"
        found[PurePosixPath(target)] = (source, "ro" in mode.split(","))
    return found


def _folder_files(service: dict[str, Any], folder: Path) -> dict[str, PurePosixPath]:
    """Files of the topology folder a service mounts: ``{relative path: container path}``."""
    found = {}
    for target, (source, _) in _binds(service).items():
        if source.startswith(str(folder) + "/"):
            found[Path(source).relative_to(folder).as_posix()] = target
    return found


def _server_config(service: dict[str, Any]) -> str:
    command = service["command"]
    assert command[:2] == ["nats-server", "-c"], command
    return str(command[2])


def _region_of(name: str) -> str | None:
    found = re.search(r"(\d{6})$", name)
    return found.group(1) if found else None


# ------------------------------------------------------------------ the services


def test_every_service_is_there(compose: dict[str, Any]) -> None:
    expected = {*HUBS, "hub-admin", *(f"leaf-{r}" for r in REGIONS), *(f"node-{r}" for r in REGIONS)}
    assert set(_services(compose)) == expected
    for name, service in _services(compose).items():
        assert service["image"].startswith("tongban:"), name
        assert service["build"]["dockerfile"] == "docker/Dockerfile", name
        assert Path(service["build"]["context"]) == ROOT, name
        assert service["build"]["args"] == {"UID": "1234", "GID": "1234"}, name  # CIRCLE_UID/GID
        assert list(service["networks"]) == ["circle"], name
    assert list(compose["networks"]) == ["circle"]


def test_every_bind_mount_exists_and_topology_files_are_read_only(
        compose: dict[str, Any], folder: Path) -> None:
    volumes = set(compose["volumes"])
    for name, service in _services(compose).items():
        for source, read_only in _binds(service).values():
            if source.startswith("/"):
                assert Path(source).exists(), f"{name}: {source} does not exist"
                assert read_only, f"{name}: {source} is mounted writable"
            else:
                assert source in volumes, f"{name}: unknown volume {source}"
        for relative, target in _folder_files(service, folder).items():
            assert target == TOPOLOGY / relative, f"{name}: {relative} not at the folder's layout"


def test_nodes_connect_to_their_own_leaf_over_tls_with_their_own_creds(
        compose: dict[str, Any], folder: Path) -> None:
    top = Topology(folder)
    services = _services(compose)
    for region in REGIONS:
        name = f"node-{region}"
        node = services[name]
        binds = _binds(node)
        config_source = binds[PurePosixPath("/etc/tongban/node.toml")][0]
        assert Path(config_source) == DOCKER / f"node-{region}.toml"
        config = load_config(Path(config_source), environ={})
        assert config.region == region
        assert config.nats.urls == [top.leaf_url(region)]
        assert config.nats.urls[0].startswith(f"tls://leaf-{region}:")
        assert config.nats.shared_api == "tb.circle.api"
        assert config.nats.credentials == Path(f"/topology/regions/{region}/node.creds")
        assert config.nats.tls is not None
        files = _folder_files(node, folder)
        assert files == {"tls/ca.pem": PurePosixPath(str(config.nats.tls.ca)),
                         f"regions/{region}/node.creds": PurePosixPath(str(config.nats.credentials))}
        assert binds[PurePosixPath("/data")][0] == f"{name}-data"  # its own volume
        assert config.data_dir == Path("/data")
        assert binds[PurePosixPath(str(config.catalog))][0] == str(ROOT / "config" / "catalogs" / region)
        assert config.http.host == "0.0.0.0"
        assert node["ports"] == [f"127.0.0.1:{WEB_PORTS[region]}:{config.http.port}/tcp"]
        assert config.circle is not None
        assert config.circle.convener == CONVENER
        assert top.plan.regions[CONVENER].convener
        assert PurePosixPath(str(config.circle.anchor)).parent == PurePosixPath(
            node["environment"]["CIRCLE_PUBLIC_DIR"])
        assert binds[PurePosixPath(node["environment"]["CIRCLE_PUBLIC_DIR"])][0] == "circle-public"
        depends = node["depends_on"]
        assert depends[f"leaf-{region}"] == {"condition": "service_healthy"}
        assert depends["hub-admin"] == {"condition": "service_completed_successfully"}
        if region != CONVENER:  # the anchor is the convener's public.json
            assert depends[f"node-{CONVENER}"] == {"condition": "service_healthy"}


def test_servers_run_their_own_config_from_the_topology_folder(
        compose: dict[str, Any], folder: Path) -> None:
    top = Topology(folder)
    plan = top.plan
    services = _services(compose)
    expected = {**top.server_configs(hub=True, regions=REGIONS)}
    for server, config_path in expected.items():
        service = services[server]
        assert service["working_dir"] == str(TOPOLOGY)
        assert service["hostname"] == server
        relative = _server_config(service)
        assert folder / relative == config_path, server
        files = _folder_files(service, folder)
        assert relative in files
        # every file the configuration names is mounted where it looks for it
        text = config_path.read_text()
        for named in re.findall(r'"((?:tls|operator|regions)/[^"]+)"', text):
            assert named in files, f"{server}: {named} is not mounted"
        assert _binds(service)[TOPOLOGY / "data"][0] == f"{server}-data"
        # clients dial the service by its name: the certificate must carry it
        cert = x509.load_pem_x509_certificate((folder / "tls" / f"{server}.pem").read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert server in names.get_values_for_type(x509.DNSName)
        assert f'"data/{server}/' in text  # its store is inside that volume
    for hub in plan.hub:  # routes: to the two other hub services, by their names
        routes = re.search(r"routes: \[([^\]]*)\]", top.hub_config(hub.name).read_text())
        assert routes is not None
        assert sorted(re.findall(r'"tls://([^":]+):(\d+)"', routes.group(1))) == sorted(
            (h.host, str(h.cluster_port)) for h in plan.hub if h != hub)
        assert hub.host == hub.name
        assert hub.host in services
    for region in REGIONS:  # leaves: to every hub's leafnode port, by name
        leaf = plan.regions[region]
        assert leaf.host == f"leaf-{region}"
        assert leaf.host in services
        remotes = re.findall(r'"tls://([^":]+):(\d+)"', top.leaf_config(region).read_text())
        assert sorted(remotes) == sorted((h.host, str(h.leaf_port)) for h in plan.hub)
        assert services[f"leaf-{region}"]["depends_on"] == {
            h: {"condition": "service_healthy"} for h in HUBS}


def test_every_server_config_compose_runs_passes_nats_server_t(
        compose: dict[str, Any], folder: Path) -> None:
    configs = [_server_config(s) for s in _services(compose).values()
               if s.get("command", [""])[0] == "nats-server"]
    assert len(configs) == 6
    for relative in configs:
        assert check_config(folder / relative, folder) is None, relative


def test_no_secret_reaches_a_container_that_is_not_its_owner(
        compose: dict[str, Any], folder: Path) -> None:
    for name, service in _services(compose).items():
        region = _region_of(name)
        for relative in _folder_files(service, folder):
            assert not relative.endswith(".nk"), f"{name} mounts the seed {relative}"
            assert relative != "tls/ca-key.pem", f"{name} mounts the CA key"
            owner = re.match(r"regions/(\d+)/", relative)
            if owner:
                assert owner.group(1) == region, f"{name} mounts {relative} of another region"
            key = re.match(r"tls/(.+)-key\.pem$", relative)
            if key:
                assert key.group(1) == name, f"{name} mounts the TLS key of {key.group(1)}"
            if relative.startswith("operator/"):
                allowed = {"operator/operator.jwt"}
                if name == "hub-admin":  # the hub operator's job
                    allowed |= {"operator/exchange-admin.creds", "operator/sys-admin.creds"}
                assert relative in allowed, f"{name} mounts {relative}"
    # the leaf's user is the leaf's, the node's the node's
    services = _services(compose)
    for region in REGIONS:
        assert f"regions/{region}/leaf.creds" in _folder_files(services[f"leaf-{region}"], folder)
        assert f"regions/{region}/node.creds" not in _folder_files(services[f"leaf-{region}"], folder)
        assert f"regions/{region}/leaf.creds" not in _folder_files(services[f"node-{region}"], folder)


def test_healthchecks_and_published_ports(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, service in services.items():
        if name == "hub-admin":  # a one-shot job, waited for to complete
            assert service["restart"] == "no"
            assert service["depends_on"] == {h: {"condition": "service_healthy"} for h in HUBS}
            assert "tongban topology buckets /topology" in " ".join(service["command"])
            continue
        test = service["healthcheck"]["test"]
        assert test[:2] == ["CMD", "tongban-healthcheck"], name
        if name.startswith("node-"):
            assert test[2] == "http://127.0.0.1:8080/api/health"
        else:
            assert test[2] == "http://127.0.0.1:8222/healthz"
            assert service["command"][-2:] == ["-m", "8222"]
    published = {name: service.get("ports", []) for name, service in services.items()}
    assert published.pop("hub-1") == ["127.0.0.1:8222:8222/tcp"]  # monitoring, for the operator
    for region in REGIONS:
        assert published.pop(f"node-{region}")
    assert not any(published.values()), f"published: {published}"


# ------------------------------------------------------------------ the image


def _dockerfile() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_runs_the_node_as_a_non_root_user() -> None:
    instructions = _dockerfile()
    assert instructions[0][0] == "FROM"
    assert re.match(r"python:3\.11(\.\d+)?-slim", instructions[0][1])
    users = [arg for op, arg in instructions if op == "USER"]
    assert users
    assert users[-1] not in ("root", "0")
    assert [arg for op, arg in instructions if op == "ENTRYPOINT"] == ['["tongban-entrypoint"]']
    cmd = [json.loads(arg) for op, arg in instructions if op == "CMD"]
    assert cmd == [["tongban", "node", "--config", "/etc/tongban/node.toml"]]
    assert ("VOLUME", '["/data"]') in instructions
    health = [arg for op, arg in instructions if op == "HEALTHCHECK"]
    assert len(health) == 1
    assert "http://127.0.0.1:8080/api/health" in health[0]
    assert ("EXPOSE", "8080") in instructions


def test_dockerfile_installs_the_project_with_its_pinned_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for requirement in pyproject["project"]["dependencies"]:
        assert re.match(r"^[A-Za-z0-9_.\-\[\]]+==[\w.]+(;.*)?$", requirement), (
            f"{requirement!r} is not pinned: the image would not be reproducible")
    runs = " ".join(arg for op, arg in _dockerfile() if op == "RUN")
    installs = re.findall(r"pip install ([^&;]+)", runs)
    # the project, with what pyproject.toml pins; no second list that could drift from it
    assert [i.split() for i in installs] == [["--no-cache-dir", "."]], installs
    assert "pip check" in runs
    assert "nats-server --version" in runs
    copied = {arg.split()[0].rstrip("/") for op, arg in _dockerfile() if op == "COPY"}
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"
    assert "pyproject.toml" in copied
    assert pyproject["project"]["readme"] in " ".join(arg for op, arg in _dockerfile() if op == "COPY")


def test_build_context_and_git_keep_out_secrets_and_local_state() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for pattern in (".venv", "docker/circle", "data", ".git", "**/__pycache__", ".pytest_cache",
                    ".mypy_cache", "test-artifacts", "**/*.nk", "**/*.creds", "**/*-key.pem"):
        assert pattern in ignored, pattern
    assert "docker/circle/" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()


def test_the_documented_init_command_is_the_compose_files() -> None:
    deploy = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert _init_command(deploy) == _init_command(COMPOSE.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ the scripts


@pytest.fixture
def web() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_healthcheck_script(web: str) -> None:
    healthcheck = _load(DOCKER / "healthcheck.py")
    assert healthcheck.healthy(f"{web}/ok")
    assert not healthcheck.healthy(f"{web}/failing")
    closed = web.rsplit(":", 1)[0] + ":1"
    assert not healthcheck.healthy(f"{closed}/ok", timeout=1.0)


def test_entrypoint_makes_keys_once_and_publishes_the_public_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entrypoint = _load(DOCKER / "entrypoint.py")
    for name in list(os.environ):
        if name.startswith("TONGBAN_"):
            monkeypatch.delenv(name)
    config = tmp_path / "node.toml"
    config.write_text('region = "370100"\nname = "济南市"\ndata_dir = "data"\n', encoding="utf-8")
    public = tmp_path / "public"
    public.mkdir()
    monkeypatch.setenv("CIRCLE_PUBLIC_DIR", str(public))
    assert entrypoint._config_path(["tongban", "node", "--config", str(config)]) == config
    assert entrypoint._config_path(["nats-server", "-c", "hub/hub-1.conf"]) is None
    entrypoint.prepare_node(config)
    keys = tmp_path / "data" / "keys"
    sign = (keys / "sign.pem").read_bytes()
    assert (keys / "sign.pem").stat().st_mode & 0o077 == 0
    assert (public / "370100.json").read_bytes() == (keys / "public.json").read_bytes()
    entrypoint.prepare_node(config)  # a restart keeps the keys
    assert (keys / "sign.pem").read_bytes() == sign
    # After a rotation retired the first pair, a restart makes no new "first" pair.
    (keys / "retired" / "1").mkdir(parents=True)
    for name in ("sign.pem", "encrypt.pem", "public.json"):
        (keys / name).rename(keys / "retired" / "1" / name)
    entrypoint.prepare_node(config)
    assert not (keys / "sign.pem").exists()
