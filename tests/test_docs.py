"""The documents a vendor and an operator rely on say what the code does."""

from __future__ import annotations

from pathlib import Path

from gateway.protocol.messages import pb

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
