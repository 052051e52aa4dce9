"""A reconciliation's files: totals.csv, differences.csv and summary.html (one page, no outside resources, from
the template templates/summary.html)."""

from __future__ import annotations

import csv
import functools
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import jinja2

from gateway.finance.reconcile import Reconciliation, TotalsRow
from gateway.money import format_fen
from gateway.settlement.calendar import BEIJING

MAX_HTML_DIFFERENCES = 2_000
KIND_TEXT = {
    "in_ledger_only": ("在网关账务中，但对账单中没有", "in the ledger, missing from the statement"),
    "in_statement_only": ("在对账单中，但网关账务中没有", "in the statement, not in the ledger"),
    "amount_differs": ("金额不一致", "amount differs"),
    "status_differs": ("状态不一致（结算/退费）", "status differs (settled / refunded)"),
    "duplicated_id": ("对账单中结算编号重复", "settlement id listed twice in the statement"),
    "field_differs": ("其他字段不一致", "another field differs"),
}


def write_report(result: Reconciliation, out: Path, command: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "totals.csv").open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["business_date", "institution", "fund", "ledger_count", "statement_count", "ledger_yuan",
                         "statement_yuan", "difference_yuan", "balanced"])
        for row in result.totals:
            writer.writerow([result.day.isoformat(), row.institution, row.fund, row.ledger_count, row.statement_count,
                             format_fen(row.ledger_fen), format_fen(row.statement_fen),
                             format_fen(row.statement_fen - row.ledger_fen), "yes" if row.balanced else "no"])
    with (out / "differences.csv").open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["kind", "setl_id", "institution", "field", "ledger_value", "statement_value",
                         "statement_line", "note"])
        for difference in result.differences:
            cells = asdict(difference)
            writer.writerow([cells[k] if cells[k] is not None else "" for k in
                             ("kind", "setl_id", "institution", "field", "ledger_value", "statement_value",
                              "statement_line", "note")])
    (out / "summary.html").write_text(render_html(result, command), encoding="utf-8")


def render_html(result: Reconciliation, command: str = "") -> str:
    counts: dict[str, int] = {}
    for difference in result.differences:
        counts[difference.kind] = counts.get(difference.kind, 0) + 1
    return _template().render(result=result, command=command, counts=sorted(counts.items()),
                              max_differences=MAX_HTML_DIFFERENCES)


def _kind_text(kind: str) -> tuple[str, str]:
    return KIND_TEXT.get(kind, (kind, kind))


def _why_unbalanced(row: TotalsRow) -> str:
    """What differs in a totals row that is not balanced: a difference of 0.00 may still be a count that differs."""
    counts = f"ledger {row.ledger_count}, statement {row.statement_count}"
    if row.count_differs and row.amount_differs:
        return f"count ({counts}) and amount differ · 笔数、金额不一致"
    if row.count_differs:
        return f"count differs ({counts}) · 笔数不一致"
    return "amount differs · 金额不一致"


def _beijing(moment: datetime) -> str:
    return f"{moment.astimezone(BEIJING):%Y-%m-%d %H:%M:%S} Beijing time"


@functools.cache
def _template() -> jinja2.Template:
    # StrictUndefined: a name the template misspells fails the tests instead of printing nothing.
    environment = jinja2.Environment(loader=jinja2.PackageLoader("gateway.finance", "templates"), autoescape=True,
                                     trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
                                     undefined=jinja2.StrictUndefined)
    environment.filters["yuan"] = format_fen
    environment.filters["beijing"] = _beijing
    environment.globals.update(kind_text=_kind_text, why_unbalanced=_why_unbalanced)
    return environment.get_template("summary.html")
