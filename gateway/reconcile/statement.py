"""The insurance center's detail statement (national 3202): reading it strictly, and writing our own day in
exactly its format (`gateway ledger export --format statement`)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from gateway.money import AmountError, format_fen, parse_signed_yuan_to_fen

COLUMNS = ("setl_id", "medins_setl_id", "fixmedins_code", "psn_no", "setl_time", "medfee_sumamt", "fund_pay_sumamt",
           "hifp_pay", "acct_pay_current", "acct_pay_prior", "psn_cash_pay", "refd_setl_flag")
AMOUNTS = ("medfee_sumamt", "fund_pay_sumamt", "hifp_pay", "acct_pay_current", "acct_pay_prior", "psn_cash_pay")
MAX_STATEMENT_BYTES = 2 * 1024 * 1024 * 1024


class StatementError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the statement")
        self.problems = problems


@dataclass(frozen=True)
class StatementRow:
    line: int
    setl_id: str
    medins_setl_id: str
    fixmedins_code: str
    psn_no: str
    setl_time: datetime
    amounts: dict[str, int]   # fen, by national column name
    refunded: bool            # refd_setl_flag = 1: a revoke or reversal


def _time(text: str) -> datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y%m%d%H%M%S"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"setl_time {text!r} is not a date and time (YYYY-MM-DD HH:MM:SS)") from exc


def read_statement(stream: IO[str], source: str = "statement") -> list[StatementRow]:
    """Every row, or StatementError listing every bad line (nothing is used from a bad file)."""
    text = stream.read()
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise StatementError([f"{source} line 1: missing column(s) {', '.join(missing)}; "
                              f"expected {', '.join(COLUMNS)}"])
    rows: list[StatementRow] = []
    problems: list[str] = []
    for raw in reader:
        line = reader.line_num
        cells = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(cells.values()):
            continue
        if None in raw:
            problems.append(f"{source} line {line}: more cells than columns")
            continue
        try:
            rows.append(_row(line, cells))
        except (ValueError, AmountError) as exc:
            problems.append(f"{source} line {line}: {exc}")
    if problems:
        raise StatementError(problems)
    return rows


def _row(line: int, cells: dict[str, str]) -> StatementRow:
    for column in ("setl_id", "fixmedins_code", "setl_time"):
        if not cells[column]:
            raise ValueError(f"{column} is empty")
    amounts = {}
    for column in AMOUNTS:
        try:
            amounts[column] = parse_signed_yuan_to_fen(cells[column])
        except AmountError as exc:
            raise ValueError(f"{column}: {exc}") from exc
    flag = cells["refd_setl_flag"]
    if flag not in ("0", "1"):
        raise ValueError(f"refd_setl_flag must be 0 or 1 (got {flag!r})")
    return StatementRow(line, cells["setl_id"], cells["medins_setl_id"], cells["fixmedins_code"], cells["psn_no"],
                        _time(cells["setl_time"]), amounts, flag == "1")


def write_statement(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """Rows of gateway.ledger.export.export_rows, in the statement's format."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for row in rows:
        writer.writerow([
            row["settlement_id"], row["message_id"], row["institution_code"], row.get("social_security_number", ""),
            row["recorded_at_beijing"], format_fen(row["total_fen"]), format_fen(row["pooled_fund_fen"]),
            format_fen(row["pooled_fund_fen"]), format_fen(row["current_year_fen"]), format_fen(row["prior_years_fen"]),
            format_fen(row["cash_fen"]), "0" if row["kind"] == "settlement" else "1",
        ])
        count += 1
    return count
