"""多地联办: one application, several handling regions, one joint case at the window.

Theory of operation
-------------------
The collecting region splits a joint application into **parts**, one per handling
region (routing.router.route_all). Each part is an ordinary case with its own
protocol walk and its own receipt chain, named ``<joint id>.<n>``; its application
carries a ``JointRef`` so the handling side knows it is part n of a joint case.

The joint case follows its parts. A part's **outcome** is ``completed`` once its
result has come back (结果已返回), ``refused`` (不予受理) or ``withdrawn`` (撤回);
until then it is open. What a refused or withdrawn part does is the catalog's
``joint_failure`` (the strictest of the parts' entries):

* ``whole_case``: the joint case has failed (联办失败); every part that can still be
  withdrawn is withdrawn; parts already decided go on to their own end;
* ``part_only``: only that part has failed; the others go on.

The joint case **closes** when every part has its outcome: ``completed`` if all
completed, ``partly_completed`` if some did, ``failed`` otherwise (or as soon as a
part failed under ``whole_case``, closed once the rest have ended).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from protocol.states import TRANSITIONS

__all__ = ["JOINT_STATES_ZH", "PART_OUTCOMES_ZH", "JointState", "part_outcome", "resolve",
           "withdrawable"]

JOINT_STATES_ZH = {"open": "联办中", "completed": "全部办结", "partly_completed": "部分办结",
                   "failed": "联办失败"}
PART_OUTCOMES_ZH = {"completed": "已办结", "refused": "不予受理", "withdrawn": "已撤回"}

#: A part's collecting-side state → its outcome (None: still open).
_OUTCOMES = {"outcome_received": "completed", "delivered": "completed", "evaluated": "completed",
             "refused": "refused", "withdrawn": "withdrawn"}
_WITHDRAWABLE = frozenset(state for (role, state, event) in TRANSITIONS
                          if role == "collecting" and event == "withdraw")


def part_outcome(state: str, earlier: str | None = None) -> str | None:
    """The outcome of a part in ``state``; an outcome once reached stays (``archived``
    says nothing of how the part ended)."""
    return earlier or _OUTCOMES.get(state)


def withdrawable(state: str) -> bool:
    return state in _WITHDRAWABLE


@dataclasses.dataclass(frozen=True)
class JointState:
    state: str  # open | completed | partly_completed | failed
    closed: bool
    withdraw: tuple[int, ...]  # parts (0-based) to withdraw now, if they still can be


def resolve(policy: str, outcomes: Sequence[str | None]) -> JointState:
    """The joint case's state from its parts' outcomes under ``policy``
    (``whole_case`` or ``part_only``, protocol.codes.JOINT_FAILURES)."""
    ended = all(o is not None for o in outcomes)
    failed = [o in ("refused", "withdrawn") for o in outcomes]
    if policy == "whole_case" and any(failed):
        return JointState("failed", ended, tuple(i for i, o in enumerate(outcomes) if o is None))
    if not ended:
        return JointState("open", False, ())
    if all(o == "completed" for o in outcomes):
        return JointState("completed", True, ())
    if any(o == "completed" for o in outcomes):
        return JointState("partly_completed", True, ())
    return JointState("failed", True, ())
