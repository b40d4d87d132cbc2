"""The suite's local API token: every test node reads it from ``TOKEN_FILE`` (``[http]
token_file``), so one HTTP session with ``HEADERS`` can call any of them."""

import asyncio
import os
import sys
from pathlib import Path

__all__ = ["HEADERS", "HTTP", "TOKEN", "TOKEN_FILE", "run_tongban"]

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
