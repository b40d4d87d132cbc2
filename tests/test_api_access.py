"""Who may call the JSON API: the node's local token, or a signed-in session of the
node's own region with a role the route names (node/web/api_access.py)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from config import ConfigError, parse_config
from node.api import make_app
from node.app import Node
from node.natsd import EmbeddedNats
from node.store.accounts import FILENAME, AccountStore
from node.web.api_access import API_ROLES, PUBLIC, local_token_digest
from node.web.auth import HASHER
from receipts import NodeKeys
from tests.api_token import signed_in_http
from tests.serving import serving

REGION = "410100"
PASSWORD = "correct-horse-9"


def _config(base: Path) -> Any:
    NodeKeys.generate(REGION).save(base / REGION / "keys", valid_from=0)
    return parse_config({"region": REGION, "name": "郑州市", "data_dir": str(base / REGION),
                         "http": {"port": 0}}, base=base, environ={})


def test_every_api_route_names_who_may_call_it(tmp_path: Path) -> None:
    app = make_app(Node(_config(tmp_path)))
    routes = {(route.method, route.resource.canonical) for route in app.router.routes()
              if route.resource is not None and route.resource.canonical.startswith("/api")
              and route.method != "HEAD"}
    assert routes == set(API_ROLES) | PUBLIC


def test_the_token_file_is_made_once_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "api-token"
    first = local_token_digest(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_token_digest(path) == first  # never overwritten
    path.write_text("short\n")
    with pytest.raises(ConfigError, match="api-token"):
        local_token_digest(path)
    with pytest.raises(ConfigError, match="cannot write"):
        local_token_digest(tmp_path / "no-such-dir" / "api-token")


async def test_the_api_takes_the_local_token_or_a_session_with_the_role(tmp_path: Path) -> None:
    config = _config(tmp_path)
    accounts = AccountStore(config.data_dir / FILENAME)
    for username, roles, region in (("clerk", ("clerk",), REGION),
                                    ("reviewer", ("reviewer",), REGION),
                                    ("visitor", ("clerk",), "370100")):
        accounts.create(username=username, display_name=username, roles=roles, region=region,
                        password_hash=HASHER.hash(PASSWORD), now=0, actor="test")
    accounts.close()
    async with EmbeddedNats(tmp_path / "nats") as server, serving(server.url, config) as node:
        base = node.address  # type: ignore[attr-defined]
        token = (config.data_dir / "api-token").read_text().strip()
        bearer = {"Authorization": f"Bearer {token}"}

        async def call(http: aiohttp.ClientSession, method: str, path: str,
                       **options: Any) -> tuple[int, Any]:
            async with http.request(method, base + path, allow_redirects=False,
                                    **options) as response:
                return response.status, await response.json()

        async def signed_in(username: str) -> tuple[aiohttp.ClientSession, str]:
            return await signed_in_http(base, username, PASSWORD)

        async with aiohttp.ClientSession() as anonymous:
            assert (await call(anonymous, "GET", "/api/health"))[0] == 200
            status, body = await call(anonymous, "GET", "/api/cases")
            assert (status, body["error"]) == (401, "sign_in")
            assert "api-token" in body["zh"]
            status, body = await call(anonymous, "POST", "/api/cases", json={"handling": "370100"})
            assert (status, body["error"]) == (401, "sign_in")
            status, body = await call(anonymous, "GET", "/api/cases",
                                      headers={"Authorization": "Bearer " + "x" * 40})
            assert (status, body["error"]) == (401, "bad_token")
            status, body = await call(anonymous, "GET", "/api/cases",
                                      headers={"Authorization": "Basic abc"})
            assert (status, body["error"]) == (401, "bad_token")
            assert (await call(anonymous, "GET", "/api/cases", headers=bearer))[0] == 200
            assert (await call(anonymous, "GET", "/api/joints", headers=bearer))[0] == 200
            status, body = await call(anonymous, "POST", "/api/cases", json={"handling": "x"},
                                      headers={**bearer, "Origin": "http://evil.example"})
            assert (status, body["error"]) == (403, "cross_site")
            status, body = await call(anonymous, "POST", "/api/cases", json={"handling": "x"},
                                      headers=bearer)
            assert (status, body["error"]) == (400, "bad_handling")  # heard, refused for content
            status, body = await call(anonymous, "GET", "/api/no-such-thing")
            assert (status, body["error"]) == (404, "no_such_route")

        clerk, csrf = await signed_in("clerk")
        async with clerk:
            assert (await call(clerk, "GET", "/api/cases"))[0] == 200
            status, body = await call(clerk, "POST", "/api/cases", json={"handling": "x"})
            assert (status, body["error"]) == (403, "csrf")
            status, body = await call(clerk, "POST", "/api/cases", json={"handling": "x"},
                                      headers={"X-CSRF-Token": "y" * 43})
            assert (status, body["error"]) == (403, "csrf")
            status, body = await call(clerk, "POST", "/api/cases", json={"handling": "x"},
                                      headers={"X-CSRF-Token": csrf})
            assert (status, body["error"]) == (400, "bad_handling")
            status, body = await call(clerk, "POST", "/api/catalog", data=b"x",
                                      headers={"X-CSRF-Token": csrf})
            assert (status, body["error"]) == (403, "role")
            assert "管理员" in body["zh"]

        reviewer, csrf = await signed_in("reviewer")
        async with reviewer:
            status, body = await call(reviewer, "POST", "/api/cases", json={"handling": "x"},
                                      headers={"X-CSRF-Token": csrf})
            assert (status, body["error"]) == (403, "role")
            assert "窗口收件员" in body["zh"]
            status, body = await call(reviewer, "POST", "/api/cases/x/retry", json={},
                                      headers={"X-CSRF-Token": csrf})
            assert (status, body["error"]) == (403, "role")

        visitor, _ = await signed_in("visitor")
        async with visitor:
            status, body = await call(visitor, "GET", "/api/cases")
            assert (status, body["error"]) == (403, "other_region")
            assert "370100" in body["zh"]
