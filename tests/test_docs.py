"""The documents a vendor and an operator rely on say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.protocol.messages import pb
from gateway.protocol.states import TRANSITIONS, State, Trigger

ROOT = Path(__file__).resolve().parent.parent


def test_the_protocol_document_explains_every_status_code() -> None:
    text = (ROOT / "docs/protocol.md").read_text(encoding="utf-8")
    names = [value.name for value in pb.StatusCode.DESCRIPTOR.values]
    missing = [name for name in names if name != "STATUS_CODE_UNSPECIFIED" and name not in text]
    assert missing == []


def test_the_protocol_document_maps_the_national_transactions() -> None:
    text = (ROOT / "docs/protocol.md").read_text(encoding="utf-8")
    for code in ("9001", "9002", "1101", "2206", "2207", "2208", "2601", "3201", "3202"):
        assert code in text


def test_the_readme_quickstart_is_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make run" in text and "make test" in text
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in ci


def test_the_protocol_document_gives_the_session_table_exactly() -> None:
    """Section 3.1's table of events × states is gateway.protocol.states.TRANSITIONS, cell for cell."""
    text = (ROOT / "docs/protocol.md").read_text(encoding="utf-8")
    section = text[text.index("### 3.1 States"):text.index("### 3.2 ")]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = next(line for line in lines if line.startswith("| event |"))
    columns = [State[re.fullmatch(r"in `(\w+)`", cell).group(1)]  # type: ignore[union-attr]
               for cell in _cells(header)[1:]]
    events = {trigger.value: trigger for trigger in Trigger}
    documented: dict[tuple[State, Trigger], State] = {}
    rows = [_cells(line) for line in lines if _cells(line)[0] in events]
    for event, *cells in rows:
        for state, cell in zip(columns, cells, strict=True):
            if not cell.startswith("—"):
                documented[(state, events[event])] = State[re.match(r"`(\w+)`", cell).group(1)]  # type: ignore[union-attr]
    assert sorted(row[0] for row in rows) == sorted(events)
    assert documented == dict(TRANSITIONS)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]
