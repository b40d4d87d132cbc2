"""Routing: which member region handles an application, and which path its messages take.

Theory of operation
-------------------
A 通办 matter has one 基本编码 across the country; every region that handles it
publishes its own entry for it (its 实施编码) in the circle's catalog. For one
application the **handling region** is the member whose area covers the
applicant's location (户籍地, 住所地 or 参保地, whichever the matter turns on),
most specific first: the county (370102), then its city (370100), then its
province (370000). That member must offer the matter in the mode asked for
(异地代收代办 or 多地联办) in the version in force today, be ``joined``, and the
entry's 通办范围 must reach the collecting region (跨市通办 stays within the
province, 跨县通办 within the city; 全国 and 跨省 reach everywhere).

The **path**: a message goes straight to the handling region's inbox, unless the
registry names a relay (经由) for it: a provincial hub whose node forwards it
unread (it stays encrypted to the handling region). A relay delivers directly,
so a path has at most one hop between the two regions.

When no member qualifies, ``NoRoute`` says exactly why, in Chinese and English;
the node turns it into a signed refusal for the window.

A decision is a handful of dictionary lookups: the offers of one matter are
loaded once (``offers_of``, from the catalog index) and kept until the catalog
changes (the index's write counter moves); the members' statuses and relays come from
the registry (``set_members``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

from protocol.codes import TONGBAN_MODES, TONGBAN_SCOPES

__all__ = ["MemberPath", "NoRoute", "Offer", "Route", "Router", "covering"]


@dataclasses.dataclass(frozen=True, slots=True)
class Offer:
    """One version of one region's entry for a matter, as routing needs it."""

    region: str
    code: str  # 实施编码
    version: int
    status: str
    scope: str  # 通办范围 (protocol.codes.TONGBAN_SCOPES)
    modes: tuple[str, ...]
    effective_from: str  # ISO dates: they compare as strings
    effective_to: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class MemberPath:
    """What the registry says about reaching a member."""

    status: str  # joined | suspended | revoked
    relay: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    handling: str  # the region that decides
    code: str  # its 实施编码 for the matter
    version: int  # the catalog version the application is filled against
    via: str | None  # the relay its messages go through; None: direct

    @property
    def next_hop(self) -> str:
        return self.via or self.handling


class NoRoute(Exception):
    """No member can handle the matter for this applicant; ``zh``/``en`` say why."""

    code = "no_route"

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(en)
        self.zh = zh
        self.en = en


def covering(location: str) -> list[str]:
    """The region codes whose area holds ``location``, most specific first:
    ``370102001`` → ``370102``, ``370100``, ``370000``."""
    county = location[:6]
    chain = [county, county[:4] + "00", county[:2] + "0000"]
    return list(dict.fromkeys(chain))  # 370100 covers itself once


def _reaches(scope: str, handling: str, collecting: str) -> bool:
    if scope == "inter_city":
        return handling[:2] == collecting[:2]
    if scope == "inter_county":
        return handling[:4] == collecting[:4]
    return True  # national, inter_provincial


