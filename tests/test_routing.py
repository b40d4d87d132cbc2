"""Routing: from a matter and the applicant's location to the handling region, and the
path its messages take (direct, or through a relay); a signed refusal when none exists."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from loopback import T0
from pydantic import ValidationError

from config import parse_config
from node.natsd import EmbeddedNats
from protocol import decode
from protocol import examples as ex
from protocol.circle import CircleRegistry, Contact, Member, MemberKey
from protocol.routes import SignedRouteRefusal
from receipts import BatchSigner, KeyRegistry, NodeKeys
from receipts.circle import sign_registry
from receipts.routes import check_refusal
from routing.router import MemberPath, NoRoute, Offer, Router, covering
from tests.api_token import HEADERS, HTTP
from tests.serving import serving, until

TODAY = "2026-06-01"


def offer(region: str, *, code: str = "", version: int = 1, status: str = "active",
          scope: str = "national", modes: tuple[str, ...] = ("proxy",),
          start: str = "2026-01-01", end: str | None = None) -> Offer:
    return Offer(region, code or f"M-{region}", version, status, scope, modes, start, end)


def router(offers: list[Offer], members: dict[str, MemberPath] | None = None,
           here: str = "410100") -> Router:
    routes = Router(here, lambda basic: offers if basic == "0000120001" else [])
    joined = {o.region: MemberPath("joined") for o in offers} | {here: MemberPath("joined")}
    routes.set_members(joined | (members or {}))
    return routes


def refusal(routes: Router, location: str, **kwargs: Any) -> str:
    with pytest.raises(NoRoute) as caught:
        routes.route(kwargs.pop("matter", "0000120001"), location, today=TODAY, **kwargs)
    assert caught.value.zh
    assert caught.value.en
    return caught.value.en


# ---------------------------------------------------------------- the decision


def test_locations_are_covered_from_the_county_up() -> None:
    assert covering("370102") == ["370102", "370100", "370000"]
    assert covering("370102001") == ["370102", "370100", "370000"]
    assert covering("370100") == ["370100", "370000"]
    assert covering("500000") == ["500000"]


def test_the_most_specific_member_that_offers_the_matter_handles_it() -> None:
    routes = router([offer("370100"), offer("370000"), offer("370102")])
    assert routes.route("0000120001", "370102", today=TODAY).handling == "370102"
    assert routes.route("0000120001", "370103", today=TODAY).handling == "370100"
    assert routes.route("0000120001", "370211", today=TODAY).handling == "370000"
    route = routes.route("0000120001", "370103", today=TODAY)
    assert (route.code, route.version, route.via, route.next_hop) == ("M-370100", 1, None, "370100")


def test_the_version_in_force_today_is_the_one_routed_to() -> None:
    routes = router([offer("370100", version=1), offer("370100", version=2, start="2026-05-01"),
                     offer("370100", version=3, start="2027-01-01")])
    assert routes.route("0000120001", "370102", today=TODAY).version == 2


@pytest.mark.parametrize(("offers", "members", "location", "why"), [
    ([], {}, "370102", "no member publishes a matter with basic code"),
    ([offer("370100")], {}, "440300", "no member publishing matter 0000120001 covers"),
    ([offer("370100", status="withdrawn")], {}, "370102", "not in force today"),
    ([offer("370100", end="2026-03-01")], {}, "370102", "not in force today"),
    ([offer("370100", start="2026-09-01")], {}, "370102", "not in force today"),
    ([offer("370100", modes=("online",))], {}, "370102", "does not offer this matter as proxy"),
    ([offer("370100", scope="inter_city")], {}, "370102", "offers this matter inter_city"),
    ([offer("370100")], {"370100": MemberPath("suspended")}, "370102", "not an active member"),
    ([offer("370100")], {"370100": MemberPath("joined", "370000"),
                         "370000": MemberPath("revoked")}, "370102", "the relay 370000"),
    ([offer("410100")], {}, "410102", "handle it as a local matter"),
])
def test_no_route_says_exactly_why(offers: list[Offer], members: dict[str, MemberPath],
                                   location: str, why: str) -> None:
    assert why in refusal(router(offers, members), location)


def test_a_scope_within_the_province_or_city_reaches_only_there() -> None:
    city = router([offer("370100", scope="inter_city")], here="370200")
    assert city.route("0000120001", "370102", today=TODAY).handling == "370100"
    county = router([offer("370102", scope="inter_county")], here="370103")
    assert county.route("0000120001", "370102", today=TODAY).handling == "370102"
    assert "inter_county" in refusal(router([offer("370102", scope="inter_county")],
                                            here="370203"), "370102")


def test_a_region_reached_through_a_relay_is_published_to_the_relay() -> None:
    routes = router([offer("370100")], {"370100": MemberPath("joined", "370000"),
                                        "370000": MemberPath("joined")})
    route = routes.route("0000120001", "370102", today=TODAY)
    assert (route.handling, route.via, route.next_hop) == ("370100", "370000", "370000")
    assert routes.next_hop("370100") == "370000"
    assert routes.next_hop("370000") == "370000"
    # The relay itself delivers directly; it refuses to pass on for anyone else.
    hub = router([offer("370100")], {"370100": MemberPath("joined", "370000"),
                                     "410100": MemberPath("joined")}, here="370000")
    assert hub.next_hop("370100") == "370100"
    assert hub.transit("370100") == "370100"
    with pytest.raises(NoRoute, match="does not relay for 410100"):
        hub.transit("410100")
    with pytest.raises(NoRoute, match="not an active member"):
        hub.transit("999999")


def test_joint_matters_route_each_location_once() -> None:
    routes = router([offer("370100", modes=("joint",)), offer("510100", modes=("joint",))])
    found = routes.route_all("0000120001", ["370102", "510104", "370103"], today=TODAY)
    assert [r.handling for r in found] == ["370100", "510100"]


def test_offers_are_read_again_when_the_catalog_changes() -> None:
    reads: list[str] = []
    generation = [0]
    offers = [offer("370100")]

    def offers_of(basic: str) -> list[Offer]:
        reads.append(basic)
        return list(offers)

    routes = Router("410100", offers_of, lambda: generation[0])
    routes.set_members({"370100": MemberPath("joined"), "510100": MemberPath("joined")})
    for _ in range(3):
        routes.route("0000120001", "370102", today=TODAY)
    assert reads == ["0000120001"]
    offers.append(offer("510100"))
    generation[0] += 1
    assert routes.route("0000120001", "510104", today=TODAY).handling == "510100"
    assert reads == ["0000120001"] * 2


def test_a_routing_decision_takes_microseconds() -> None:
    routes = router([offer(f"{p}{c:02d}00") for p in range(11, 66) for c in range(1, 9)])
    routes.route("0000120001", "370102", today=TODAY)
    started = time.perf_counter()
    for _ in range(2000):
        routes.route("0000120001", "370102", today=TODAY)
    assert (time.perf_counter() - started) / 2000 < 0.001  # the figure is `bench circle`'s


# ---------------------------------------------------------------- the registry


def _member(region: str, name: str, keys: NodeKeys, **extra: Any) -> Member:
    return Member.model_validate({
        "region": region, "name": name, "node_id": f"tb-{region}", "status_at": T0 - 30 * ex.DAY,
        "sign_keys": (MemberKey(key=keys.sign_key_id, public=keys.sign_public,
                                valid_from=T0 - 30 * ex.DAY),),
        "encrypt_keys": (MemberKey(key=keys.encrypt_key_id, public=keys.encrypt_public,
                                   valid_from=T0 - 30 * ex.DAY),),
        "contact": Contact(name="运维值班", phone="0531-12345678"), **extra})


WINDOW, HUB, HANDLING = "410100", "370000", "370100"
NAMES = {WINDOW: "郑州市", HUB: "山东省", HANDLING: "济南市"}
KEYS = {region: NodeKeys.generate(region) for region in NAMES}


def _registry(**relays: str) -> CircleRegistry:
    return CircleRegistry(circle="huanghe-2026", convener=WINDOW, version=1, issued_at=T0,
                          members=tuple(_member(r, NAMES[r], KEYS[r], relay=relays.get(r))
                                        for r in sorted(NAMES)))


@pytest.mark.parametrize(("relays", "message"), [
    ({HANDLING: HANDLING}, "is not another member"),
    ({HANDLING: "440300"}, "is not another member"),
    ({HANDLING: HUB, HUB: WINDOW}, "has a relay itself"),
])
def test_a_relay_is_another_member_that_delivers_directly(relays: dict[str, str],
                                                          message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _registry(**relays)


# ---------------------------------------------------------------- live


def _config(base: Path, region: str, **extra: Any) -> Any:
    return parse_config({
        "region": region, "name": NAMES[region], "data_dir": str(base / region),
        "http": HTTP, **extra,
        "circle": {"id": "huanghe-2026", "convener": WINDOW,
                   "anchor": str(base / WINDOW / "keys" / "public.json")}}, base=base, environ={})


async def _post(session: aiohttp.ClientSession, node: Any, payload: Any) -> tuple[int, Any]:
    async with session.post(f"{node.address}/api/cases", json=payload) as response:
        return response.status, await response.json()


async def test_an_application_is_routed_through_the_hub_and_no_route_is_a_signed_refusal(
        tmp_path: Path) -> None:
    """郑州's window collects for an applicant of 济南市历下区: routing finds 济南 from the
    catalog, and the registry says 济南 is reached through 山东省's hub node. While the
    hub is down nothing reaches 济南; once it runs, the case goes through and completes."""
    for region in NAMES:
        KEYS[region].save(tmp_path / region / "keys", valid_from=0)
    catalog = Path(__file__).parent.parent / "config" / "catalogs" / HANDLING
    async with EmbeddedNats(tmp_path / "nats") as server, \
            serving(server.url, _config(tmp_path, WINDOW)) as window, \
            serving(server.url, _config(tmp_path, HANDLING, catalog=str(catalog),
                                        auto_review=True)) as handling, \
            aiohttp.ClientSession(headers=HEADERS) as session:
        assert window.circle is not None
        registry = _registry(**{HANDLING: HUB})
        await window.circle.publish(sign_registry(
            BatchSigner(KEYS[WINDOW].signing, KEYS[WINDOW].sign_key_id), registry).canonical_bytes)
        await until(lambda: window.catalog.index.has_region(HANDLING))
        await until(lambda: handling.circle is not None and handling.circle.current is not None)

        # 异地就医备案 (national, 异地代收代办) for a resident of 历下区.
        status, reply = await _post(session, window, {"matter": "0000120001",
                                                      "location": "370102"})
        assert status == 201, reply
        assert (reply["handling"], reply["state"]) == (HANDLING, "sent")
        case_id = reply["case_id"]
        await asyncio.sleep(1.0)
        assert handling.store.case_row(case_id) is None  # the hub holds it, unread

        async with serving(server.url, _config(tmp_path, HUB)) as hub:
            # Accepted (auto review) and handed to 济南's department desk; the window
            # hears of it through the direct path (郑州 has no relay).
            await until(lambda: (handling.store.case_row(case_id) or {}).get("state")
                        == "processing", timeout=20)
            await until(lambda: (window.store.case_row(case_id) or {}).get("state")
                        == "processing", timeout=20)
            assert hub.store.case_row(case_id) is None  # it only passed messages on
            assert hub.counts["processed"] >= 1

        # A matter nobody publishes, a location no member covers, a mode not offered.
        for payload, why in (
                ({"matter": "9999999999", "location": "370102"}, "no member publishes"),
                ({"matter": "0000120001", "location": "440300"}, "covers the applicant"),
                ({"matter": "0000107001", "location": "370102"}, "does not offer")):
            status, reply = await _post(session, window, payload)
            assert (status, reply["error"]) == (422, "no_route"), reply
            assert why in reply["en"], reply
            assert reply["zh"]
            signed = SignedRouteRefusal.model_validate(
                decode(base64.b64decode(reply["refusal"]["signed"])))
            assert check_refusal(signed, window.registry).locations == (payload["location"],)
            trusted = KeyRegistry()
            trusted.add_node(KEYS[WINDOW], valid_from=0)
            check_refusal(signed, trusted)  # anyone with the registry can check it
        async with session.post(f"{window.address}/api/cases", data='{"handling": "370100"}',
                                headers={"Origin": "https://elsewhere.example",
                                         "Content-Type": "text/plain"}) as response:
            assert response.status == 403  # a form on another site cannot post here
            assert (await response.json())["error"] == "cross_site"
        for payload in ({"matter": "0000120001"}, {"matter": "x y", "location": "370102"},
                        {"matter": "0000120001", "location": "37"}, ["not", "an", "object"]):
            status, reply = await _post(session, window, payload)
            assert status == 400, reply
            assert reply["zh"]
            assert reply["en"]
