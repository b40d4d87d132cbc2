"""``tongban bench catalog``: a new node takes in a whole circle's catalogs and searches them.

Set-up: one nats-server; this process publishes the catalogs of ``regions`` member
regions × ``matters`` matters each (418 × 865 = 361,570 entries by default, the
circle the seeds describe), generated from the sample catalogs shipped in
config/catalogs: every sample matter in variants (变更, 注销, 补领 ...) until there
are ``matters``, instantiated in every region with its own 实施编码, 实施主体代码
and signature (each region signs its catalog as one Merkle batch). Then a new node
starts as its own process (``tongban node``), knowing the members' public keys.

Figures (JSON):

* ``sync_s``: from starting the new node until its index holds every entry
  (start-up, watching the bucket, checking each signature, indexing);
* ``search_p50_ms`` / ``search_p99_ms``: Chinese keyword queries through the node's
  JSON API (``/api/catalog/search``), some with region or mode filters;
* ``update_propagation_ms``: a region publishes a new version of one entry →
  searchable at the new node (p50 and max of ``updates`` tries);
* ``rss_mb``: the new node's resident memory at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from config.models import NatsConfig
from node import loop
from node.bench_e2e import _rss_mb
from node.children import die_with_parent
from node.natsd import EmbeddedNats
from node.transport import CATALOG_BUCKET, NatsTransport
from protocol.catalog import TAG_CATALOG, CatalogEntry
from protocol.codec import Raw, encode
from protocol.envelope import leaf_digest
from protocol.fields import credit_check_char
from receipts import BatchSigner, NodeKeys
from routing.catalog_files import read_catalog_path

__all__ = ["run"]

SAMPLES = Path(__file__).resolve().parent.parent / "config" / "catalogs"
PROVINCES = ("11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36",
             "37", "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62",
             "63", "64", "65")
VARIANTS = ("", "（变更）", "（注销）", "（补领）", "（延续）", "（迁出）", "（更正）", "（查询）",
            "（年度报告）", "（撤回）")
QUERIES = ("户口", "户口迁移", "身份证", "居民身份证", "营业执照", "公积金", "住房公积金提取",
           "就医", "异地就医备案", "养老保险", "结婚登记", "教师资格", "驾驶证", "出生医学证明",
           "社会保障卡", "失业保险", "户口簿", "购房合同", "申请表", "注销", "补领", "个体工商户")

Progress = Callable[[str, float], None]


def region_codes(count: int) -> list[str]:
    codes = [f"{province}{city:02d}00" for city in range(1, 40) for province in PROVINCES]
    return codes[:count]


def templates(count: int) -> list[dict[str, Any]]:
    """``count`` distinct matters: the shipped samples and variants of them."""
    samples: list[CatalogEntry] = []
    for folder in sorted(SAMPLES.iterdir()):
        if folder.is_dir():
            samples += read_catalog_path(folder, folder.name)
    found: list[dict[str, Any]] = []
    for variant in VARIANTS:
        for sample in samples:
            fields = sample.model_dump(exclude_none=True)
            fields["name"] = (sample.name + variant)[:200]
            found.append(fields)
            if len(found) == count:
                return found
    raise ValueError(f"the samples make at most {len(found)} matters")


class _Circle:
    """Encodes and signs the circle's entries, region by region, splicing shared parts."""

    def __init__(self, matters: list[dict[str, Any]]) -> None:
        shared = ("materials", "form", "conditions", "process", "legal_basis", "legal_limit",
                  "promised_limit", "fee")
        self.matters = [{k: (Raw(encode(v)) if k in shared else v) for k, v in m.items()}
                        for m in matters]

    def catalog(self, region: str, keys: NodeKeys, version: int = 1,
                rename: dict[int, str] | None = None) -> list[tuple[str, bytes]]:
        entries = []
        first17 = (f"11{region}MB" + "0" * 17)[:17]  # 统一社会信用代码 of the region's authority
        authority = first17 + credit_check_char(first17)
        for number, matter in enumerate(self.matters):
            code = f"{matter['basic_code']}-{region}000000-000-{authority}-{number:03d}"
            fields = {**matter, "region": region, "code": code, "authority_code": authority,
                      "version": version}
            if rename and number in rename:
                fields["name"] = rename[number]
            entries.append((f"{region}.{code}", encode(fields)))
        signatures = BatchSigner(keys.signing, keys.sign_key_id).sign(
            [leaf_digest(TAG_CATALOG, data) for _, data in entries])
        return [(key, encode({"entry": Raw(data), "sig": sig.model_dump()}))
                for (key, data), sig in zip(entries, signatures, strict=True)]


