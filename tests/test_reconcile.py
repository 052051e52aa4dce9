"""Finance: a day of the ledger against the insurance center's statement; day close; late revokes."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from gateway.cli.main import main
from gateway.db.engine import make_engine, redact_url
from gateway.db.migrate import upgrade
from gateway.demo.registry import write_demo_registry
from gateway.finance.day_close import DayCloseRefused, close_day
from gateway.finance.reconcile import (
    TOTAL_FUNDS,
    Reconciliation,
    StatementOfAnotherDay,
    UnknownInstitution,
    reconcile,
    record_reconciliation,
)
from gateway.finance.report import render_html
from gateway.finance.statement import StatementError, export_statement, read_statement
from gateway.identity import mask_id
from gateway.ledger.tables import CLOSED_DAYS
from gateway.ledger.writer import InlineLedgerWriter
from gateway.money import format_fen, parse_signed_yuan_to_fen
from gateway.protocol.messages import pb
from gateway.settlement.calendar import BEIJING
from gateway.settlement.policy import load_builtin_policies
from tests.ledger_support import NOW, TODAY, reverse, revoke, settle, write

DAY = TODAY.isoformat()


@pytest.fixture
def day(db_url: str) -> Iterator[tuple[Engine, str]]:
    """A business day: eight settlements at two institutions, one revoked, one reversed."""
    engine = make_engine(db_url)
    upgrade(engine)
    write_demo_registry(engine, persons=40)
    writer = InlineLedgerWriter(engine, load_builtin_policies())
    intents = [settle(engine, "N00000001", f"h-{i}", 12_345 + i * 1_000) for i in range(5)]
    intents += [settle(engine, "N00000201", f"p-{i}", 2_000 + i, medical_type=41, terminal="P33020300004-01",
                       institution="P33020300004") for i in range(3)]
    responses = write(writer, intents)
    write(writer, [revoke(responses[0].settle.settlement_id, "rk-1"), reverse("h-1", "rv-1")])
    yield engine, db_url
    engine.dispose()


def statement_of(engine: Engine, on: date = TODAY) -> str:
    out = io.StringIO()
    export_statement(engine, on, out)
    return out.getvalue()


def rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def unrows(table: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(table)
    return out.getvalue()


def run(engine: Engine, text: str) -> list[tuple[str, str]]:
    result = reconcile(engine, TODAY, read_statement(io.StringIO(text)))
    return [(d.kind, d.field) for d in result.differences]


def test_a_day_reconciles_against_its_own_export(day: tuple[Engine, str]) -> None:
    engine, _ = day
    text = statement_of(engine)
    assert len(rows(text)) == 1 + 8 + 2
    result = reconcile(engine, TODAY, read_statement(io.StringIO(text)))
    assert result.matches and result.differences == []
    assert all(t.balanced for t in result.totals)
    assert {t.institution for t in result.totals} == {"H33020300001", "P33020300004"}


def test_another_row_order_and_a_bom_still_match(day: tuple[Engine, str]) -> None:
    engine, _ = day
    table = rows(statement_of(engine))
    shuffled = [table[0], *reversed(table[1:])]
    assert run(engine, "\ufeff" + unrows(shuffled)) == []


def tamper(text: str, line: int, column: str, value: str) -> str:
    table = rows(text)
    table[line - 1][table[0].index(column)] = value
    return unrows(table)


def test_each_kind_of_difference_alone(day: tuple[Engine, str]) -> None:
    engine, _ = day
    text = statement_of(engine)
    table = rows(text)
    assert run(engine, unrows(table[:3] + table[4:])) == [("in_ledger_only", "")]
    forged = [*table[2]]
    forged[0] = "S20261124FORGED000000"
    assert run(engine, unrows([*table, forged])) == [("in_statement_only", "")]
    changed = tamper(tamper(text, 3, "medfee_sumamt", "999.99"), 3, "psn_cash_pay", "899.99")
    assert run(engine, changed) == [("amount_differs", "medfee_sumamt (total)"),
                                    ("amount_differs", "psn_cash_pay (cash)")]
    assert run(engine, tamper(text, 3, "refd_setl_flag", "1")) == [("status_differs", "refd_setl_flag")]
    assert run(engine, unrows([*table, table[4]])) == [("duplicated_id", "")]
    assert run(engine, tamper(text, 3, "fixmedins_code", "H33021200002")) == [("field_differs", "fixmedins_code")]


def test_all_differences_together(day: tuple[Engine, str]) -> None:
    engine, _ = day
    table = rows(statement_of(engine))
    table[2][table[0].index("hifp_pay")] = "1.00"
    table[3][table[0].index("refd_setl_flag")] = "1"
    forged = [*table[5]]
    forged[0] = "S20261124FORGED000000"
    text = unrows([*table[:5], *table[6:], forged, table[7]])
    kinds = sorted(kind for kind, _ in run(engine, text))
    assert kinds == ["amount_differs", "duplicated_id", "in_ledger_only", "in_statement_only", "status_differs"]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [("medfee_sumamt", "12.345", "medfee_sumamt"), ("hifp_pay", "abc", "hifp_pay"), ("acct_pay_prior", "1e3", "1e3"),
     ("setl_time", "2026-02-30 10:00:00", "setl_time"), ("refd_setl_flag", "2", "refd_setl_flag"),
     ("setl_id", "", "setl_id is empty"), ("medfee_sumamt", "9999999999999999.99", "more than"),
     ("hifp_pay", "-9999999999999999.99", "more than")],
)
def test_a_malformed_statement_is_reported_by_line(day: tuple[Engine, str], column: str, value: str,
                                                    message: str) -> None:
    engine, _ = day
    with pytest.raises(StatementError) as refused:
        read_statement(io.StringIO(tamper(statement_of(engine), 4, column, value)))
    assert any("line 4" in p and message in p for p in refused.value.problems), refused.value.problems


def test_missing_columns_are_named(day: tuple[Engine, str]) -> None:
    engine, _ = day
    text = statement_of(engine).replace("psn_cash_pay", "cash", 1)
    with pytest.raises(StatementError) as refused:
        read_statement(io.StringIO(text))
    assert "missing column(s) psn_cash_pay" in refused.value.problems[0]


def test_the_reconcile_command_writes_the_three_files(day: tuple[Engine, str], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    engine, url = day
    good = tmp_path / "statement.csv"
    good.write_text(statement_of(engine), encoding="utf-8")
    assert main(["reconcile", "--db", url, "--date", DAY, "--statement", str(good), "--out", str(tmp_path / "a")]) == 0
    page = (tmp_path / "a/summary.html").read_text(encoding="utf-8")
    assert "Everything matches" in page and "<script" not in page and "http" not in page
    bad = tmp_path / "tampered.csv"
    bad.write_text(tamper(statement_of(engine), 2, "hifp_pay", "7.00"), encoding="utf-8")
    assert main(["reconcile", "--db", url, "--date", DAY, "--statement", str(bad), "--out", str(tmp_path / "b")]) == 1
    differences = (tmp_path / "b/differences.csv").read_text(encoding="utf-8-sig")
    assert "amount_differs" in differences and "hifp_pay (pooled fund)" in differences
    assert "difference(s) found" in (tmp_path / "b/summary.html").read_text(encoding="utf-8")
    totals = (tmp_path / "b/totals.csv").read_text(encoding="utf-8-sig")
    assert ",no\n" in totals
    malformed = tmp_path / "malformed.csv"
    malformed.write_text(tamper(statement_of(engine), 2, "medfee_sumamt", "x"), encoding="utf-8")
    assert main(["reconcile", "--db", url, "--date", DAY, "--statement", str(malformed), "--out",
                 str(tmp_path / "c")]) == 2
    assert "line 2" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_closed_day_with_a_late_revoke(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    write_demo_registry(engine, persons=40)
    writer = InlineLedgerWriter(engine, load_builtin_policies())
    yesterday = NOW - timedelta(days=1)
    settled = write(writer, [settle(engine, "N00000001", "old-1", 50_000, at=yesterday)])[0]
    before = statement_of(engine, TODAY - timedelta(days=1))
    record_reconciliation(engine, reconcile(engine, TODAY - timedelta(days=1), read_statement(io.StringIO(before))))
    figures = close_day(engine, TODAY - timedelta(days=1), today=TODAY, by="test")
    assert figures.transactions == 1 and figures.total_fen == 50_000
    with pytest.raises(DayCloseRefused, match="closed already"):
        close_day(engine, TODAY - timedelta(days=1), today=TODAY)
    with pytest.raises(DayCloseRefused, match="not over yet"):
        close_day(engine, TODAY, today=TODAY)
    revoked = write(writer, [revoke(settled.settle.settlement_id, "rk-late", at=NOW)])[0]
    assert revoked.status == pb.STATUS_CODE_OK
    # The closed day is unchanged: its statement still matches, nothing was booked on it.
    closed = reconcile(engine, TODAY - timedelta(days=1), read_statement(io.StringIO(before)))
    assert closed.matches and closed.closed
    assert statement_of(engine, TODAY - timedelta(days=1)) == before
    today = reconcile(engine, TODAY, read_statement(io.StringIO(statement_of(engine))))
    assert today.matches
    [late] = today.late_undoings
    assert late["original_settlement_id"] == settled.settle.settlement_id and late["original_day_closed"]
    engine.dispose()


def test_the_page_escapes_what_the_statement_says(day: tuple[Engine, str]) -> None:
    engine, _ = day
    hostile = "<script>alert(1)</script>"
    result = reconcile(engine, TODAY, read_statement(io.StringIO(tamper(statement_of(engine), 3, "setl_id", hostile))))
    page = render_html(result, f"gateway reconcile --statement '{hostile}'")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [("psn_no", "11010519491231002X", [("field_differs", "psn_no")]),
     ("psn_no", "", [("field_differs", "psn_no")]),
     ("setl_time", "2026-11-23 10:00:00", [("field_differs", "setl_time")]),   # another day, the same hour
     ("setl_time", "2026-11-24 13:00:00", [("field_differs", "setl_time")]),   # the same day, three hours on
     ("setl_time", "2026-11-24 10:00:59", []),     # within SETTLEMENT_TIME_TOLERANCE_S of the ledger's time
     ("setl_time", "2026-11-24 10:01:01", [("field_differs", "setl_time")])],
    ids=["another person", "no person", "another day", "another hour", "within the tolerance", "past it"],
)
def test_the_person_and_the_settlement_time_are_compared(day: tuple[Engine, str], column: str, value: str,
                                                         expected: list[tuple[str, str]]) -> None:
    engine, _ = day
    assert run(engine, tamper(statement_of(engine), 3, column, value)) == expected


def test_a_person_who_differs_is_shown_masked(day: tuple[Engine, str]) -> None:
    engine, _ = day
    text = statement_of(engine)
    ours = rows(text)[2][rows(text)[0].index("psn_no")]
    result = reconcile(engine, TODAY, read_statement(io.StringIO(tamper(text, 3, "psn_no", "11010519491231002X"))))
    [difference] = result.differences
    assert (difference.ledger_value, difference.statement_value) == (mask_id(ours), mask_id("11010519491231002X"))
    assert ours not in repr(difference)


@pytest.fixture
def host_in_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's zone is not the business day's: SQLite gives times back without a zone."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_statement_times_are_beijing_times_whatever_the_host_zone(day: tuple[Engine, str],
                                                                  host_in_new_york: None) -> None:
    engine, _ = day
    text = statement_of(engine)
    assert {row[rows(text)[0].index("setl_time")] for row in rows(text)[1:]} == {"2026-11-24 10:00:00"}  # NOW
    assert run(engine, text) == []


def dated(text: str, when: str) -> str:
    """The statement with every row's setl_time moved to `when`."""
    table = rows(text)
    column = table[0].index("setl_time")
    for row in table[1:]:
        row[column] = when
    return unrows(table)