class Router:
    """Routes for the node of region ``here``.

    ``offers_of(basic_code)`` reads a matter's offers from the catalog index and
    ``generation()`` counts the index's writes: cached offers are dropped when it moves.
    """

    def __init__(self, here: str, offers_of: Callable[[str], Iterable[Offer]],
                 generation: Callable[[], int] = lambda: 0) -> None:
        self.here = here
        self._offers_of = offers_of
        self._generation = generation
        self._seen_generation = generation()
        self._offers: dict[str, dict[str, list[Offer]]] = {}
        self._members: dict[str, MemberPath] = {}

    def __repr__(self) -> str:
        return f"<Router {self.here} members={len(self._members)} matters={len(self._offers)}>"

    def set_members(self, members: Mapping[str, MemberPath]) -> None:
        self._members = dict(members)

    def status(self, region: str) -> str | None:
        """A member's status in the registry (joined, suspended, revoked); None if unknown."""
        path = self._members.get(region)
        return None if path is None else path.status

    def partners(self) -> list[str]:
        """Every active member other than this one."""
        return sorted(r for r, p in self._members.items() if r != self.here and p.status == "joined")

    def reaches(self, region: str) -> bool:
        """Whether ``region`` is an active member other than this one."""
        path = self._members.get(region)
        return region != self.here and path is not None and path.status == "joined"

    def next_hop(self, region: str) -> str:
        """Where a message for ``region`` is published: its relay's inbox, or its own."""
        path = self._members.get(region)
        if path is None or path.relay is None or path.relay == self.here:
            return region
        return path.relay

    def transit(self, recipient: str) -> str:
        """As a relay: where a message for ``recipient`` goes next; raises ``NoRoute``
        unless ``recipient`` is an active member this node relays for."""
        path = self._members.get(recipient)
        if path is None or path.status != "joined":
            raise NoRoute(f"收件地区 {recipient} 目前不是通办圈的有效成员",
                          f"the recipient {recipient} is not an active member of the circle")
        if path.relay != self.here:
            raise NoRoute(f"本节点（{self.here}）不是 {recipient} 的中转节点",
                          f"this node ({self.here}) does not relay for {recipient}")
        return recipient

    def route(self, basic_code: str, location: str, *, collecting: str | None = None,
              today: str, mode: str = "proxy") -> Route:
        """The handling region for an applicant at ``location``; raises ``NoRoute``."""
        collecting = collecting or self.here
        generation = self._generation()
        if generation != self._seen_generation:  # the catalog changed
            self._offers.clear()
            self._seen_generation = generation
        offered = self._offers.get(basic_code)
        if offered is None:
            offered = self._offers[basic_code] = _by_region(self._offers_of(basic_code))
        if not offered:
            raise NoRoute(f"通办圈内没有地区发布基本编码为 {basic_code} 的事项",
                          f"no member publishes a matter with basic code {basic_code}")
        refusals: list[tuple[str, str]] = []
        for region in covering(location):
            versions = offered.get(region)
            if versions is None:
                continue
            refusal = self._refusal(region, versions, collecting, today, mode)
            if refusal is None:
                offer = _current(versions, today)
                assert offer is not None  # _refusal checked it
                relay = self._members[region].relay
                return Route(region, offer.code, offer.version,
                             None if relay in (None, collecting) else relay)
            refusals.append(refusal)
        if refusals:
            raise NoRoute(*refusals[0])
        raise NoRoute(f"申请人所在地 {location} 不在发布该事项的任何成员地区范围内",
                      f"no member publishing matter {basic_code} covers the applicant's "
                      f"location {location}")

    def route_all(self, basic_code: str, locations: Sequence[str], *,
                  collecting: str | None = None, today: str, mode: str = "joint") -> list[Route]:
        """多地联办: one route per distinct handling region of ``locations``, in order."""
        routes: dict[str, Route] = {}
        for location in locations:
            route = self.route(basic_code, location, collecting=collecting, today=today,
                               mode=mode)
            routes.setdefault(route.handling, route)
        return list(routes.values())

    def _refusal(self, region: str, versions: Sequence[Offer], collecting: str, today: str,
                 mode: str) -> tuple[str, str] | None:
        """Why ``region`` cannot handle it (Chinese, English), or None if it can."""
        path = self._members.get(region)
        if path is None or path.status != "joined":
            status = "not a member" if path is None else path.status
            return (f"办理地 {region} 目前不是通办圈的有效成员（{status}）",
                    f"the handling region {region} is not an active member ({status})")
        if path.relay is not None and path.relay != collecting:
            hub = self._members.get(path.relay)
            if hub is None or hub.status != "joined":
                return (f"办理地 {region} 的中转节点 {path.relay} 目前不可用",
                        f"the relay {path.relay} of region {region} is not an active member")
        if region == collecting:
            return ("办理地就是本地区，请按本地事项办理，无需通办",
                    "the handling region is this region: handle it as a local matter")
        offer = _current(versions, today)
        if offer is None or offer.status != "active" or (
                offer.effective_to is not None and offer.effective_to < today):
            return (f"办理地 {region} 的该事项今天不在有效期内或已取消",
                    f"region {region}'s entry for this matter is not in force today")
        if mode not in offer.modes:
            name = TONGBAN_MODES.get(mode, mode)
            return (f"办理地 {region} 不以“{name}”方式办理该事项",
                    f"region {region} does not offer this matter as {mode}")
        if not _reaches(offer.scope, region, collecting):
            name = TONGBAN_SCOPES.get(offer.scope, offer.scope)
            return (f"办理地 {region} 的该事项为“{name}”，本地区 {collecting} 不在范围内",
                    f"region {region} offers this matter {offer.scope}; {collecting} is outside")
        return None


def _by_region(offers: Iterable[Offer]) -> dict[str, list[Offer]]:
    regions: dict[str, list[Offer]] = {}
    for offer in offers:
        regions.setdefault(offer.region, []).append(offer)
    return regions


def _current(versions: Iterable[Offer], today: str) -> Offer | None:
    """A region's entry for the matter as search shows it today: of each of its entries
    (实施编码) the newest version that has come into force; an active one if any."""
    newest: dict[str, Offer] = {}
    for offer in versions:
        if offer.effective_from <= today and (
                offer.code not in newest or offer.version > newest[offer.code].version):
            newest[offer.code] = offer
    usable = [o for o in newest.values()
              if o.status == "active" and (o.effective_to is None or o.effective_to >= today)]
    return min(usable or newest.values(), key=lambda o: o.code, default=None)
