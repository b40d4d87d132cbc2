"""多地联办 intake, shared by the JSON API (``node.api_joint``) and the window's
联办收件 page (``node.web.window``): which locations a joint application may name,
collecting one part per handling region in one batch, and the joint case as shown.

Routing is the caller's (``Node.route(matter, locations, mode="joint")``): the API
answers a refusal with its signed form, the window puts it next to the field."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeGuard

from node.app import Node
from node.engine import Command, JointCollect, Result
from protocol import bodies as b
from protocol.fields import REGION_PATTERN
from protocol.joint import JOINT_STATES_ZH, PART_OUTCOMES_ZH
from protocol.states import STATE_NAMES_ZH
from routing.router import Route

__all__ = ["MAX_PLACES", "MIN_PLACES", "collect_joint", "joint_view", "places_ok"]

MIN_PLACES, MAX_PLACES = 2, 20  # a joint application names 2 to 20 places

_REGION = re.compile(REGION_PATTERN)


def places_ok(locations: object) -> TypeGuard[list[str]]:
    """2 to 20 GB/T 2260 codes (6, 9 or 12 digits)."""
    return (isinstance(locations, list) and MIN_PLACES <= len(locations) <= MAX_PLACES
            and all(isinstance(x, str) and _REGION.match(x) for x in locations))


async def collect_joint(node: Node, matter: str, routes: Sequence[Route],
                        application: Callable[[Route], b.Application]) -> Result:
    """Collect and submit one part per route (``application`` fills each) in one batch;
    what a refused part does is the strictest of the parts' entries (Node.joint_policy)."""
    parts = tuple((r.handling, application(r)) for r in routes)
    return await node.command(Command(None, "collect_joint", JointCollect(
        matter=matter, policy=node.joint_policy(routes), parts=parts)))


def joint_view(node: Node, joint_id: str) -> dict[str, Any] | None:
    """The joint case with each part's handling region, state and outcome; None if unknown."""
    joint = node.store.joint(joint_id)
    if joint is None:
        return None
    parts = []
    for (case_id, handling), outcome in zip(joint["parts"], joint["outcomes"], strict=True):
        state = (node.store.case_row(case_id) or {}).get("state")
        parts.append({"case_id": case_id, "handling": handling, "state": state,
                      "state_zh": STATE_NAMES_ZH.get(state or "", state),
                      "outcome": outcome, "outcome_zh": PART_OUTCOMES_ZH.get(outcome or "")})
    return {"joint_id": joint_id, "matter": joint["matter"], "policy": joint["policy"],
            "state": joint["state"], "state_zh": JOINT_STATES_ZH[joint["state"]],
            "closed_at": joint["closed_at"], "parts": parts}
