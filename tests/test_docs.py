"""The documents a vendor and an operator rely on say what the code does."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, succeed

import gateway
from gateway.demo.registry import DEMO_INSTITUTIONS, VIRTUAL_READER_TERMINAL, demo_reader, demo_terminal_id
from gateway.protocol.messages import pb
from gateway.protocol.states import TRANSITIONS, State, Trigger
from gateway.reader.apdu import encode_tlv
from gateway.reader.card import region_is_acceptable
from gateway.reader.driver import EF05_RECORDS, RECORDS, SocialSecurityCardDriver, read_script
from gateway.regions import NINGBO_CITY_PREFIX, known_regions

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


# One release number: gateway/__init__.py, the installed metadata, `gateway --version` and the protocol document.


def test_the_protocol_document_describes_the_release_the_code_is() -> None:
    text = (ROOT / "docs/protocol.md").read_text(encoding="utf-8")
    [described] = re.findall(r"It describes gateway release \*\*([0-9]+\.[0-9]+\.[0-9]+)\*\*", text)
    assert described == gateway.__version__ == metadata.version("ningbo-settlement-gateway")
    printed = subprocess.run([Path(sys.executable).parent / "gateway", "--version"], capture_output=True, text=True,
                             check=True).stdout
    assert printed == f"gateway {described}\n"
    # The release is named once: every other sentence says "this release".
    assert re.findall(r"[Rr]elease [0-9]+\.[0-9]+\.[0-9]+ (?:implements|offers)", text) == []


# What a vendor or a card emulator needs, as the code has it.

PROTOCOL = (ROOT / "docs/protocol.md").read_text(encoding="utf-8")


def _hex_cells(label: str) -> list[bytes]:
    """The command APDUs of the protocol document's script table rows `| label, N | `HEX` |`."""
    rows = re.findall(rf"^\| {label}, ([0-9]+) \| `([0-9A-F ]+)`", PROTOCOL, flags=re.MULTILINE)
    assert [int(n) for n, _ in rows] == list(range(1, len(rows) + 1))
    return [bytes.fromhex(cell) for _, cell in rows]


def test_the_documented_card_read_script_is_the_one_the_driver_sends() -> None:
    assert _hex_cells("read") == read_script()
    read_ef05 = [spec.record for spec in EF05_RECORDS]
    assert 2 not in read_ef05 and 4 not in read_ef05  # the document says records 02 and 04 are not read


def test_the_documented_pin_script_is_the_one_the_driver_sends() -> None:
    select, card_number, verify_header = _hex_cells("PIN")
    script = FakeReader()
    outcome: list[object] = []
    SocialSecurityCardDriver(script).verify_pin("000000", "N00000001").addBoth(outcome.append)
    assert outcome == [None]  # the card accepted the PIN
    assert script.sent == [select, card_number, verify_header + bytes(3)]  # 000000 is 00 00 00 in BCD


def test_the_documented_record_layout_is_the_one_the_driver_reads() -> None:
    rows = re.findall(r"^\| (EF0[56]), ([0-9]{2}) \| `([0-9A-F]{2})` \| ([0-9]+) \|", PROTOCOL, flags=re.MULTILINE)
    documented = [(5 if file == "EF05" else 6, int(record), int(tag, 16), int(length))
                  for file, record, tag, length in rows]
    assert documented == [(spec.sfi, spec.record, spec.tag, spec.length) for spec in RECORDS]


def test_the_documented_ningbo_issuing_regions_are_the_region_table_s() -> None:
    [paragraph] = re.findall(r"\*\*A known issuing region\*\*.*?\(`3301`", PROTOCOL, flags=re.DOTALL)
    documented = set(re.findall(r"`(3302[0-9]{2})`", paragraph))
    ningbo = {code for code in known_regions() if code.startswith(NINGBO_CITY_PREFIX)}
    assert documented == ningbo and all(region_is_acceptable(code) for code in documented)


@pytest.mark.parametrize("document", ["README.md", "docs/protocol.md"])
def test_the_documents_say_which_demo_card_sits_in_which_demo_terminal(document: str) -> None:
    text = (ROOT / document).read_text(encoding="utf-8")
    documented = dict(re.findall(r"^\| `([A-Z][0-9]{11}-[0-9]{2})` \| `([A-Z0-9]{9})` \|", text, flags=re.MULTILINE))
    virtual = {demo_terminal_id(code, VIRTUAL_READER_TERMINAL): demo_reader(index, VIRTUAL_READER_TERMINAL)
               for index, (code, *_) in enumerate(DEMO_INSTITUTIONS)}
    assert {terminal: f"virtual:{card}" for terminal, card in documented.items()} == virtual


class FakeReader:
    """Records the script it is sent and answers as a card holding N00000001 whose PIN is right."""

    name = "fake"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def transmit(self, commands: list[bytes], *, stop_on_error: bool = False) -> Deferred[list[bytes]]:
        self.sent.extend(commands)
        card_number = encode_tlv(0x07, b"N00000001") + b"\x90\x00"
        return succeed([b"\x90\x00", card_number, b"\x90\x00"][:len(commands)])

    def card_present(self) -> Deferred[bool]:
        return succeed(True)

    def subscribe(self, listener: object) -> Callable[[], None]:
        return lambda: None
