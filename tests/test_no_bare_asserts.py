"""Shipped code checks its invariants with explicit code: `python -O` strips every `assert` statement."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("gateway", "simulators")


def asserts_in(source: str) -> list[int]:
    """The lines of every `assert` statement in a module's source."""
    return [node.lineno for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assert)]


def scanned_files() -> list[Path]:
    return [path for top in SHIPPED for path in sorted((ROOT / top).rglob("*.py"))]


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ("assert x\n", [1]),
        ("def f(x):\n    if x:\n        assert x.y is not None, 'why'\n    return x\n", [3]),
        ("class C:\n    def m(self):\n        assert self\n", [3]),
        ("if x is None:\n    raise AssertionError('x')\n", []),
        ("assertion = 'assert x'\n", []),
    ],
)
def test_the_scan_finds_every_assert_statement_and_nothing_else(source: str, lines: list[int]) -> None:
    assert asserts_in(source) == lines


def test_the_scan_covers_the_shipped_packages() -> None:
    scanned = {path.relative_to(ROOT).as_posix() for path in scanned_files()}
    for expected in ("gateway/settlement/rules.py", "gateway/serve/readers.py", "gateway/serve/adapter.py",
                     "gateway/serve/handlers.py", "gateway/protocol/session.py", "gateway/ledger/batch.py",
                     "gateway/db/migrate.py", "simulators/load.py"):
        assert expected in scanned


def test_shipped_code_has_no_bare_assert() -> None:
    found = [f"{path.relative_to(ROOT)}:{line}" for path in scanned_files()
             for line in asserts_in(path.read_text(encoding="utf-8"))]
    assert found == [], "replace each with an explicit check raising a meaningful exception"
