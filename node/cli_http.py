"""What the CLI's commands share: failing with a bilingual message, talking to a node."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any, NoReturn

import click

__all__ = ["fail", "http_json", "request"]


def fail(zh: str, en: str) -> NoReturn:
    click.echo(f"错误：{zh}\nerror: {en}", err=True)
    sys.exit(2)


def request(method: str, url: str, data: bytes | None = None,
            content_type: str = "application/json", timeout: float = 60) -> bytes:
    """The body of the node's answer; an error answer or no answer ends the command."""
    call = urllib.request.Request(url, data=data, method=method,
                                  headers={"Content-Type": content_type})
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
