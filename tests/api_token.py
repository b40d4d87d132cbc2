"""The suite's local API token: every test node reads it from ``TOKEN_FILE`` (``[http]
token_file``), so one HTTP session with ``HEADERS`` can call any of them."""

import asyncio
import os
import re
import sys
from pathlib import Path

import aiohttp

__all__ = ["HEADERS", "HTTP", "TOKEN", "TOKEN_FILE", "run_tongban", "signed_in_http"]

TOKEN_FILE = Path(__file__).parent / "fixtures" / "api-token"
TOKEN = TOKEN_FILE.read_text(encoding="ascii").strip()
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
#: A node's [http] section in tests: any free port, the suite's token.
HTTP = {"port": 0, "token_file": str(TOKEN_FILE)}


async def run_tongban(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """``tongban ARGS`` as a process, calling nodes with the suite's token: its exit
    status, standard output and standard error."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node.cli", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "TONGBAN_TOKEN_FILE": str(TOKEN_FILE)})
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def signed_in_http(base: str, username: str, password: str
                         ) -> tuple[aiohttp.ClientSession, str]:
    """An HTTP session signed in to the node at ``base`` (the login form, with its CSRF
    token), and the session's CSRF token for its state changes."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with http.get(base + "/login") as page:
        login = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    assert login is not None
    async with http.post(base + "/login", data={
            "username": username, "password": password, "csrf_token": login.group(1)},
            allow_redirects=False) as response:
        assert response.status == 303
    async with http.get(base + "/password") as page:
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', await page.text())
    assert csrf is not None
    return http, csrf.group(1)
