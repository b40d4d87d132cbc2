"""docs/protocol.md cannot drift from the code it specifies.

- §7's generated section is exactly what ``python -m protocol.diagram`` prints now.
- Every message kind, every body model with all its fields, the envelope, receipt
  and signature fields, every code of ``protocol.codes`` and every reason code of
  ``protocol.errors.Reason`` (with its messages and transient flag) are documented.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from protocol import bodies, codes, diagram, envelope
from protocol.envelope import KINDS
from protocol.errors import Reason
from protocol.fields import Wire
from protocol.states import TRANSITIONS

SPEC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

CODE_SETS = [
    codes.SERVICE_OBJECTS, codes.CASE_TYPES, codes.SPECIAL_PROCEDURES, codes.SATISFACTION,
    codes.EVALUATION_CHANNELS, codes.BUSINESS_ACTIONS, codes.TRUST_LEVELS, codes.COLLECTION_MODES,
    codes.IDENTITY_METHODS, codes.ID_TYPES, codes.ACCEPTANCE_MODELS, codes.OUTCOME_RESULTS,
    codes.DELIVERY_MODES,
]


@pytest.fixture(scope="module")
def spec() -> str:
    return SPEC.read_text(encoding="utf-8")


def section(text: str, number: int) -> str:
    """The text of top-level section ``## <number> ...`` up to the next one."""
    match = re.search(rf"^## {number} .*?(?=^## \d+ |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"docs/protocol.md has no section {number}"
    return match.group(0)


def model_table(text: str, name: str) -> str:
    """The text under the ``#### `Name` ...`` heading, up to the next heading."""
    match = re.search(rf"^#### `{name}`.*?(?=^#)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"docs/protocol.md has no '#### `{name}`' heading"
    return match.group(0)


def wire_models() -> list[type[BaseModel]]:
    found = []
    for module in (envelope, bodies):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Wire) and cls.__module__ == module.__name__ \
                    and not cls.__name__.startswith("_"):
                found.append(cls)
    return found


def test_generated_states_section_is_current(spec: str) -> None:
    assert diagram.generated_section(spec) == diagram.markdown(), (
        "the state tables in docs/protocol.md §7 differ from protocol.states.TRANSITIONS; "
        "paste the output of `python -m protocol.diagram` between the markers "
        "(protocol.diagram.splice does it)"
    )


def test_splice_is_idempotent(spec: str) -> None:
    assert diagram.splice(spec) == spec


def test_every_transition_appears_in_the_generated_tables(spec: str) -> None:
    generated = diagram.generated_section(spec)
    rows = [line for line in generated.splitlines() if line.startswith("| `")]
    table_rows = [r for r in rows if r.count("|") == 8]
    assert len(table_rows) == len(TRANSITIONS)


@pytest.mark.parametrize("kind", KINDS)
def test_message_kind_is_documented(spec: str, kind: str) -> None:
    assert re.search(rf"^\| `{kind}` \|", section(spec, 3), re.MULTILINE), (
        f"message kind {kind!r} has no row in the table of §3.4"
    )


def test_no_undocumented_kinds(spec: str) -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \| [^|]+ \| (?:collecting|handling|either)",
                      section(spec, 3), re.MULTILINE)
    assert sorted(rows) == sorted(KINDS)


@pytest.mark.parametrize("model", wire_models(), ids=lambda m: m.__name__)
def test_model_fields_are_documented(spec: str, model: type[BaseModel]) -> None:
    table = model_table(spec, model.__name__)
    documented = re.findall(r"^\| `([a-z0-9_]+)` \|", table, re.MULTILINE)
    assert documented == list(model.model_fields), (
        f"the table under '#### `{model.__name__}`' should list exactly its fields, in order"
    )


@pytest.mark.parametrize("reason", list(Reason), ids=lambda r: r.code)
def test_reason_code_is_documented(spec: str, reason: Reason) -> None:
    kind = "transient" if reason.transient else "final"
    row = f"| `{reason.code}` | {reason.zh} | {reason.en} | {kind} |"
    assert row in section(spec, 10), f"§10 needs the row starting {row!r}"


def test_no_undocumented_reason_codes(spec: str) -> None:
    rows = re.findall(r"^\| `([a-z_]+)` \|", section(spec, 10), re.MULTILINE)
    assert rows == [reason.code for reason in Reason]


@pytest.mark.parametrize("code_set", CODE_SETS, ids=lambda c: "/".join(map(str, list(c)[:2])))
def test_code_set_is_documented(spec: str, code_set: dict[object, str]) -> None:
    text = section(spec, 3)
    missing = [f"| `{value}` | {label} |" for value, label in code_set.items()
               if f"| `{value}` | {label} |" not in text]
    assert missing == [], f"§3.6 lacks the rows {missing}"


def test_tags_quoted_in_the_spec_match_the_code(spec: str) -> None:
    from protocol.envelope import TAG_ENVELOPE, TAG_RECEIPT
    from protocol.health import TAG_HEARTBEAT
    from protocol.machine import TAG_EVENT
    from protocol.rtc import TAG_SIGNAL
    from receipts.sealing import COMMIT_TAG, PAYLOAD_TAG
    from receipts.signing import ROOT_TAG

    for tag in (TAG_ENVELOPE, TAG_RECEIPT, TAG_EVENT, ROOT_TAG, PAYLOAD_TAG, COMMIT_TAG,
                b"tongban/1 chunk\x00", TAG_SIGNAL, TAG_HEARTBEAT):
        assert f"`{tag.hex()}`" in spec, f"the spec should quote the tag {tag!r} in hex"
