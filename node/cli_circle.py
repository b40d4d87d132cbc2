"""``tongban circle``: the circle's members, joining it (request, approve, refuse) and
rotating a member's keys."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import click

from node.cli_http import fail, http_json, node_options
from protocol.fields import REGION_PATTERN

__all__ = ["circle"]

_REGION = re.compile(REGION_PATTERN)
NODE_OPTION = node_options("Web address of this region's running node.")


@click.group()
def circle() -> None:
    """通办圈: members, join requests and the convener's decisions."""


@circle.command("status")
@click.option("--keys", "show_keys", is_flag=True,
              help="Also list each member's signing key ids (to compare with 'tongban verify').")
@NODE_OPTION
def circle_status(show_keys: bool, url: str) -> None:
    """The registry this node trusts, and the join requests waiting (at the convener)."""
    reply = http_json("GET", f"{url}/api/circle")
    click.echo(f"通办圈 {reply['circle']} · 牵头单位 {reply['convener']} · 名册版本 "
               f"{reply['version'] or '—'}")
    for member in reply["members"]:
        via = f"  经由 / via {member['relay']}" if member.get("relay") else ""
        click.echo(f"  {member['region']} {member['name']}  {member['status']}{via}")
        if show_keys:
            for key in member["sign_keys"]:
                click.echo(f"      {key}")
    for request in reply["requests"]:
        contact = request["contact"]
        reach = " ".join(v for v in (contact.get("phone"), contact.get("email")) if v)
        click.echo(f"待审批 / waiting: {request['region']} {request['name']} "
                   f"({contact['name']}{' ' + reach if reach else ''})  {request['sign_key']}")
        if request.get("nats_account"):
            click.echo(f"    NATS 账户 / account {request['nats_account']}")
        if request.get("relay"):
            click.echo(f"    经由 / via {request['relay']}")
    for refused in reply["refused"]:
        click.echo(f"已拒绝的名册或申请 / refused: {refused}")


def _relay(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _REGION.match(value):
        fail(f"经由地区 {value!r} 不是 GB/T 2260 代码（6、9 或 12 位数字）",
             f"--relay {value!r} is not a GB/T 2260 region code (6, 9 or 12 digits)")
    return value


RELAY_OPTION = click.option(
    "--relay", callback=_relay, metavar="REGION",
    help="经由: the member (a provincial hub) whose node passes this region's messages on, when "
         "the other members have no direct path to its inbox (docs/protocol.md §14.2).")



def _join_options(command: Callable[..., None]) -> Callable[..., None]:
    """What a join request (or a rotation) carries: contact, NATS account, relay."""
    for option in reversed((
            click.option("--contact-name", required=True, help="联系人 of the region's operators."),
            click.option("--contact-phone", default="", help="Their phone (mobile or landline)."),
            click.option("--contact-email", default="", help="Their e-mail."),
            click.option("--nats-account", default="",
                         help="The region's NATS account public key (A…)."),
            RELAY_OPTION, NODE_OPTION)):
        command = option(command)
    return command


@circle.command("request-join")
@_join_options
def circle_request_join(contact_name: str, contact_phone: str, contact_email: str,
                        nats_account: str, relay: str | None, url: str) -> None:
    """Ask the convener to admit this region: sends its keys, signed with them.

    A region that is a member already and has prepared new keys ('tongban keys
    rotate') sends those instead, endorsed by its current key: see 'rotate'."""
    reply = _join(contact_name, contact_phone, contact_email, nats_account, relay, url)
    click.echo(f"已提交加入申请 / join request sent: {reply['region']} {reply['name']} "
               f"({reply['sign_key']}); the convener decides")
    click.echo(f"请向牵头单位电话确认签名密钥 / confirm this signing key with the convener by "
               f"phone: {reply['sign_key']}")


@circle.command("rotate")
@_join_options
def circle_rotate(contact_name: str, contact_phone: str, contact_email: str,
                  nats_account: str, relay: str | None, url: str) -> None:
    """(Member) ask the convener to list this region's new keys (密钥轮换).

    Prepare them first with 'tongban keys rotate --dir <key folder>'. The request
    brings the new keys, signed with the new signing key and endorsed by the
    current one. Once the convener approves ('tongban circle approve REGION --key
    <new signing key>'), every node trusts both for the overlap (rotation_overlap_days
    at the convener); this node signs with the new keys from then on and still
    opens messages sealed to its earlier encryption key until it ends.
    """
    before = http_json("GET", f"{url}/api/circle")
    reply = _join(contact_name, contact_phone, contact_email, nats_account, relay, url)
    listed = next((m for m in before["members"] if m["region"] == reply["region"]), None)
    if listed is None:
        fail(f"{reply['region']} 还不是通办圈成员，已按加入申请提交",
             f"{reply['region']} is not a member yet: the request was sent as a request to join")
    if reply["sign_key"] in listed["sign_keys"]:
        fail("没有待启用的新密钥：请先运行 tongban keys rotate --dir <密钥目录>；本次申请仅重复了现有密钥",
             f"no new keys were prepared (run 'tongban keys rotate --dir <key folder>' first); "
             f"the request repeats the current key {reply['sign_key']}")
    click.echo(f"已提交密钥轮换申请 / rotation request sent: {reply['region']} new signing key "
               f"{reply['sign_key']}; the convener approves with --key {reply['sign_key']}")


def _join(contact_name: str, contact_phone: str, contact_email: str, nats_account: str,
          relay: str | None, url: str) -> Any:
    return http_json("POST", f"{url}/api/circle/join", {
        "contact_name": contact_name, "contact_phone": contact_phone,
        "contact_email": contact_email, "nats_account": nats_account, "relay": relay})


@circle.command("approve")
@click.argument("region")
@click.option("--key", required=True,
              help="The signing key id of the request (see 'status'), as confirmed with the region "
                   "by phone or in person.")
@NODE_OPTION
def circle_approve(region: str, key: str, url: str) -> None:
    """(Convener) admit REGION: the next registry is signed and every node takes it in."""
    reply = http_json("POST", f"{url}/api/circle/requests/{region}/approve", {"key": key})
    click.echo(f"已同意 / approved: {region}; 名册版本 / registry version {reply['version']}")


@circle.command("refuse")
@click.argument("region")
@click.option("--reason", required=True, help="Why (kept with the decision).")
@NODE_OPTION
def circle_refuse(region: str, reason: str, url: str) -> None:
    """(Convener) refuse REGION's request to join."""
    http_json("POST", f"{url}/api/circle/requests/{region}/refuse", {"reason": reason})
    click.echo(f"已不予同意 / refused: {region}")


def _status_command(action: str, summary: str) -> None:
    @circle.command(action, help=summary)
    @click.argument("region")
    @NODE_OPTION
    def command(region: str, url: str) -> None:
        reply = http_json("POST", f"{url}/api/circle/members/{region}/{action}", {})
        click.echo(f"{region}: {reply['status']}; 名册版本 / registry version {reply['version']}")


_status_command("suspend", "(Convener) suspend REGION: nothing new from it is accepted, at once.")
_status_command("revoke", "(Convener) revoke REGION's membership; its earlier receipts still verify.")
_status_command("reinstate", "(Convener) let a suspended REGION exchange messages again.")
