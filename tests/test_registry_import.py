"""`gateway registry import`: every row validated, all or nothing, safe to repeat — on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.demo.registry import (
    DEFAULT_TERMINALS_PER_INSTITUTION,
    DEMO_CREDENTIAL,
    DEMO_INSTITUTIONS,
    write_demo_registry,
)
from gateway.protocol.session import MAX_TERMINAL_ID_CHARS
from gateway.reader.spec import MAX_SPEC_CHARS
from gateway.registry.credentials import hash_credential, verify_credential
from gateway.registry.importer import ImportFailed, import_files
from gateway.registry.models import MAX_INSTITUTION_NAME_CHARS, Institution, Terminal
from tests.registry_support import count, write

INSTITUTIONS = """code,name,region_code,kind,level,cross_region_designated
H33020300101,海曙测试医院,330203,hospital,tertiary,true
P33020300102,海曙测试药房,330203,pharmacy,,false
"""
TERMINALS = """terminal_id,institution_code,credential,enabled
H33020300101-01,H33020300101,secret-0101-01,true
P33020300102-01,P33020300102,secret-0102-01,false
"""


def test_import_writes_institutions_and_terminals(migrated_engine: Engine, tmp_path: Path) -> None:
    files = [write(tmp_path, "t.csv", TERMINALS), write(tmp_path, "i.csv", INSTITUTIONS)]  # any order
    report = import_files(migrated_engine, files)
    assert report.tables["institutions"].inserted == 2
    assert report.tables["terminals"].inserted == 2
    with Session(migrated_engine) as db:
        pharmacy = db.get(Institution, "P33020300102")
        assert pharmacy is not None and pharmacy.level is None and not pharmacy.cross_region_designated
        terminal = db.get(Terminal, "P33020300102-01")
        assert terminal is not None and not terminal.enabled
        assert "secret" not in terminal.credential_hash
        assert verify_credential("secret-0102-01", terminal.credential_hash)


def test_importing_the_same_files_again_changes_nothing(migrated_engine: Engine, tmp_path: Path) -> None:
    files = [write(tmp_path, "i.csv", INSTITUTIONS), write(tmp_path, "t.csv", TERMINALS)]
    import_files(migrated_engine, files)
    with Session(migrated_engine) as db:
        hashes = dict(db.execute(select(Terminal.terminal_id, Terminal.credential_hash)).all())
    again = import_files(migrated_engine, files)
    assert again.tables["institutions"].unchanged == 2 and again.tables["terminals"].unchanged == 2
    with Session(migrated_engine) as db:
        assert dict(db.execute(select(Terminal.terminal_id, Terminal.credential_hash)).all()) == hashes


def test_a_changed_row_is_updated(migrated_engine: Engine, tmp_path: Path) -> None:
    import_files(migrated_engine, [write(tmp_path, "i.csv", INSTITUTIONS), write(tmp_path, "t.csv", TERMINALS)])
    changed = TERMINALS.replace("secret-0101-01,true", "new-secret-0101,false")
    report = import_files(migrated_engine, [write(tmp_path, "t2.csv", changed)])
    assert report.tables["terminals"].updated == 1
    with Session(migrated_engine) as db:
        terminal = db.get(Terminal, "H33020300101-01")
        assert terminal is not None and not terminal.enabled
        assert verify_credential("new-secret-0101", terminal.credential_hash)


BAD_ROWS = [
    ("code,name,region_code,kind,level,cross_region_designated\nX1,n,330203,hospital,tertiary,true\n",
     "line 2: code 'X1' must be"),
    ("code,name,region_code,kind,level,cross_region_designated\nH33020300101,n,999999,hospital,tertiary,true\n",
     "line 2: region_code '999999' is not a known"),
    ("code,name,region_code,kind,level,cross_region_designated\nH33020300101,n,330203,clinic,tertiary,true\n",
     "line 2: kind 'clinic' must be one of"),
    ("code,name,region_code,kind,level,cross_region_designated\nH33020300101,n,330203,hospital,,true\n",
     "line 2: a hospital needs a level"),
    ("code,name,region_code,kind,level,cross_region_designated\nH33020300101,n,330203,hospital,top,true\n",
     "line 2: level 'top' must be one of"),
    ("code,name,region_code,kind,level,cross_region_designated\nH33020300101,n,330203,hospital,tertiary,maybe\n",
     "line 2: cross_region_designated must be true or false"),
    ("code,name,region_code,kind,level,cross_region_designated\nH33020300101,,330203,hospital,tertiary,true\n",
     "line 2: name is empty"),
    ("code,name,region_code,kind,level,cross_region_designated\nH33020300101,a,330203,hospital,tertiary,true\n"
     "H33020300101,b,330203,hospital,tertiary,true\n", "line 3: code 'H33020300101' already on line 2"),
    ("code,name,region_code,kind,level,cross_region_designated\nH33020300101,a,330203,hospital,tertiary,true,extra\n",
     "line 2: more cells than header columns"),
    ("terminal_id,institution_code,credential\nbad id,H33020300101,secret-123\n", "line 2: terminal_id 'bad id'"),
    ("terminal_id,institution_code,credential\nT-1,H33020300101,short\n", "line 2: credential must be 8 to 128"),
    ("terminal_id,institution_code,credential\nT-1,H99999999999,long-enough\n",
     "line 2: institution_code 'H99999999999' is in neither"),
    ("who,what\n1,2\n", "line 1: unrecognised header"),
    ("", "the file is empty"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_ROWS, ids=[b[1][:40] for b in BAD_ROWS])
def test_bad_rows_are_reported_by_line_and_nothing_is_written(
    migrated_engine: Engine, tmp_path: Path, text: str, expected: str
) -> None:
    good = write(tmp_path, "good.csv", INSTITUTIONS)
    bad = write(tmp_path, "bad.csv", text)
    files = [bad] if text.startswith("code") else [good, bad]
    with pytest.raises(ImportFailed) as failed:
        import_files(migrated_engine, files)
    messages = [str(e) for e in failed.value.errors]
    assert any(expected in m and "bad.csv" in m for m in messages), messages
    assert count(migrated_engine, Institution) == 0
    assert count(migrated_engine, Terminal) == 0


def test_every_bad_row_is_reported_not_just_the_first(migrated_engine: Engine, tmp_path: Path) -> None:
    text = INSTITUTIONS + "X,n,330203,hospital,tertiary,true\nH33020300103,n,123456,hospital,tertiary,true\n"
    with pytest.raises(ImportFailed) as failed:
        import_files(migrated_engine, [write(tmp_path, "i.csv", text)])
    assert [e.line for e in failed.value.errors] == [4, 5]


def test_terminals_may_reference_institutions_already_in_the_registry(
    migrated_engine: Engine, tmp_path: Path
) -> None:
    import_files(migrated_engine, [write(tmp_path, "i.csv", INSTITUTIONS)])
    import_files(migrated_engine, [write(tmp_path, "t.csv", TERMINALS)])
    assert count(migrated_engine, Terminal) == 2


def test_a_utf8_bom_and_crlf_line_ends_from_excel_are_accepted(migrated_engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + INSTITUTIONS.replace("\n", "\r\n").encode("utf-8"))
    assert import_files(migrated_engine, [path]).tables["institutions"].inserted == 2


def test_a_file_that_is_not_utf8_is_refused_with_its_line(migrated_engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes(INSTITUTIONS.encode("gbk"))
    with pytest.raises(ImportFailed) as failed:
        import_files(migrated_engine, [path])
    [error] = failed.value.errors
    assert error.line == 2 and "UTF-8" in error.message


def test_the_demo_registry_is_consistent_and_repeatable(migrated_engine: Engine) -> None:
    first = write_demo_registry(migrated_engine)
    second = write_demo_registry(migrated_engine)
    terminals = len(DEMO_INSTITUTIONS) * DEFAULT_TERMINALS_PER_INSTITUTION
    assert first.tables["terminals"].inserted == count(migrated_engine, Terminal) == terminals
    assert second.tables["terminals"].unchanged == terminals
    with Session(migrated_engine) as db:
        terminal = db.get(Terminal, "H33020300001-01")
        assert terminal is not None and verify_credential(DEMO_CREDENTIAL, terminal.credential_hash)


def test_credentials_are_salted() -> None:
    assert hash_credential("same-secret") != hash_credential("same-secret")
    assert not verify_credential("other", hash_credential("same-secret"))
    assert not verify_credential("x", "garbage")


@pytest.mark.parametrize(
    ("column", "limit", "value_of_length"),
    [
        ("name", MAX_INSTITUTION_NAME_CHARS, lambda n: "院" * n),
        ("terminal_id", MAX_TERMINAL_ID_CHARS, lambda n: "T" * n),
        ("reader", MAX_SPEC_CHARS, lambda n: "pcsc:" + "R" * (n - len("pcsc:"))),
    ],
)
def test_the_longest_text_an_import_accepts_is_what_its_column_holds(
    migrated_engine: Engine, tmp_path: Path, column: str, limit: int, value_of_length: Callable[[int], str]
) -> None:
    # One limit for the check and the column: on PostgreSQL a longer value would not even fit.
    def files(value: str) -> list[Path]:
        row = {"name": "海曙测试医院", "terminal_id": "H33020300101-01", "reader": "terminal", column: value}
        return [write(tmp_path, "i.csv", "code,name,region_code,kind,level,cross_region_designated\n"
                                         f"H33020300101,{row['name']},330203,hospital,tertiary,true\n"),
                write(tmp_path, "t.csv", "terminal_id,institution_code,credential,reader\n"
                                         f"{row['terminal_id']},H33020300101,secret-0101-01,{row['reader']}\n")]

    with pytest.raises(ImportFailed) as failed:
        import_files(migrated_engine, files(value_of_length(limit + 1)))
    refusals = [str(error) for error in failed.value.errors]
    assert any(column in r and str(limit) in r for r in refusals), refusals
    longest = value_of_length(limit)
    import_files(migrated_engine, files(longest))
    model = Institution if column == "name" else Terminal
    with Session(migrated_engine) as db:
        assert db.scalar(select(getattr(model, column))) == longest
