"""docs/openapi.yaml against a live node: schemathesis finds no 5xx and no schema violation.

A window node (郑州, the circle's convener) and a handling partner (济南, publishing
its sample 事项清单) run on an embedded nats-server in a thread of their own, so
schemathesis, which sends blocking requests, can drive the window's JSON API from
pytest's thread. Every operation of the document is generated from its examples,
from schemathesis' coverage cases (boundaries, missing and wrong-typed values) and
by fuzzing, within a fixed budget and derandomized; every check runs on each answer:
no server error, status code and content type documented, body matching its schema.
State-changing operations change the node; its data lives in the test's own tmp dir.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from aiohttp import web
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from loopback import T0

from config import parse_config
from node.api import make_app
from node.natsd import EmbeddedNats
from protocol import examples as ex
from protocol.circle import CircleRegistry, Contact, Member, MemberKey
from receipts import BatchSigner, NodeKeys
from receipts.circle import sign_registry
from routing.catalog_files import XLSX_MEDIA_TYPE, catalog_xlsx_bytes, read_catalog_path
from tests.api_token import HEADERS, HTTP
from tests.serving import serving, until

ROOT = Path(__file__).parent.parent
SPEC = ROOT / "docs" / "openapi.yaml"
WINDOW, HANDLING = "410100", "370100"  # the collecting window (convener), the handling partner
NAMES = {WINDOW: "郑州市", HANDLING: "济南市"}
KEYS = {region: NodeKeys.generate(region) for region in NAMES}

# Bodies of the media types schemathesis has no sample of: a small file of each kind.
# The upload of a catalog is this region's own 事项清单 again (published: nothing new),
# or a workbook that is no workbook (422).
_PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
_OWN_CATALOG = catalog_xlsx_bytes(read_catalog_path(ROOT / "config" / "catalogs" / WINDOW, WINDOW))
schemathesis.openapi.media_type("application/pdf", st.just(_PDF))
schemathesis.openapi.media_type("application/ofd", st.just(b"PK\x03\x04\x14\x00ofd"))
schemathesis.openapi.media_type(XLSX_MEDIA_TYPE, st.sampled_from([_OWN_CATALOG, b"PK\x03\x04"]))


def _member(region: str) -> Member:
    keys = KEYS[region]
    return Member.model_validate({
        "region": region, "name": NAMES[region], "node_id": f"tb-{region}",
        "status_at": T0 - 30 * ex.DAY,
        "sign_keys": (MemberKey(key=keys.sign_key_id, public=keys.sign_public,
                                valid_from=T0 - 30 * ex.DAY),),
        "encrypt_keys": (MemberKey(key=keys.encrypt_key_id, public=keys.encrypt_public,
                                   valid_from=T0 - 30 * ex.DAY),),
        "contact": Contact(name="运维值班", phone="0371-12345678")})


def _config(base: Path, region: str, **extra: Any) -> Any:
    return parse_config({
        "region": region, "name": NAMES[region], "data_dir": str(base / region),
        "http": HTTP, "catalog": str(ROOT / "config" / "catalogs" / region), **extra,
        "circle": {"id": "huanghe-2026", "convener": WINDOW,
                   "anchor": str(base / WINDOW / "keys" / "public.json")}}, base=base, environ={})


class _Circle:
    """The two nodes, run by ``asyncio.run`` on a thread until ``close``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.address = ""
        self.api_routes: set[tuple[str, str]] = set()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="openapi-nodes")

    def open(self) -> None:
        self._thread.start()
        self._ready.wait(60)
        if self._failed is not None:
            raise self._failed
        assert self.address, "the nodes did not start in time"

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the nodes did not stop"
        if self._failed is not None:
            raise self._failed

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # handed to the test's thread
            self._failed = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        for region in NAMES:
            KEYS[region].save(self.base / region / "keys", valid_from=0)
        async with EmbeddedNats(self.base / "nats") as server, \
                serving(server.url, _config(self.base, WINDOW)) as window, \
                serving(server.url, _config(self.base, HANDLING, auto_review=True)) as handling:
            assert window.circle is not None
            registry = CircleRegistry(circle="huanghe-2026", convener=WINDOW, version=1,
                                      issued_at=T0, members=tuple(_member(r) for r in sorted(NAMES)))
            await window.circle.publish(sign_registry(
                BatchSigner(KEYS[WINDOW].signing, KEYS[WINDOW].sign_key_id),
                registry).canonical_bytes)
            await until(lambda: window.catalog.index.has_region(HANDLING), timeout=20)
            await until(lambda: handling.circle is not None and handling.circle.current is not None)
            self.api_routes = {(route.method, path)
                               for route in make_app(window).router.routes()
                               if route.resource is not None and route.method != "HEAD"
                               for path in _documentable(route.resource)
                               if path.startswith("/api")}
            self.address = window.address
            self._ready.set()
            await self._stop.wait()


@pytest.fixture(scope="module")
def circle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Circle]:
    running = _Circle(tmp_path_factory.mktemp("openapi"))
    running.open()
    try:
        yield running
    finally:
        running.close()


def _documentable(resource: web.AbstractResource) -> list[str]:
    """The paths a route serves as the document names them: ``{name}`` for a variable,
    and one path per word of a variable that takes only some (``{decision:approve|refuse}``)."""
    paths = [resource.canonical]
    pattern = resource.get_info().get("pattern")
    for name, words in re.findall(r"\(\?P<(\w+)>(\w+(?:\|\w+)+)\)", getattr(pattern, "pattern", "")):
        paths = [p.replace(f"{{{name}}}", word) for p in paths for word in words.split("|")]
    return paths


def _expanded(path: str, operation: dict[str, Any]) -> list[str]:
    """A documented path, once per value of a path parameter that is an enum."""
    paths = [path]
    for parameter in operation.get("parameters", []):
        enum = parameter.get("schema", {}).get("enum")
        if parameter.get("in") == "path" and enum:
            paths = [p.replace(f"{{{parameter['name']}}}", value) for p in paths for value in enum]
    return paths


def _spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    return loaded


def test_every_api_route_is_documented_and_every_documented_route_exists(circle: _Circle) -> None:
    documented = {(method.upper(), expanded) for path, item in _spec()["paths"].items()
                  for method, operation in item.items()
                  if method in ("get", "post", "put", "patch", "delete")
                  for expanded in _expanded(path, operation)}
    served = set(circle.api_routes)
    assert served - documented == set(), "routes missing from docs/openapi.yaml"
    assert documented - served == set(), "docs/openapi.yaml describes routes the node does not serve"


# Valid input may still be refused for what it means: no such case (404), a state that
# does not allow it (409), no route or a refused collection (422), the convener only (403).
_MEANINGFUL_REFUSALS = ["2xx", "403", "404", "409", "422"]


schema = schemathesis.openapi.from_path(SPEC, config=schemathesis.Config.from_dict({
    "request-timeout": 30,
    "generation": {"max-examples": 60, "deterministic": True, "mode": "all"},
    "checks": {"positive_data_acceptance": {"expected-statuses": _MEANINGFUL_REFUSALS}},
    "operations": [{
        # A partner region and a material that exists are facts of the node, not of the
        # schema: a well-formed one that is not is a 400 (unknown_region, unknown_material).
        "include-path": "/api/cases", "include-method": "POST",
        "checks": {"positive_data_acceptance": {"expected-statuses": [*_MEANINGFUL_REFUSALS, "400"]}},
    }],
}))


@schema.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_api_answers_as_documented(case: schemathesis.Case, circle: _Circle) -> None:
    case.call_and_validate(base_url=circle.address, headers=HEADERS)
