"""Look-ups the server makes in the registry (blocking: run them off the reactor thread)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.registry.models import Institution, Terminal


@dataclass(frozen=True)
class TerminalRecord:
    terminal_id: str
    credential_hash: str
    enabled: bool
    institution_code: str
    institution_name: str
    institution_enabled: bool
    reader: str = "terminal"


class TerminalDirectory:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def find_terminal(self, terminal_id: str) -> TerminalRecord | None:
        statement = (
            select(Terminal, Institution)
            .join(Institution, Terminal.institution_code == Institution.code)
            .where(Terminal.terminal_id == terminal_id)
        )
        with Session(self._engine) as session:
            row = session.execute(statement).first()
            if row is None:
                return None
            terminal, institution = row
            return TerminalRecord(
                terminal_id=terminal.terminal_id,
                credential_hash=terminal.credential_hash,
                enabled=terminal.enabled,
                institution_code=institution.code,
                institution_name=institution.name,
                institution_enabled=institution.enabled,
                reader=terminal.reader,
            )