async def _run(base: Path, regions: int, matters: int, updates: int,
               progress: Progress | None) -> dict[str, Any]:
    def tell(phase: str, fraction: float) -> None:
        if progress is not None:
            progress(phase, fraction)

    tell("generating keys and matters", 0.0)
    codes = region_codes(regions)
    keys = {code: NodeKeys.generate(code) for code in codes}
    for code, node_keys in keys.items():
        node_keys.save(base / "members" / code, valid_from=0)
    circle = _Circle(templates(matters))
    async with EmbeddedNats(base / "nats") as server:
        publisher = NatsTransport(codes[0], [server.url], NatsConfig(), max_message_bytes=1 << 20)
        await publisher.start()
        try:
            started = time.perf_counter()
            for number, code in enumerate(codes):
                await publisher.put_values(CATALOG_BUCKET, circle.catalog(code, keys[code]))
                tell(f"publishing {number + 1}/{regions} catalogs", 0.5 * (number + 1) / regions)
            publish_s = time.perf_counter() - started
            result = await _measure(base, server.url, codes, keys, circle, publisher, regions * matters,
                                    updates, tell)
        finally:
            await publisher.close()
    return {**result, "entries": regions * matters, "regions": regions, "matters": matters,
            "publish_s": round(publish_s, 1)}


async def _measure(base: Path, url: str, codes: list[str], keys: dict[str, NodeKeys],
                   circle: _Circle, publisher: NatsTransport, total: int, updates: int,
                   tell: Progress) -> dict[str, Any]:
    config = base / "newcomer.toml"
    peers = "".join(f'[[peers]]\nregion = "{c}"\nname = "{c}"\npublic = '
                    f'"{base / "members" / c / "public.json"}"\n' for c in codes)
    NodeKeys.generate("999900").save(base / "newcomer" / "keys", valid_from=0)
    config.write_text(f'region = "999900"\nname = "新成员"\ndata_dir = "{base / "newcomer"}"\n'
                      f'[http]\nport = 0\n[nats]\nurls = ["{url}"]\n{peers}', encoding="utf-8")
    started = time.perf_counter()
    node = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node.cli", "node", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        preexec_fn=die_with_parent)
    try:
        api = await _address(node)
        token = (base / "newcomer" / "api-token").read_text(encoding="ascii").strip()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            indexed = 0
            while indexed < total:
                async with http.get(f"{api}/api/catalog/stats") as response:
                    indexed = (await response.json())["entries"]
                tell(f"new node indexed {indexed:,}/{total:,}", 0.5 + 0.4 * indexed / total)
                await asyncio.sleep(0.25)
            sync_s = time.perf_counter() - started
            tell("searching", 0.9)
            search = await _searches(http, api, codes)
            tell("updating", 0.95)
            propagation = await _updates(http, api, codes, keys, circle, publisher, updates)
        rss = _rss_mb(node.pid)
    finally:
        node.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(node.wait(), 15)
        if node.returncode is None:
            node.kill()
            await node.wait()
    return {"sync_s": round(sync_s, 1), **search, **propagation, "rss_mb": rss}


async def _address(node: asyncio.subprocess.Process) -> str:
    """The web address the node prints once it is ready."""
    assert node.stdout is not None
    line = await asyncio.wait_for(node.stdout.readline(), 120)
    if b"ready: " not in line:
        raise RuntimeError(f"the new node did not start: {line!r}")
    return line.decode().rsplit("ready: ", 1)[1].strip()


async def _searches(http: aiohttp.ClientSession, api: str, codes: list[str]) -> dict[str, Any]:
    chooser = random.Random(7)
    timings = []
    for number in range(400):
        params = {"q": chooser.choice(QUERIES), "limit": "20"}
        if number % 3 == 1:
            params["region"] = chooser.choice(codes)
        if number % 4 == 2:
            params["mode"] = "proxy"
        start = time.perf_counter()
        async with http.get(f"{api}/api/catalog/search", params=params) as response:
            assert response.status == 200
            await response.read()
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    return {"search_p50_ms": round(statistics.median(timings), 2),
            "search_p99_ms": round(timings[int(len(timings) * 0.99) - 1], 2),
            "search_queries": len(timings)}


async def _updates(http: aiohttp.ClientSession, api: str, codes: list[str],
                   keys: dict[str, NodeKeys], circle: _Circle, publisher: NatsTransport,
                   updates: int) -> dict[str, Any]:
    timings = []
    for number in range(updates):
        region = codes[number % len(codes)]
        token = f"更新测试{number:04d}号"
        records = circle.catalog(region, keys[region], version=2, rename={number: token})
        start = time.perf_counter()
        await publisher.put_values(CATALOG_BUCKET, [records[number]])
        while True:
            async with http.get(f"{api}/api/catalog/search", params={"q": token}) as response:
                if (await response.json())["results"]:
                    break
            await asyncio.sleep(0.002)
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    return {"update_propagation_ms": round(statistics.median(timings), 1),
            "update_propagation_max_ms": round(timings[-1], 1), "updates": len(timings)}


def run(regions: int = 418, matters: int = 865, updates: int = 20,
        progress: Progress | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tongban-bench-catalog-") as base:
        return loop.run(_run(Path(base), regions, matters, updates, progress))
