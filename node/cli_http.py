"""What the CLI's commands share: failing with a bilingual message, talking to a node.

A command that calls a node's JSON API takes ``--node`` (its web address) and the
node's local API token (node/web/api_access.py): ``--token`` or ``TONGBAN_TOKEN``,
or ``--token-file`` or ``TONGBAN_TOKEN_FILE`` (the ``api-token`` file in the node's
data dir).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

__all__ = ["fail", "http_json", "node_options", "request"]

Command = TypeVar("Command", bound=Callable[..., Any])
_TOKEN = "tongban.token"  # where the command's token waits in click's context


def _keep_token(context: click.Context, parameter: click.Parameter, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, Path):
        try:
            value = value.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"无法读取接口令牌文件 {value}", f"cannot read the API token file {value}: {exc}")
    context.meta.setdefault(_TOKEN, value)  # --token wins over --token-file


def node_options(help: str = "Web address of the node.") -> Callable[[Command], Command]:
    """``--node URL`` and the node's local API token, for a command that calls its API."""

    def wrap(command: Command) -> Command:
        command = click.option(
            "--token-file", envvar="TONGBAN_TOKEN_FILE", expose_value=False,
            type=click.Path(dir_okay=False, path_type=Path), callback=_keep_token,
            help="File holding the node's local API token: api-token in its data dir "
                 "[env TONGBAN_TOKEN_FILE].")(command)
        command = click.option(
            "--token", envvar="TONGBAN_TOKEN", expose_value=False, callback=_keep_token,
            is_eager=True, help="The node's local API token [env TONGBAN_TOKEN].")(command)
        return click.option("--node", "url", default="http://127.0.0.1:8081",
                            show_default=True, help=help)(command)

    return wrap


def fail(zh: str, en: str) -> NoReturn:
    click.echo(f"错误：{zh}\nerror: {en}", err=True)
    sys.exit(2)


def request(method: str, url: str, data: bytes | None = None,
            content_type: str = "application/json", timeout: float = 60) -> bytes:
    """The body of the node's answer; an error answer or no answer ends the command."""
    headers = {"Content-Type": content_type}
    context = click.get_current_context(silent=True)
    token = context.meta.get(_TOKEN) if context is not None else None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    call = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(call, timeout=timeout) as response:
            return response.read()  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())
        except ValueError:
            fail(f"节点返回 HTTP {exc.code}", f"the node answered HTTP {exc.code}")
        problems = error.get("problems") or []
        for problem in problems[:50]:
            click.echo(f"  {problem['sheet']} 第 {problem['line']} 行"
                       f"{'「' + problem['column'] + '」' if problem['column'] else ''}："
                       f"{problem['reason']}", err=True)
        fail(str(error.get("zh")), str(error.get("en")))
    except (urllib.error.URLError, OSError) as exc:
        fail(f"无法连接节点 {url}", f"cannot reach the node at {url}: {exc}")


def http_json(method: str, url: str, body: object = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    return json.loads(request(method, url, data))
