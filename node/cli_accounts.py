"""``tongban accounts``: staff accounts of a node, from its machine.

Works on the node's data dir (``--config node.toml``), beside a running node or
without one: the first administrator of a new node is created here, and an
administrator locked out of the web pages is unlocked here. Every change is written
to the same audit log as the web pages' (actor ``cli:<system user>``).
"""

from __future__ import annotations

import getpass
import sys
import time
from pathlib import Path

import click

from node.cli_http import fail
from node.store.accounts import FILENAME, ROLES, AccountError, AccountStore
from node.store.base import StoreError

__all__ = ["accounts"]

_CONFIG = click.option("--config", "config_path", required=True,
                       type=click.Path(dir_okay=False, path_type=Path),
                       help="The node's TOML configuration; its data_dir holds accounts.db.")


def _now() -> int:
    return time.time_ns() // 1_000_000


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _open(config_path: Path) -> tuple[AccountStore, str]:
    from config import ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        fail("配置有误", str(exc))
    try:
        return AccountStore(config.data_dir / FILENAME), config.region
    except (StoreError, OSError) as exc:
        fail(f"无法打开账户数据库 {config.data_dir / FILENAME}", str(exc))


def _new_password(username: str, from_stdin: bool) -> str:
    from node.web.auth import password_problem

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("新密码 / new password", hide_input=True,
                                confirmation_prompt="再次输入 / repeat")
    problem = password_problem(username, password)
    if problem is not None:
        fail(problem, "the password does not meet the policy (at least 10 characters, "
                      "not containing the username)")
    return password


def _hash(password: str) -> str:
    from node.web.auth import HASHER

    return HASHER.hash(password)


_PASSWORD_STDIN = click.option("--password-stdin", is_flag=True,
                               help="Read the password from the first line of standard input "
                                    "(scripts) instead of asking for it.")


@click.group()
def accounts() -> None:
    """Staff accounts of a node (sign-in to its web pages).

    Roles: clerk 窗口收件员, reviewer 审核员, department 部门办理员, operator 运维,
    admin 管理员. Passwords: at least 10 characters, not containing the username.
    """


@accounts.command("add")
@_CONFIG
@click.argument("username")
@click.option("--name", "display_name", required=True, help="The person's name (姓名).")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(list(ROLES)),
              help="A role; repeat for several.")
@click.option("--region", help="The account's region code (default: the node's region).")
@click.option("--must-change", is_flag=True,
              help="The person must change the password at the first sign-in.")
@_PASSWORD_STDIN
def add(config_path: Path, username: str, display_name: str, roles: tuple[str, ...],
        region: str | None, must_change: bool, password_stdin: bool) -> None:
    """Create an account USERNAME (3–32 lower-case letters, digits, . _ -)."""
    from node.web.pages import REGION, USERNAME

    username = username.lower()
    if not USERNAME.match(username):
        fail("用户名须为 3 至 32 位小写字母、数字或 . _ -，并以字母或数字开头",
             "a username is 3 to 32 lower-case letters, digits, '.', '_' or '-'")
    store, node_region = _open(config_path)
    region = region or node_region
    if not REGION.match(region):
        fail(f"地区代码 {region!r} 不是 GB/T 2260 代码（6、9 或 12 位数字）",
             f"region {region!r} is not a GB/T 2260 code")
    password = _new_password(username, password_stdin)
    try:
        store.create(username=username, display_name=display_name, roles=roles, region=region,
                     password_hash=_hash(password), now=_now(), actor=_actor(),
                     must_change_password=must_change)
    except AccountError as exc:
        fail(exc.zh, exc.code)
    finally:
        store.close()
    click.echo(f"已新建账户 / account created: {username} ({display_name}, "
               f"{'、'.join(ROLES[r] for r in roles)}, {region})")


@accounts.command("list")
@_CONFIG
def list_accounts(config_path: Path) -> None:
    """List the node's accounts: roles, region, and whether disabled or locked."""
    store, _ = _open(config_path)
    try:
        rows = store.accounts()
    finally:
        store.close()
    now = _now()
    for account in rows:
        flags = [flag for flag, on in (("disabled", account.disabled),
                                       ("locked", account.locked(now)),
                                       ("must-change-password", account.must_change_password)) if on]
        click.echo(f"{account.username:<24} {account.region:<8} {','.join(sorted(account.roles)):<28} "
                   f"{account.display_name}{'  [' + ', '.join(flags) + ']' if flags else ''}")
    if not rows:
        click.echo("没有账户 / no accounts yet: tongban accounts add --config ... USERNAME --role admin")


@accounts.command("passwd")
@_CONFIG
@click.argument("username")
@click.option("--must-change", is_flag=True,
              help="The person must change it at the next sign-in (a reset).")
@_PASSWORD_STDIN
def passwd(config_path: Path, username: str, must_change: bool, password_stdin: bool) -> None:
    """Set USERNAME's password; its sessions end and a lock-out is lifted."""
    store, _ = _open(config_path)
    try:
        if store.account(username) is None:
            fail(f"没有用户名为 {username} 的账户，请用 tongban accounts list 核对",
                 f"no account {username}")
        password = _new_password(username.lower(), password_stdin)
        store.set_password(username, _hash(password), _now(), actor=_actor(),
                           must_change=must_change)
    except AccountError as exc:
        fail(exc.zh, exc.code)
    finally:
        store.close()
    click.echo(f"已设置密码 / password set: {username.lower()}")


def _change(config_path: Path, username: str, what: str) -> None:
    store, _ = _open(config_path)
    try:
        if what == "unlock":
            store.unlock(username, _now(), actor=_actor())
        else:
            store.set_disabled(username, what == "disable", _now(), actor=_actor())
    except AccountError as exc:
        fail(exc.zh, exc.code)
    finally:
        store.close()


@accounts.command("disable")
@_CONFIG
@click.argument("username")
def disable(config_path: Path, username: str) -> None:
    """Disable USERNAME: it cannot sign in, and its sessions end."""
    _change(config_path, username, "disable")
    click.echo(f"已停用 / disabled: {username.lower()}")


@accounts.command("enable")
@_CONFIG
@click.argument("username")
def enable(config_path: Path, username: str) -> None:
    """Enable USERNAME again."""
    _change(config_path, username, "enable")
    click.echo(f"已启用 / enabled: {username.lower()}")


@accounts.command("unlock")
@_CONFIG
@click.argument("username")
def unlock(config_path: Path, username: str) -> None:
    """Lift USERNAME's lock-out after too many wrong passwords."""
    _change(config_path, username, "unlock")
    click.echo(f"已解锁 / unlocked: {username.lower()}")
