"""Which reader serves a terminal: `terminal`, `pcsc:READER NAME`, `virtual` or `virtual:CARD_NUMBER`."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("terminal", "pcsc", "virtual")
MAX_SPEC_CHARS = 80


@dataclass(frozen=True)
class ReaderSpec:
    kind: str
    argument: str | None = None

    @classmethod
    def parse(cls, text: str) -> ReaderSpec:
        text = text.strip()
        if not text or len(text) > MAX_SPEC_CHARS:
            raise ValueError(f"a reader is 1 to {MAX_SPEC_CHARS} characters: terminal, pcsc:NAME, virtual[:CARD]")
        kind, _, argument = text.partition(":")
        kind = kind.strip().lower()
        argument = argument.strip()
        if kind not in KINDS:
            raise ValueError(f"reader {text!r}: the kind must be one of {', '.join(KINDS)}")
        if kind == "terminal" and argument:
            raise ValueError("reader 'terminal' takes no argument")
        if kind == "pcsc" and not argument:
            raise ValueError("reader 'pcsc:' needs the PC/SC reader name, e.g. pcsc:Virtual PCD 00 00")
        return cls(kind, argument or None)

    def __str__(self) -> str:
        return self.kind if self.argument is None else f"{self.kind}:{self.argument}"
