"""The files of a payout batch: the insurance center's amounts file, the payout file sent to the bank, and the
bank's return file. Each file is read strictly — every bad row reported by line, nothing written — and written
from the ledger's rows (gateway.finance.payouts)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO

from gateway.identity import CARD_NUMBER, is_valid_id_number, mask_id
from gateway.money import AmountError, format_fen, parse_yuan_to_fen
from gateway.registry.cells import RowError

MAX_NOTE = 200
AMOUNTS_COLUMNS = ("social_security_number", "amount")
AMOUNTS_OPTIONAL = ("note",)
RETURN_COLUMNS = ("line", "card_number", "amount", "status")
RETURN_OPTIONAL = ("reason",)
PAYOUT_FILE_COLUMNS = ("batch_id", "line", "card_number", "bank_account", "name", "amount", "ref")


class PayoutError(Exception):
    """The batch as a whole cannot run (bad batch id, closed day, batch of another kind...)."""


class PayoutRejected(PayoutError):
    """Rows of an input file are bad: nothing was written. Every bad row is listed with its line."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        super().__init__(f"{len(errors)} problem(s); nothing was written")
        self.errors = list(errors)


@dataclass(frozen=True)
class AmountRow:
    line: int
    social_security_number: str
    amount_fen: int
    note: str = ""


@dataclass(frozen=True)
class ReturnRow:
    line: int           # the payout file's line the bank answers
    card_number: str
    amount_fen: int
    status: str         # "paid" or "failed"
    reason: str = ""
    file_line: int = 0  # where in the return file, for messages


@dataclass(frozen=True)
class BankLine:
    """One line of a batch's payout file, as the ledger holds it."""

    batch_id: str
    line: int
    card_number: str
    name: str
    amount_fen: int
    ref: str
    reversed_by: str | None  # the compensating reversal, if the payout was taken back


def _rows(text: str, source: str, required: Sequence[str], optional: Sequence[str],
          errors: list[RowError]) -> Iterable[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""))  # a BOM: saved by Excel
    if not reader.fieldnames:
        errors.append(RowError(source, 0, "the file is empty; the first line must be a header"))
        return
    header = [name.strip() for name in reader.fieldnames]
    missing = [name for name in required if name not in header]
    unknown = [name for name in header if name not in required and name not in optional]
    if missing or unknown or len(set(header)) != len(header):
        errors.append(RowError(source, 1, f"header {header} must be {', '.join(required)}"
                                          + (f" [optional: {', '.join(optional)}]" if optional else "")))
        return
    reader.fieldnames = header
    for row in reader:
        if None in row:  # more cells than the header names: a shifted row must not be guessed at
            errors.append(RowError(source, reader.line_num, "more fields than the header"))
            continue
        yield reader.line_num, {name: (value or "").strip() for name, value in row.items()}


def _amount(text: str, column: str = "amount") -> int:
    if not text:
        raise ValueError(f"{column} is empty")
    try:
        return parse_yuan_to_fen(text)
    except AmountError as exc:
        raise ValueError(f"{column}: {exc}") from None


def read_amounts(text: str, source: str = "amounts") -> list[AmountRow]:
    """The insurance center's amounts file, every row checked; raises PayoutRejected listing each bad row."""
    errors: list[RowError] = []
    rows: list[AmountRow] = []
    seen: dict[str, int] = {}
    for line, row in _rows(text, source, AMOUNTS_COLUMNS, AMOUNTS_OPTIONAL, errors):
        ssn = row["social_security_number"].upper()
        try:
            if not ssn:
                raise ValueError("social_security_number is empty")
            if not is_valid_id_number(ssn):
                raise ValueError(f"social_security_number {mask_id(ssn)} is not a valid ID number (check digit)")
            amount = _amount(row["amount"])
            if amount <= 0:
                raise ValueError(f"amount {row['amount']!r} must be more than zero")
            note = row.get("note", "")
            if len(note) > MAX_NOTE:
                raise ValueError(f"note is longer than {MAX_NOTE} characters")
            if ssn in seen:
                raise ValueError(f"{mask_id(ssn)} is already on line {seen[ssn]}: one row per person")
        except ValueError as exc:
            errors.append(RowError(source, line, str(exc)))
            continue
        seen[ssn] = line
        rows.append(AmountRow(line, ssn, amount, note))
    if not errors and not rows:
        errors.append(RowError(source, 0, "no rows: nothing to pay"))
    if errors:
        raise PayoutRejected(errors)
    return rows


def read_bank_return(text: str, source: str = "return") -> list[ReturnRow]:
    """The bank's return file (line, card_number, amount, status paid|failed, reason), every row checked."""
    errors: list[RowError] = []
    rows: list[ReturnRow] = []
    seen: dict[str, int] = {}
    for file_line, row in _rows(text, source, RETURN_COLUMNS, RETURN_OPTIONAL, errors):
        try:
            if not re.fullmatch(r"[0-9]{1,9}", row["line"]) or int(row["line"]) == 0:
                raise ValueError(f"line {row['line']!r} must be the payout file's line number (1, 2, ...)")
            card = row["card_number"].upper()
            if not CARD_NUMBER.fullmatch(card):
                raise ValueError(f"card_number {row['card_number']!r} must be 9 letters or digits")
            amount = _amount(row["amount"])
            status = row["status"].lower()
            if status not in ("paid", "failed"):
                raise ValueError(f"status {row['status']!r} must be paid or failed")
            if card in seen:
                raise ValueError(f"card {card} is already on line {seen[card]}")
        except ValueError as exc:
            errors.append(RowError(source, file_line, str(exc)))
            continue
        seen[card] = file_line
        rows.append(ReturnRow(int(row["line"]), card, amount, status, row.get("reason", ""), file_line))
    if errors:
        raise PayoutRejected(errors)
    return rows



def write_payout_file(lines: Sequence[BankLine], out: IO[str]) -> tuple[int, int]:
    """The bank's payout file; a payout taken back (failed at the bank and reversed) is not asked again,
    and the others keep their line numbers, so the bank's earlier answers still match. (lines, fen)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PAYOUT_FILE_COLUMNS)
    count = total = 0
    for line in lines:
        if line.reversed_by is not None:
            continue
        # The bank account is the card's financial account, which the bank keys by the card number.
        writer.writerow([line.batch_id, line.line, line.card_number, line.card_number, line.name,
                         format_fen(line.amount_fen), line.ref])
        count += 1
        total += line.amount_fen
    return count, total