@pytest.mark.parametrize(
    ("times", "message"),
    [(["2026-11-23 10:00:00"], "the statement's rows are dated 2026-11-23, not 2026-11-24"),
     (["2026-11-22 09:00:00", "2026-11-23 10:00:00"],
      "the statement's rows are dated 2026-11-22 to 2026-11-23, not 2026-11-24")],
    ids=["another day", "other days"],
)
def test_a_statement_of_another_day_is_refused(day: tuple[Engine, str], tmp_path: Path, times: list[str],
                                               message: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine, url = day
    table = rows(dated(statement_of(engine), times[-1]))
    table[1][table[0].index("setl_time")] = times[0]
    with pytest.raises(StatementOfAnotherDay, match=message):
        reconcile(engine, TODAY, read_statement(io.StringIO(unrows(table))))
    path = tmp_path / "statement.csv"
    path.write_text(unrows(table), encoding="utf-8")
    assert main(["reconcile", "--db", url, "--date", DAY, "--statement", str(path), "--out", str(tmp_path / "a")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_a_statement_with_one_row_of_another_day_is_reconciled(day: tuple[Engine, str]) -> None:
    engine, _ = day
    assert run(engine, tamper(statement_of(engine), 2, "setl_time", "2026-11-25 10:00:00")) == [
        ("field_differs", "setl_time")]


def test_an_institution_the_registry_does_not_know_is_refused(day: tuple[Engine, str], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    engine, url = day
    path = tmp_path / "statement.csv"
    path.write_text(statement_of(engine), encoding="utf-8")
    with pytest.raises(UnknownInstitution, match="H99999999999 is not a registered institution"):
        reconcile(engine, TODAY, read_statement(io.StringIO(statement_of(engine))), "H99999999999")
    command = ["reconcile", "--db", url, "--date", DAY, "--statement", str(path)]
    assert main([*command, "--out", str(tmp_path / "a"), "--institution", "H99999999999"]) == 1
    assert "H99999999999 is not a registered institution" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main([*command, "--out", str(tmp_path / "b"), "--institution", "P33020300004"]) == 0
    assert "0 ledger rows" not in capsys.readouterr().out
    [only] = {t.institution for t in reconcile(engine, TODAY, read_statement(io.StringIO(statement_of(engine))),
                                               "P33020300004").totals}
    assert only == "P33020300004"


class _Cells(HTMLParser):
    """The text of every table row of a page, cell by cell, and every paragraph."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.paragraphs: list[str] = []
        self._text: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th", "p"):
            self._text = []
        elif tag == "br" and self._text is not None:
            self._text.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._text is not None:
            self.rows[-1].append("".join(self._text).strip())
            self._text = None
        elif tag == "p" and self._text is not None:
            self.paragraphs.append("".join(self._text).strip())
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


def page_of(result: Reconciliation, command: str = "") -> _Cells:
    parsed = _Cells()
    parsed.feed(render_html(result, command))
    return parsed


def totals_rows(page: _Cells) -> list[list[str]]:
    header = next(n for n, row in enumerate(page.rows) if row[:2] == ["institution", "fund"])
    return [row for row in page.rows[header + 1:] if len(row) == len(page.rows[header])]


def test_a_total_whose_difference_is_nil_says_that_its_count_differs(day: tuple[Engine, str]) -> None:
    engine, _ = day
    table = rows(statement_of(engine))
    settled = next(row for row in table[1:] if row[-1] == "0" and row[0].startswith("S"))
    revoked_column = table[0].index("medfee_sumamt")
    # The settlement and its revoke both missing: every fund's difference is 0.00, the counts are not.
    revoke_row = next(row for row in table[1:] if row[revoked_column] == "-" + settled[revoked_column])
    result = reconcile(engine, TODAY, read_statement(io.StringIO(unrows(
        [row for row in table if row not in (settled, revoke_row)]))))
    hospital = [row for row in totals_rows(page_of(result)) if row[0].startswith("H33020300001")]
    assert len(hospital) == 5 and all(row[6] == "0.00" for row in hospital)
    assert all(row[7] == "NO: count differs (ledger 7, statement 5) · 笔数不一致" for row in hospital), hospital
    amount = reconcile(engine, TODAY, read_statement(io.StringIO(tamper(statement_of(engine), 2, "psn_cash_pay",
                                                                          "7.00"))))
    cash = next(row for row in totals_rows(page_of(amount)) if row[1] == "cash" and row[6] != "0.00")
    assert cash[7] == "NO: amount differs · 金额不一致"


def test_the_page_names_the_institutions_and_gives_grand_totals(day: tuple[Engine, str]) -> None:
    engine, _ = day
    result = reconcile(engine, TODAY, read_statement(io.StringIO(statement_of(engine))))
    by_fund = {(row[0], row[1]): row for row in totals_rows(page_of(result))}
    assert by_fund["H33020300001 宁波演示第一医院", "total"][7] == "yes"
    assert ("P33020300004 海曙演示大药房", "cash") in by_fund
    ledger = rows(statement_of(engine))
    column = ledger[0].index("medfee_sumamt")
    day_total_fen = sum(parse_signed_yuan_to_fen(row[column]) for row in ledger[1:])
    grand = by_fund["合计 · all institutions", "total"]
    assert grand[2:8] == ["10", "10", format_fen(day_total_fen), format_fen(day_total_fen), "0.00", "yes"]
    assert [fund for institution, fund in by_fund if institution.startswith("合计")] == list(TOTAL_FUNDS)


def test_the_page_says_when_and_from_which_files_it_was_made(day: tuple[Engine, str], tmp_path: Path) -> None:
    engine, url = day
    statement = tmp_path / "statement-2026-11-24.csv"
    statement.write_text(statement_of(engine), encoding="utf-8")
    assert main(["reconcile", "--db", url, "--date", DAY, "--statement", str(statement), "--out",
                 str(tmp_path / "a")]) == 0
    parsed = _Cells()
    parsed.feed((tmp_path / "a/summary.html").read_text(encoding="utf-8"))
    made = {row[0]: row[1] for row in parsed.rows if len(row) == 2}
    assert made["对账单 statement"] == (f"{statement} ({statement.stat().st_size} bytes, SHA-256 "
                                        f"{hashlib.sha256(statement.read_bytes()).hexdigest()})")
    assert made["网关账务 ledger"] == redact_url(url)
    made_at = datetime.strptime(made["生成时间 made at"], "%Y-%m-%d %H:%M:%S Beijing time").replace(tzinfo=BEIJING)
    assert abs(made_at - datetime.now(BEIJING)) < timedelta(minutes=5)



def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """The exit status and what the command said (out and err)."""
    status = main(list(argv))
    said = capsys.readouterr()
    return status, said.out + said.err


def test_a_day_closes_only_on_a_whole_day_reconciliation_that_matched(day: tuple[Engine, str], tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    engine, url = day
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(statement_of(engine), encoding="utf-8")
    bad.write_text(tamper(statement_of(engine), 2, "hifp_pay", "7.00"), encoding="utf-8")
    reconciling = ["reconcile", "--db", url, "--date", DAY, "--out", str(tmp_path / "out"), "--statement"]
    # (the reconciliation run first and its exit status, then what closing the day answers)
    steps = [
        ([], None, 1, "2026-11-24 has not been reconciled: run `gateway reconcile --date 2026-11-24` for the whole "
                      "day"),
        ([str(bad)], 1, 1, "2026-11-24's last reconciliation"),
        ([str(good), "--institution", "H33020300001"], 0, 1, "found 1 difference(s): reconcile it again"),
        ([str(good)], 0, 0, "closed 2026-11-24: 10 settlements, revokes and reversals, 520.38 yuan in all; "
                            "on the reconciliation of"),
        ([], None, 1, "2026-11-24 is closed already"),
    ]
    for reconciliation, reconciled, closed, said in steps:
        if reconciliation:
            assert cli(capsys, *reconciling, *reconciliation)[0] == reconciled
        status, text = cli(capsys, "day", "close", "--db", url, "--date", DAY)
        assert (status, said in text) == (closed, True), text


def test_a_day_that_changed_since_it_matched_must_be_reconciled_again(db_url: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    write_demo_registry(engine, persons=40)
    writer = InlineLedgerWriter(engine, load_builtin_policies())
    write(writer, [settle(engine, "N00000001", "early", 10_000)])
    statement = tmp_path / "statement.csv"
    statement.write_text(statement_of(engine), encoding="utf-8")
    reconciling = ["reconcile", "--db", db_url, "--date", DAY, "--statement", str(statement), "--out", str(tmp_path)]
    assert cli(capsys, *reconciling)[0] == 0
    write(writer, [settle(engine, "N00000001", "late", 20_000, at=NOW + timedelta(hours=8))])  # still the same day
    status, text = cli(capsys, "day", "close", "--db", db_url, "--date", DAY)
    assert status == 1 and "changed since its reconciliation" in text and "(1 rows, 100.00 yuan then; 2 rows, " \
        "300.00 yuan now)" in text, text
    statement.write_text(statement_of(engine), encoding="utf-8")
    assert cli(capsys, *reconciling)[0] == 0
    assert cli(capsys, "day", "close", "--db", db_url, "--date", DAY)[0] == 0
    engine.dispose()


@pytest.mark.parametrize(
    ("options", "status", "said"),
    [(["--force"], 2, "--force and --reason go together"),
     (["--reason", "late statement"], 2, "--force and --reason go together"),
     (["--force", "--reason", "  "], 1, "--reason must say why"),
     (["--force", "--reason", "x" * 501], 1, "at most 500"),
     (["--force", "--reason", "the center's statement is late; totals agreed by phone"], 0,
      "by force: the center's statement is late; totals agreed by phone")],
    ids=["force without a reason", "a reason without force", "a blank reason", "a reason too long", "forced"],
)
def test_a_day_closed_by_force_records_why(day: tuple[Engine, str], options: list[str], status: int, said: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    engine, url = day
    answered, text = cli(capsys, "day", "close", "--db", url, "--date", DAY, *options)
    assert (answered, said in text) == (status, True), text
    with engine.connect() as conn:
        recorded = conn.execute(select(CLOSED_DAYS.c.forced_reason, CLOSED_DAYS.c.reconciliation_id)).all()
    assert recorded == ([(said.removeprefix("by force: "), None)] if status == 0 else [])


def test_the_days_are_listed_with_their_settlements_reconciliation_and_close(
        db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    write_demo_registry(engine, persons=40)
    writer = InlineLedgerWriter(engine, load_builtin_policies())
    yesterday = TODAY - timedelta(days=1)
    write(writer, [settle(engine, "N00000001", "old-1", 50_000, at=NOW - timedelta(days=1))])
    responses = write(writer, [settle(engine, "N00000001", f"h-{i}", 12_345 + i * 1_000) for i in range(3)])
    write(writer, [revoke(responses[0].settle.settlement_id, "rk-1")])
    for on, text in ((yesterday, statement_of(engine, yesterday)),
                     (TODAY, tamper(statement_of(engine), 2, "hifp_pay", "7.00"))):
        path = tmp_path / f"{on}.csv"
        path.write_text(text, encoding="utf-8")
        cli(capsys, "reconcile", "--db", db_url, "--date", on.isoformat(), "--statement", str(path), "--out",
            str(tmp_path / on.isoformat()))
    assert cli(capsys, "day", "close", "--db", db_url, "--date", yesterday.isoformat())[0] == 0
    run = r"\(\d{4}-\d\d-\d\d \d\d:\d\d Beijing time by [^)]+\)"
    lines = {
        "header": r"day +settlements +revokes/reversals +net yuan +reconciliation +close",
        "2026-11-23": rf"2026-11-23 +1 +0 +500\.00 +matched {run} +closed {run}",
        "2026-11-24": rf"2026-11-24 +3 +1 +276\.90 +1 difference\(s\) {run} +open",
    }
    for options, expected in ((), ["header", "2026-11-23", "2026-11-24"]),\
                             (("--from", "2026-11-24"), ["header", "2026-11-24"]),\
                             (("--to", "2026-11-23"), ["header", "2026-11-23"]),\
                             (("--from", "2026-11-20", "--to", "2026-11-22"), []):
        status, text = cli(capsys, "day", "list", "--db", db_url, *options)
        assert status == 0
        if expected:
            assert len(text.splitlines()) == len(expected), text
            for line, name in zip(text.splitlines(), expected, strict=True):
                assert re.fullmatch(lines[name], line.rstrip()), (line, lines[name])
        else:
            assert text.startswith("no business day"), text
    status, text = cli(capsys, "day", "list", "--db", db_url, "--from", "2026-11-24", "--to", "2026-11-23")
    assert status == 2 and "--from 2026-11-24 is after --to 2026-11-23" in text
    engine.dispose()
