"""The insurance center's detail statement (national 3202): reading it strictly, and writing our own day in
exactly its format (`gateway ledger export --format statement`)."""

from __future__ import annotations

import contextlib
import csv
import gc
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import IO, Any

from sqlalchemy import Engine, select

from gateway.ledger.export import export_rows, of_the_day
from gateway.ledger.tables import TRANSACTIONS
from gateway.money import MAX_AMOUNT_FEN, AmountError, format_fen, parse_signed_yuan_to_fen
from gateway.registry.tables import PERSONS

COLUMNS = ("setl_id", "medins_setl_id", "fixmedins_code", "psn_no", "setl_time", "medfee_sumamt", "fund_pay_sumamt",
           "hifp_pay", "acct_pay_current", "acct_pay_prior", "psn_cash_pay", "refd_setl_flag")
AMOUNTS = ("medfee_sumamt", "fund_pay_sumamt", "hifp_pay", "acct_pay_current", "acct_pay_prior", "psn_cash_pay")
MAX_STATEMENT_BYTES = 2 * 1024 * 1024 * 1024


class StatementError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the statement")
        self.problems = problems


@dataclass(slots=True)
class StatementRow:
    line: int
    setl_id: str
    medins_setl_id: str
    fixmedins_code: str
    psn_no: str
    setl_time: datetime
    amounts: dict[str, int]   # fen, by national column name
    refunded: bool            # refd_setl_flag = 1: a revoke or reversal


def _fen(text: str) -> int:
    """Signed decimal yuan to fen. The shape statements have ("1234.56", "-0.05") is read by slicing, a
    million times a day; everything else, and anything beyond the limit, by gateway.money, which says why."""
    if len(text) >= 4 and text[-3] == ".":
        digits = text[:-3] + text[-2:]
        core = digits[1:] if digits[0] == "-" else digits
        if core.isascii() and core.isdigit() and 3 <= len(core) <= 18:
            fen = int(digits)
            if -MAX_AMOUNT_FEN <= fen <= MAX_AMOUNT_FEN:
                return fen
    return parse_signed_yuan_to_fen(text)  # the other shapes, or raises with the reason


def _time(text: str) -> datetime:
    # The usual "YYYY-MM-DD HH:MM:SS" is read by slicing: strptime would cost more than the rest of the row.
    if len(text) == 19 and text[4] == "-" and text[7] == "-" and text[10] in " T" and text[13] == ":" \
            and text[16] == ":":
        try:
            return datetime(int(text[0:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]),
                            int(text[17:19]))
        except ValueError as exc:
            raise ValueError(f"setl_time {text!r} is not a date and time: {exc}") from exc
    for fmt in ("%Y%m%d%H%M%S",):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"setl_time {text!r} is not a date and time (YYYY-MM-DD HH:MM:SS)") from exc


@contextlib.contextmanager
def garbage_collector_paused() -> Iterator[None]:
    """A day is a million rows of small objects with no cycles among them: the cyclic garbage collector would
    walk them all again and again while they are built and compared. Nested uses leave it to the outermost."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def read_statement(stream: IO[str], source: str = "statement") -> list[StatementRow]:
    """Every row, or StatementError listing every bad line (nothing is used from a bad file)."""
    with garbage_collector_paused():
        return _read_statement(stream, source)


def _read_statement(stream: IO[str], source: str) -> list[StatementRow]:
    reader = csv.reader(stream)  # straight from the file: a day's statement need not sit in memory twice
    header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise StatementError([f"{source} line 1: missing column(s) {', '.join(missing)}; "
                              f"expected {', '.join(COLUMNS)}"])
    positions = [header.index(c) for c in COLUMNS]
    width = len(header)
    rows: list[StatementRow] = []
    problems: list[str] = []
    for raw in reader:
        line = reader.line_num
        if not raw or (len(raw) == 1 and not raw[0].strip()):
            continue  # a blank line
        if len(raw) != width:
            problems.append(f"{source} line {line}: {len(raw)} cells, the header has {width}")
            continue
        try:
            rows.append(_row(line, [raw[position].strip() for position in positions]))
        except (ValueError, AmountError) as exc:
            problems.append(f"{source} line {line}: {exc}")
    if problems:
        raise StatementError(problems)
    return rows


def _row(line: int, cells: list[str]) -> StatementRow:
    """`cells` in the order of COLUMNS."""
    setl_id, medins_setl_id, code, psn_no, setl_time = cells[:5]
    if not (setl_id and code and setl_time):
        empty = next(name for name, value in (("setl_id", setl_id), ("fixmedins_code", code),
                                              ("setl_time", setl_time)) if not value)
        raise ValueError(f"{empty} is empty")
    amounts = {}
    for column, text in zip(AMOUNTS, cells[5:11], strict=True):
        try:
            amounts[column] = _fen(text)
        except AmountError as exc:
            raise ValueError(f"{column}: {exc}") from exc
    flag = cells[11]
    if flag not in ("0", "1"):
        raise ValueError(f"refd_setl_flag must be 0 or 1 (got {flag!r})")
    return StatementRow(line, setl_id, medins_setl_id, code, psn_no, _time(setl_time), amounts, flag == "1")


def write_statement(rows: Iterable[dict[str, Any]], id_numbers: Mapping[int, str], out: IO[str]) -> int:
    """Rows of gateway.ledger.export.export_rows, in the statement's format; `id_numbers` gives each holder's ID
    number (`psn_no`) by the registry's person id, which is all the ledger knows of the holder."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in rows:
        writer.writerow([
            row["settlement_id"], row["message_id"], row["institution_code"], id_numbers.get(row["person_id"], ""),
            row["recorded_at_beijing"], format_fen(row["total_fen"]), format_fen(row["pooled_fund_fen"]),
            format_fen(row["pooled_fund_fen"]), format_fen(row["current_year_fen"]), format_fen(row["prior_years_fen"]),
            format_fen(row["cash_fen"]), "0" if row["kind"] == "settlement" else "1",
        ])
        count += 1
    return count


def export_statement(engine: Engine, day: date, out: IO[str]) -> int:
    """The ledger's rows of `day` in the center's statement format: what `gateway ledger export --format statement`
    writes, and what a day reconciles against when the center's own file is not at hand. The format wants the
    holder's full ID number (`psn_no`, the center's key of the person): joined from the registry now, for the day's
    holders only; the ledger holds none."""
    return write_statement(export_rows(engine, day), id_numbers_of_the_day(engine, day), out)


def id_numbers_of_the_day(engine: Engine, day: date) -> dict[int, str]:
    """The ID numbers of the holders of the day's settlements, revokes and reversals, by person id."""
    holders = select(TRANSACTIONS.c.person_id).where(*of_the_day(day))
    with engine.connect() as conn:
        return {person: number for person, number in conn.execute(
            select(PERSONS.c.person_id, PERSONS.c.social_security_number).where(PERSONS.c.person_id.in_(holders)))}
