"""State diagrams and transition tables generated from ``protocol.states.TRANSITIONS``.

The specification (docs/protocol.md §7) pastes the output of ``python -m
protocol.diagram`` between the markers ``<!-- BEGIN GENERATED: states -->`` and
``<!-- END GENERATED: states -->``; ``tests/test_docs.py`` fails when the two differ,
so the document cannot drift from the table the machines run on. ``splice`` does
the pasting for whoever regenerates the document.

Everything here is a pure function of the tables; only ``__main__`` prints.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from protocol import bodies as b
from protocol import examples as ex
from protocol.errors import Reason
from protocol.machine import event_for_message
from protocol.states import (
    COLLECTING_STATES,
    HANDLING_STATES,
    LOCAL_EVENTS,
    REMOTE_EVENTS,
    STATE_NAMES_ZH,
    TIMER_EVENTS,
    TRANSITIONS,
    Role,
    Transition,
)

__all__ = [
    "BEGIN_MARKER",
    "END_MARKER",
    "generated_section",
    "markdown",
    "mermaid",
    "message_events",
    "splice",
    "transition_table",
]

BEGIN_MARKER = "<!-- BEGIN GENERATED: states -->"
END_MARKER = "<!-- END GENERATED: states -->"

ROLE_TITLES: dict[Role, str] = {
    "collecting": "Collecting side (收件地)",
    "handling": "Handling side (办理地)",
}
_STATES: dict[Role, tuple[str, ...]] = {"collecting": COLLECTING_STATES, "handling": HANDLING_STATES}
_FINAL = "archived"
_NOW = 1_795_400_000_000  # any instant: the example bodies only select the event

#: What a peer's message is, by kind and the body field that tells events apart.
#: ``event_for_message`` decides; the text says what it looked at.
_MESSAGE_BODIES: tuple[tuple[str, str, Any], ...] = (
    ("application", "`window_decision` absent", ex.application(_NOW)),
    ("application", "`window_decision` present", ex.application(_NOW, window_decision=ex.accept(_NOW))),
    ("received", "`Ack`", b.Ack(of=bytes(32), at=_NOW)),
    ("decision", "`outcome` = `accept`", ex.accept(_NOW)),
    ("decision", "`outcome` = `supplement`", ex.supplement_request(_NOW)),
    ("decision", "`outcome` = `refuse`", ex.refuse(_NOW)),
    ("supplement", "`Supplement`", ex.supplement(_NOW)),
    ("withdrawal", "`Withdrawal`", ex.withdrawal(_NOW)),
    ("withdrawn", "`Withdrawn`", b.Withdrawn(at=_NOW)),
    ("forwarded", "`Forwarded`", ex.forwarded(_NOW)),
    ("progress", "`event` = `step`", ex.progress(_NOW, "step")),
    ("progress", "`event` = `suspend`", ex.progress(_NOW, "suspend")),
    ("progress", "`event` = `resume`", ex.progress(_NOW, "resume")),
    ("outcome", "`Outcome`", ex.outcome(_NOW)),
    ("outcome_ack", "`Ack`", b.Ack(of=bytes(32), at=_NOW)),
    ("delivery", "`Delivery`", ex.delivery(_NOW)),
    ("evaluation", "`Evaluation`", ex.evaluation(_NOW)),
    ("video_check", "`VideoCheck`", ex.video_check(_NOW)),
    ("rejection", f"`code` = `{Reason.WITHDRAWAL_TOO_LATE.code}`", b.Rejection(
        of=bytes(32), code=Reason.WITHDRAWAL_TOO_LATE.code, zh=Reason.WITHDRAWAL_TOO_LATE.zh,
        en=Reason.WITHDRAWAL_TOO_LATE.en,
    )),
)


def _rows(role: Role) -> Iterator[tuple[str, str, Transition]]:
    for (row_role, state, event), transition in TRANSITIONS.items():
        if row_role == role:
            yield state, event, transition


def message_events() -> list[tuple[str, str, str, Role]]:
    """``(kind, body selector, event, receiving role)`` for every message a case exchanges."""
    rows = []
    for kind, selector, body in _MESSAGE_BODIES:
        event = event_for_message(kind, body)
        receiver: Role = "collecting" if event in REMOTE_EVENTS["collecting"] else "handling"
        rows.append((kind, selector, event, receiver))
    return rows


def _carrier(role: Role, event: str) -> str:
    """Who feeds ``event`` in on the ``role`` side: staff, a timer, or which message."""
    if event in TIMER_EVENTS.values():
        return "timer"
    if event in LOCAL_EVENTS[role]:
        return "local"
    kinds = dict.fromkeys(k for k, _, e, r in message_events() if e == event and r == role)
    return "peer " + ", ".join(f"`{k}`" for k in kinds)


def mermaid(role: Role) -> str:
    """A Mermaid ``stateDiagram-v2`` of one role: ``old --> new: event / message sent``."""
    lines = ["stateDiagram-v2"]
    for state in _STATES[role]:
        lines.append(f'    state "{state} {STATE_NAMES_ZH[state]}" as {state}')
    lines.append("    [*] --> new")
    for state, event, transition in _rows(role):
        label = event if transition.send is None else f"{event} / {transition.send}"
        lines.append(f"    {state} --> {transition.new_state}: {label}")
    lines.append(f"    {_FINAL} --> [*]")
    return "\n".join(lines) + "\n"


def _code(value: str | None) -> str:
    return "—" if value is None else f"`{value}`"


def transition_table(role: Role) -> str:
    """One Markdown row per transition of ``role``, in table order."""
    lines = [
        "| state | event | fed by | new state | receipt kind | message sent | timers |",
        "|---|---|---|---|---|---|---|",
    ]
    for state, event, t in _rows(role):
        timers = " ".join(f"`{op}`" for op in t.timers) or "—"
        lines.append(
            f"| `{state}` | `{event}` | {_carrier(role, event)} | `{t.new_state}` | "
            f"{_code(t.receipt)} | {_code(t.send)} | {timers} |"
        )
    return "\n".join(lines) + "\n"


def _state_table(role: Role) -> str:
    lines = ["| state | 中文 |", "|---|---|"]
    lines += [f"| `{state}` | {STATE_NAMES_ZH[state]} |" for state in _STATES[role]]
    return "\n".join(lines) + "\n"


def _message_table() -> str:
    senders: dict[str, list[str]] = {}
    for (role, _state, event), t in TRANSITIONS.items():
        if t.send is not None:
            names = senders.setdefault(t.send, [])
            entry = f"{role} `{event}`"
            if entry not in names:
                names.append(entry)
    lines = [
        "| message kind | sent on | body | receiver's event |",
        "|---|---|---|---|",
    ]
    for kind, selector, event, receiver in message_events():
        lines.append(
            f"| `{kind}` | {', '.join(senders.get(kind, ['—']))} | {selector} | {receiver} `{event}` |"
        )
    return "\n".join(lines) + "\n"


def markdown(section: int = 7) -> str:
    """The generated part of docs/protocol.md §``section`` (without the markers)."""
    parts: list[str] = []
    roles: tuple[Role, ...] = ("collecting", "handling")
    for number, role in enumerate(roles, start=2):
        rows = len(list(_rows(role)))
        parts += [
            f"### {section}.{number} {ROLE_TITLES[role]}\n",
            f"{len(_STATES[role])} states, {rows} transitions. "
            f"Every `(state, event)` pair not listed is refused with `invalid_transition`.\n",
            _state_table(role),
            f"```mermaid\n{mermaid(role)}```\n",
            transition_table(role),
        ]
    parts += [
        f"### {section}.4 Messages and the events they are\n",
        "A message of the peer is fed in as the event below; the same act has the same name "
        "on both sides where it can.\n",
        _message_table(),
    ]
    return "\n".join(parts)


def splice(document: str, section: str | None = None) -> str:
    """``document`` with the text between the markers replaced by ``section``."""
    start = document.index(BEGIN_MARKER) + len(BEGIN_MARKER)
    end = document.index(END_MARKER, start)
    generated = markdown() if section is None else section
    # Blank lines around the section, so the last table ends before the end marker.
    return f"{document[:start]}\n{generated}\n{document[end:]}"


def generated_section(document: str) -> str:
    """The text between the markers of ``document``, as ``splice`` wrote it."""
    start = document.index(BEGIN_MARKER) + len(BEGIN_MARKER)
    end = document.index(END_MARKER, start)
    return document[start:end].removeprefix("\n").removesuffix("\n")


if __name__ == "__main__":
    print(markdown(), end="")
