"""The pieces every registry file shares: how a table is described, cells are parsed, problems reported
and rows written (gateway.registry.importer puts them together).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.engine import MAX_IN_LIST_KEYS
from gateway.identity import is_valid_id_number, mask_id
from gateway.reader.card import region_is_acceptable
from gateway.regions import known_regions

TRUE_WORDS = frozenset({"true", "yes", "y", "1", "是"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "否"})
ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
COMPACT_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")
ID_NUMBER_SHAPE = re.compile(r"[0-9]{17}[0-9X]")
# Columns holding resident ID numbers: masked whenever a message repeats them.
ID_COLUMNS = frozenset({"social_security_number", "id_number"})
# Cross-reference look-ups ask the database for at most this many keys at once.
LOOKUP_CHUNK = MAX_IN_LIST_KEYS


class RowProblem(ValueError):
    """One cell or row is invalid; the message names the column and says what is expected."""


@dataclass(frozen=True)
class RowError:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


class OnRegistered(enum.Enum):
    """What a row of the files does to the same row (same key) already in the registry."""

    # The files are the registry's source (`gateway registry import`): their values replace the registered ones.
    UPDATE = "update"
    # The files only fill gaps (`gateway registry demo`): a registered row stays as it is, since an agency
    # operation (a loss report, a replacement, a filing's end, a change of region) may have changed it since.
    KEEP = "keep"


@dataclass
class TableCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    # Registered rows that differ from the files and were left as registered (OnRegistered.KEEP).
    kept: int = 0


@dataclass
class ImportReport:
    tables: dict[str, TableCounts] = field(default_factory=dict)

    def summary(self) -> str:
        return "; ".join(
            f"{name}: {c.inserted} new, {c.updated} updated, {c.unchanged} unchanged"
            + (f", {c.kept} kept as registered" if c.kept else "")
            for name, c in self.tables.items()
        )


@dataclass(frozen=True)
class TableSpec:
    name: str
    required_columns: frozenset[str]
    optional_columns: frozenset[str]
    # The columns that identify a row: a second row with the same values in one file is an error, and a
    # row already in the registry is updated rather than inserted.
    key_columns: tuple[str, ...]
    parse_row: Callable[[dict[str, str]], dict[str, Any]]
    write: Callable[[Session, ParsedTable, TableCounts, OnRegistered], None]
    # Lower numbers are written first (institutions before the terminals that reference them).
    order: int

    def key_of(self, record: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(record[column] for column in self.key_columns)

    def describe_key(self, record: dict[str, Any]) -> str:
        return ", ".join(f"{column} {shown(column, record[column])}" for column in self.key_columns)


@dataclass
class ParsedTable:
    spec: TableSpec
    source: str
    rows: list[tuple[int, dict[str, Any]]]

    def records(self) -> list[dict[str, Any]]:
        return [record for _line, record in self.rows]


# Cell parsers ---------------------------------------------------------------------------------


def shown(column: str, value: Any) -> str:
    """A value as a message repeats it: ID numbers masked, dates as YYYY-MM-DD."""
    if column in ID_COLUMNS and isinstance(value, str):
        return mask_id(value)
    if isinstance(value, date):
        return value.isoformat()
    return repr(value)


def parse_bool(column: str) -> Callable[[str], bool]:
    def parse(value: str) -> bool:
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise RowProblem(f"{column} must be true or false (got {value!r})")

    return parse


def require(row: dict[str, str], column: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise RowProblem(f"{column} is empty")
    return value


def optional(row: dict[str, str], column: str) -> str | None:
    value = (row.get(column) or "").strip()
    return value or None


def parse_date(column: str, text: str) -> date:
    """YYYY-MM-DD, or YYYYMMDD as the card and many exports write it."""
    match = ISO_DATE.fullmatch(text) or COMPACT_DATE.fullmatch(text)
    if match is None:
        raise RowProblem(f"{column} {text!r} must be a date as YYYY-MM-DD or YYYYMMDD")
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError as exc:
        raise RowProblem(f"{column} {text!r} is not a calendar date ({exc})") from exc


def parse_id_number(column: str, text: str) -> str:
    """A resident ID number (GB 11643-1999) with a correct check character; a lower-case x is accepted."""
    number = text.upper()
    if not ID_NUMBER_SHAPE.fullmatch(number):
        raise RowProblem(f"{column} must be 18 characters: 17 digits, then a digit or X")
    if not is_valid_id_number(number):
        raise RowProblem(f"{column} {mask_id(number)} fails its GB 11643 check digit (mistyped?)")
    return number


def parse_current_region(column: str, text: str) -> str:
    """A region a person can be insured in or file for today: acceptable on a card, and not retired."""
    if not region_is_acceptable(text):
        raise RowProblem(f"{column} {text!r} is not a region code the gateway accepts "
                         "(Zhejiang codes from regions.csv, other provinces by their first two digits)")
    region = known_regions().get(text)
    if region is not None and region.retired:
        raise RowProblem(f"{column} {text!r} ({region.name_en}) is {region.status}: use the current code")
    return text


def parse_choice(column: str, text: str, choices: Iterable[str]) -> str:
    allowed = list(choices)
    value = text.lower()
    if value not in allowed:
        raise RowProblem(f"{column} {text!r} must be one of {', '.join(allowed)}")
    return value


# Database helpers -----------------------------------------------------------------------------


def rows_with_keys(
    session: Session, columns: Sequence[Any], key: Any, keys: Iterable[Any]
) -> list[tuple[Any, ...]]:
    """`SELECT columns WHERE key IN keys`, asked in chunks so that any number of keys works."""
    wanted = sorted(set(keys))
    found: list[tuple[Any, ...]] = []
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        statement = select(*columns).where(key.in_(wanted[start:start + LOOKUP_CHUNK]))
        found.extend(tuple(row) for row in session.execute(statement))
    return found


def upsert(session: Session, model: type[Any], key: Any, values: dict[str, Any], counts: TableCounts,
           on_registered: OnRegistered) -> None:
    existing = session.get(model, key)
    if existing is None:
        session.add(model(**values))
        counts.inserted += 1
        return
    update_existing(existing, values, counts, on_registered)


def update_existing(existing: Any, values: dict[str, Any], counts: TableCounts, on_registered: OnRegistered) -> None:
    """Set only what differs, so that an unchanged row is not written (and its updated_at stays)."""
    differing = {name: value for name, value in values.items() if getattr(existing, name) != value}
    if not differing:
        counts.unchanged += 1
    elif on_registered is OnRegistered.KEEP:
        counts.kept += 1
    else:
        for name, value in differing.items():
            setattr(existing, name, value)
        counts.updated += 1


def row_by_row(
    write_record: Callable[[Session, dict[str, Any], TableCounts, OnRegistered], None],
) -> Callable[[Session, ParsedTable, TableCounts, OnRegistered], None]:
    def write(session: Session, table: ParsedTable, counts: TableCounts, on_registered: OnRegistered) -> None:
        for record in table.records():
            write_record(session, record, counts, on_registered)

    return write
