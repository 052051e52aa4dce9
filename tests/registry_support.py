"""Registry files for the import tests: written to disk, and rows counted after."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def count(engine: Engine, model: type) -> int:
    with Session(engine) as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)
