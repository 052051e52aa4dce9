"""`gateway registry import FILE...`: validate every row of every file, then import all or nothing.

Each CSV file is recognised by its header. Every bad row is reported with its file and line number;
if any row is bad, nothing is written. Importing the same files again changes nothing, so operators
can reload the registry whenever it changes.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.protocol.session import MAX_TERMINAL_ID_CHARS, REGISTERED_TERMINAL_ID
from gateway.reader.spec import ReaderSpec
from gateway.regions import is_known_region
from gateway.registry.cells import (
    LOOKUP_CHUNK,
    ImportReport,
    OnRegistered,
    ParsedTable,
    RowError,
    RowProblem,
    TableCounts,
    TableSpec,
    optional,
    parse_bool,
    require,
    row_by_row,
    update_existing,
    upsert,
)
from gateway.registry.credentials import credential_problem, hash_credential, verify_credential
from gateway.registry.models import MAX_INSTITUTION_NAME_CHARS, Institution, Terminal
from gateway.registry.person_tables import PERSON_TABLE_SPECS, check_person_references
from gateway.settlement.facts import InstitutionKind, InstitutionLevel

# Re-exported: callers import these from the importer.
__all__ = [
    "ImportFailed", "ImportReport", "OnRegistered", "ParsedTable", "RowError", "RowProblem", "TableCounts",
    "TableSpec", "detect_spec", "import_files", "import_tables", "read_files", "read_table",
]

# Files larger than this are refused before parsing: the registry is thousands of rows, not GBs.
MAX_IMPORT_FILE_BYTES = 256 * 1024 * 1024
INSTITUTION_CODE = re.compile(r"^[A-Z][0-9]{11}$")


class ImportFailed(Exception):
    def __init__(self, errors: Sequence[RowError]) -> None:
        super().__init__(f"{len(errors)} problem(s); nothing was imported")
        self.errors = list(errors)


# Institutions and terminals -------------------------------------------------------------------


def _parse_institution(row: dict[str, str]) -> dict[str, Any]:
    code = require(row, "code")
    if not INSTITUTION_CODE.match(code):
        raise RowProblem(f"code {code!r} must be a capital letter and 11 digits, e.g. H33020300001")
    name = require(row, "name")
    if len(name) > MAX_INSTITUTION_NAME_CHARS:
        raise RowProblem(f"name is longer than {MAX_INSTITUTION_NAME_CHARS} characters")
    region_code = require(row, "region_code")
    if not is_known_region(region_code):
        raise RowProblem(f"region_code {region_code!r} is not a known GB/T 2260 code (see regions.csv)")
    kind = require(row, "kind").lower()
    kinds = [k.value for k in InstitutionKind]
    if kind not in kinds:
        raise RowProblem(f"kind {kind!r} must be one of {', '.join(kinds)}")
    level = optional(row, "level")
    levels = [lv.value for lv in InstitutionLevel]
    if level is not None:
        level = level.lower()
        if level not in levels:
            raise RowProblem(f"level {level!r} must be one of {', '.join(levels)}, or empty")
    elif kind == InstitutionKind.HOSPITAL:
        raise RowProblem(f"a hospital needs a level: one of {', '.join(levels)}")
    designated = parse_bool("cross_region_designated")(require(row, "cross_region_designated"))
    enabled_text = optional(row, "enabled")
    enabled = True if enabled_text is None else parse_bool("enabled")(enabled_text)
    return {
        "code": code, "name": name, "region_code": region_code, "kind": kind, "level": level,
        "cross_region_designated": designated, "enabled": enabled,
    }


def _parse_terminal(row: dict[str, str]) -> dict[str, Any]:
    terminal_id = require(row, "terminal_id")
    if not REGISTERED_TERMINAL_ID.match(terminal_id):
        raise RowProblem(
            f"terminal_id {terminal_id!r} must be 1 to {MAX_TERMINAL_ID_CHARS} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    institution_code = require(row, "institution_code")
    credential = require(row, "credential")
    problem = credential_problem(credential)
    if problem:
        raise RowProblem(problem)
    enabled_text = optional(row, "enabled")
    enabled = True if enabled_text is None else parse_bool("enabled")(enabled_text)
    try:
        reader = str(ReaderSpec.parse(optional(row, "reader") or "terminal"))
    except ValueError as exc:
        raise RowProblem(str(exc)) from exc
    return {
        "terminal_id": terminal_id, "institution_code": institution_code, "credential": credential,
        "enabled": enabled, "reader": reader,
    }


def _write_institution(session: Session, record: dict[str, Any], counts: TableCounts,
                       on_registered: OnRegistered) -> None:
    upsert(session, Institution, record["code"], record, counts, on_registered)


def _write_terminals(session: Session, table: ParsedTable, counts: TableCounts,
                     on_registered: OnRegistered) -> None:
    # The file's terminals already registered are read at once, and nothing is flushed row by row: a look-up and
    # a flush per row cost seconds on PostgreSQL for the demo registry's 1,757 terminals.
    records = table.records()
    wanted = [record["terminal_id"] for record in records]
    registered: dict[str, Terminal] = {}
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[start:start + LOOKUP_CHUNK]
        registered.update((t.terminal_id, t) for t in session.scalars(
            select(Terminal).where(Terminal.terminal_id.in_(chunk))))
    with session.no_autoflush:
        for record in records:
            values = dict(record)
            credential = values.pop("credential")
            existing = registered.get(values["terminal_id"])
            if existing is not None and verify_credential(credential, existing.credential_hash):
                values["credential_hash"] = existing.credential_hash  # same secret: keep its salt
            else:
                values["credential_hash"] = hash_credential(credential)
            if existing is None:
                session.add(Terminal(**values))
                counts.inserted += 1
            else:
                update_existing(existing, values, counts, on_registered)
    session.flush()  # a later table of the import reads them


INSTITUTIONS = TableSpec(
    name="institutions",
    required_columns=frozenset({"code", "name", "region_code", "kind", "level", "cross_region_designated"}),
    optional_columns=frozenset({"enabled"}),
    key_columns=("code",),
    parse_row=_parse_institution,
    write=row_by_row(_write_institution),
    order=10,
)
TERMINALS = TableSpec(
    name="terminals",
    required_columns=frozenset({"terminal_id", "institution_code", "credential"}),
    optional_columns=frozenset({"enabled", "reader"}),
    key_columns=("terminal_id",),
    parse_row=_parse_terminal,
    write=_write_terminals,
    order=20,
)
TABLE_SPECS: tuple[TableSpec, ...] = (INSTITUTIONS, TERMINALS, *PERSON_TABLE_SPECS)


# Reading --------------------------------------------------------------------------------------


def detect_spec(header: Iterable[str]) -> TableSpec | None:
    columns = {h.strip() for h in header}
    for spec in TABLE_SPECS:
        if spec.required_columns <= columns <= spec.required_columns | spec.optional_columns:
            return spec
    return None


def read_table(source: str, text: str, errors: list[RowError]) -> ParsedTable | None:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        errors.append(RowError(source, 0, "the file is empty; the first line must be a header"))
        return None
    spec = detect_spec(reader.fieldnames)
    if spec is None:
        expected = "; ".join(
            f"{s.name}: {', '.join(sorted(s.required_columns))}"
            + (f" [optional: {', '.join(sorted(s.optional_columns))}]" if s.optional_columns else "")
            for s in TABLE_SPECS
        )
        errors.append(RowError(source, 1, f"unrecognised header {reader.fieldnames}; expected one of: {expected}"))
        return None
    table = ParsedTable(spec, source, [])
    seen: dict[tuple[Any, ...], int] = {}
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(RowError(source, reader.line_num, f"not valid CSV: {exc}"))
            return table
        line = reader.line_num
        if None in raw:
            errors.append(RowError(source, line, "more cells than header columns"))
            continue
        row = {k.strip(): (v or "") for k, v in raw.items() if k is not None}
        if not any(v.strip() for v in row.values()):
            continue  # blank line
        try:
            record = spec.parse_row(row)
        except RowProblem as exc:
            errors.append(RowError(source, line, str(exc)))
            continue
        key = spec.key_of(record)
        if key in seen:
            errors.append(RowError(source, line, f"{spec.describe_key(record)} already on line {seen[key]}"))
            continue
        seen[key] = line
        table.rows.append((line, record))
    return table


def read_files(paths: Sequence[Path], errors: list[RowError]) -> list[ParsedTable]:
    """Parse every file; problems are appended to `errors` so that all are reported together."""
    tables: list[ParsedTable] = []
    for path in paths:
        try:
            if path.stat().st_size > MAX_IMPORT_FILE_BYTES:
                errors.append(RowError(str(path), 0, f"larger than {MAX_IMPORT_FILE_BYTES} bytes"))
                continue
            data = path.read_bytes()
        except OSError as exc:
            errors.append(RowError(str(path), 0, f"cannot read: {exc.strerror}"))
            continue
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            errors.append(RowError(str(path), text_line_of(data, exc.start),
                                   "not UTF-8 text; save the file as UTF-8 CSV"))
            continue
        table = read_table(str(path), text, errors)
        if table is not None:
            tables.append(table)
    names = [t.spec.name for t in tables]
    for name in sorted(set(names)):
        if names.count(name) > 1:
            errors.append(RowError(", ".join(t.source for t in tables if t.spec.name == name), 0,
                                   f"more than one {name} file given"))
    return tables


def text_line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


# Writing --------------------------------------------------------------------------------------


def import_tables(
    engine: Engine,
    tables: Sequence[ParsedTable],
    earlier_errors: Sequence[RowError] = (),
    on_registered: OnRegistered = OnRegistered.UPDATE,
) -> ImportReport:
    """Check cross-references against the files and the database, then write in one transaction.

    Raises ImportFailed with every problem (those found while reading, too) and writes nothing.
    """
    report = ImportReport()
    with Session(engine) as session, session.begin():
        errors = [*earlier_errors, *_check_references(session, tables, on_registered)]
        if errors:
            raise ImportFailed(errors)
        for table in sorted(tables, key=lambda t: t.spec.order):
            counts = report.tables.setdefault(table.spec.name, TableCounts())
            table.spec.write(session, table, counts, on_registered)
            session.flush()  # a table's rows exist before the next table's rows reference them
    return report


def import_files(engine: Engine, paths: Sequence[Path]) -> ImportReport:
    errors: list[RowError] = []
    tables = read_files(paths, errors)
    return import_tables(engine, tables, errors)


def _check_references(session: Session, tables: Sequence[ParsedTable], on_registered: OnRegistered) -> list[RowError]:
    by_name = {t.spec.name: t for t in tables}
    return [*_check_terminal_references(session, by_name), *check_person_references(session, by_name, on_registered)]


def _check_terminal_references(session: Session, by_name: dict[str, ParsedTable]) -> list[RowError]:
    errors: list[RowError] = []
    terminals = by_name.get("terminals")
    if terminals is not None:
        institutions = by_name.get("institutions")
        codes_in_files = {r["code"] for _, r in institutions.rows} if institutions else set()
        wanted = {r["institution_code"] for _, r in terminals.rows} - codes_in_files
        existing = set(session.scalars(select(Institution.code))) if wanted else set()
        for line, record in terminals.rows:
            code = record["institution_code"]
            if code not in codes_in_files and code not in existing:
                errors.append(RowError(
                    terminals.source, line,
                    f"institution_code {code!r} is in neither the institutions file nor the registry",
                ))
    return errors
