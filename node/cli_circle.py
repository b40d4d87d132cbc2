"""``tongban circle``: the circle's members, and joining it (request, approve, refuse)."""

from __future__ import annotations

import click

from node.cli_http import http_json

__all__ = ["circle"]

NODE_OPTION = click.option("--node", "url", default="http://127.0.0.1:8081", show_default=True,
                           help="Web address of this region's running node.")


@click.group()
def circle() -> None:
    """通办圈: members, join requests and the convener's decisions."""


@circle.command("status")
@NODE_OPTION
def circle_status(url: str) -> None:
    """The registry this node trusts, and the join requests waiting (at the convener)."""
    reply = http_json("GET", f"{url}/api/circle")
    click.echo(f"通办圈 {reply['circle']} · 牵头单位 {reply['convener']} · 名册版本 "
               f"{reply['version'] or '—'}")
    for member in reply["members"]:
        click.echo(f"  {member['region']} {member['name']}  {member['status']}")
    for request in reply["requests"]:
        click.echo(f"待审批 / waiting: {request['region']} {request['name']} "
                   f"({request['contact']['name']})  {request['sign_key']}")
    for refused in reply["refused"]:
        click.echo(f"已拒绝的名册或申请 / refused: {refused}")


@circle.command("request-join")
@click.option("--contact-name", required=True, help="联系人 of the region's operators.")
@click.option("--contact-phone", default="", help="Their phone (mobile or landline).")
@click.option("--contact-email", default="", help="Their e-mail.")
@click.option("--nats-account", default="", help="The region's NATS account public key (A…).")
@NODE_OPTION
def circle_request_join(contact_name: str, contact_phone: str, contact_email: str,
                        nats_account: str, url: str) -> None:
    """Ask the convener to admit this region: sends its keys, signed with them."""
    reply = http_json("POST", f"{url}/api/circle/join", {
        "contact_name": contact_name, "contact_phone": contact_phone,
        "contact_email": contact_email, "nats_account": nats_account})
    click.echo(f"已提交加入申请 / join request sent: {reply['region']} {reply['name']} "
               f"({reply['sign_key']}); the convener decides")


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
