"""A reconciliation's files: totals.csv, differences.csv and summary.html (one page, no outside resources)."""

from __future__ import annotations

import csv
import html
from dataclasses import asdict
from pathlib import Path

from gateway.finance.reconcile import Reconciliation
from gateway.money import format_fen

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
    e = html.escape
    verdict = ("对账一致 · Everything matches" if result.matches else
               f"发现 {len(result.differences)} 处差异 · {len(result.differences)} difference(s) found")
    counts: dict[str, int] = {}
    for difference in result.differences:
        counts[difference.kind] = counts.get(difference.kind, 0) + 1
    parts = [
        "<!doctype html><html lang='zh-CN'><head><meta charset='utf-8'>",
        f"<title>对账 Reconciliation {e(result.day.isoformat())}</title>",
        "<style>body{font-family:'Microsoft YaHei','PingFang SC','Noto Sans CJK SC',sans-serif;margin:2em;"
        "color:#222}table{border-collapse:collapse;margin:1em 0}"
        "th,td{border:1px solid #bbb;padding:.3em .6em;text-align:right}th{background:#eee}"
        "td.l,th.l{text-align:left}.ok{color:#176b2c}.bad{color:#b00020}.verdict{font-size:1.4em;font-weight:bold}"
        "</style></head><body>",
        f"<h1>对账汇总 · Reconciliation {e(result.day.isoformat())}"
        f"{' · ' + e(result.institution) if result.institution else ''}</h1>",
        f"<p class='verdict {'ok' if result.matches else 'bad'}'>{e(verdict)}</p>",
        f"<p>网关账务 ledger: {result.ledger_rows} 笔 rows · 对账单 statement: {result.statement_rows} 笔 rows"
        f"{' · 本日已日结 day closed' if result.closed else ''}</p>",
    ]
    if counts:
        parts.append("<h2>差异分类 · Differences by kind</h2><table><tr><th class='l'>kind</th><th>count</th></tr>")
        for kind, count in sorted(counts.items()):
            zh, en = KIND_TEXT.get(kind, (kind, kind))
            parts.append(f"<tr><td class='l'>{e(zh)} · {e(en)}</td><td>{count}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>机构资金汇总 · Totals by institution and fund (yuan)</h2><table><tr><th class='l'>institution"
                 "</th><th class='l'>fund</th><th>ledger count</th><th>statement count</th><th>ledger</th>"
                 "<th>statement</th><th>difference</th><th class='l'>balanced</th></tr>")
    for row in result.totals:
        mark = "<span class='ok'>yes</span>" if row.balanced else "<span class='bad'>NO</span>"
        parts.append(f"<tr><td class='l'>{e(row.institution)}</td><td class='l'>{e(row.fund)}</td>"
                     f"<td>{row.ledger_count}</td><td>{row.statement_count}</td><td>{format_fen(row.ledger_fen)}</td>"
                     f"<td>{format_fen(row.statement_fen)}</td><td>{format_fen(row.statement_fen - row.ledger_fen)}"
                     f"</td><td class='l'>{mark}</td></tr>")
    parts.append("</table>")
    if result.late_undoings:
        parts.append("<h2>跨日撤销/冲正 · Revokes and reversals of earlier days</h2><table><tr><th class='l'>id</th>"
                     "<th class='l'>kind</th><th class='l'>original settlement</th><th class='l'>original day</th>"
                     "<th class='l'>day closed</th><th>yuan</th></tr>")
        for late in result.late_undoings:
            parts.append(f"<tr><td class='l'>{e(late['settlement_id'])}</td><td class='l'>{e(late['kind'])}</td>"
                         f"<td class='l'>{e(late['original_settlement_id'])}</td>"
                         f"<td class='l'>{e(late['original_date'])}</td>"
                         f"<td class='l'>{'yes' if late['original_day_closed'] else 'no'}</td>"
                         f"<td>{e(late['total_yuan'])}</td></tr>")
        parts.append("</table>")
    if result.differences:
        parts.append("<h2>差异明细 · Differences</h2><table><tr><th class='l'>kind</th><th class='l'>setl_id</th>"
                     "<th class='l'>institution</th><th class='l'>field</th><th>ledger</th><th>statement</th>"
                     "<th>line</th><th class='l'>note</th></tr>")
        for d in result.differences[:MAX_HTML_DIFFERENCES]:
            zh, en = KIND_TEXT.get(d.kind, (d.kind, d.kind))
            parts.append(f"<tr><td class='l'>{e(zh)}<br><small>{e(en)}</small></td><td class='l'>{e(d.setl_id)}</td>"
                         f"<td class='l'>{e(d.institution)}</td><td class='l'>{e(d.field)}</td>"
                         f"<td>{e(d.ledger_value)}</td><td>{e(d.statement_value)}</td>"
                         f"<td>{d.statement_line if d.statement_line is not None else ''}</td>"
                         f"<td class='l'>{e(d.note)}</td></tr>")
        parts.append("</table>")
        if len(result.differences) > MAX_HTML_DIFFERENCES:
            parts.append(f"<p>… {len(result.differences) - MAX_HTML_DIFFERENCES} more in differences.csv</p>")
    parts.append(f"<p><small>{e(command)}</small></p></body></html>")
    return "\n".join(parts)
