"""Payout batches on SQLite and PostgreSQL: balanced, repeatable, never overdrawn, reconciled with the bank."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from gateway.db.engine import make_engine
from gateway.db.migrate import upgrade
from gateway.demo.population import DemoHolder, demo_population
from gateway.demo.registry import demo_balances, write_demo_registry
from gateway.finance.bank_files import (
    PayoutError,
    PayoutRejected,
    ReturnRow,
    read_amounts,
    read_bank_return,
    write_payout_file,
)
from gateway.finance.payouts import PayoutKind, bank_lines, reconcile_bank_return, run_payout
from gateway.ledger.check import check_ledger
from gateway.ledger.models import ClosedDay, LedgerAccount, LedgerEntry, LedgerTransaction
from gateway.money import format_fen, parse_yuan_to_fen
from tests.ledger_support import person_id_of

MAY = date(2026, 5, 20)
HOLDERS = demo_population(40)
BY_CARD = {holder.card.card_number: holder for holder in HOLDERS}
IN_CITY = BY_CARD["N00000001"]        # employee, Haishu... insured in 330213, prior-years balance > 0
RETIRED = BY_CARD["N00000301"]
OTHER_CITY = BY_CARD["Z00000101"]     # insured in Wenzhou: its pooled fund is fund:3303
RESIDENT = BY_CARD["N00001001"]       # residents have no personal account: nothing to pay a contribution from
REPLACED = BY_CARD["N00001302"]       # an old replaced card and the active replacement
OLD_IC = BY_CARD["N00001602"]         # an old medical IC card and the social security card
LOST = BY_CARD["N00001101"]           # the only card is reported lost
NOT_REGISTERED = "440524188001010014"  # a valid ID number nobody in the demo registry has


@pytest.fixture
def payout_engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    write_demo_registry(engine, persons=40)
    yield engine
    engine.dispose()


def ssn(holder: DemoHolder) -> str:
    return holder.person.social_security_number


def prior_years_account(engine: Engine, holder: DemoHolder) -> str:
    """The code of the holder's prior-years account: the ledger names it by the registry's person id."""
    return f"person:{person_id_of(engine, ssn(holder))}:prior_years"


def prior(holder: DemoHolder) -> int:
    return demo_balances(holder)[1]


def amounts(*rows: tuple[str, int] | tuple[str, int, str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["social_security_number", "amount", "note"])
    for row in rows:
        writer.writerow([row[0], format_fen(row[1]), row[2] if len(row) > 2 else ""])
    return out.getvalue()


def balance(engine: Engine, code: str) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(LedgerAccount.balance_fen).where(LedgerAccount.code == code)) or 0


def snapshot(engine: Engine) -> tuple[dict[str, int], int, int]:
    with engine.connect() as conn:
        balances = {code: value for code, value in conn.execute(select(LedgerAccount.code, LedgerAccount.balance_fen))}
        transactions = conn.scalar(select(func.count()).select_from(LedgerTransaction)) or 0
        entries = conn.scalar(select(func.count()).select_from(LedgerEntry)) or 0
    return balances, transactions, entries


def assert_consistent(engine: Engine) -> None:
    report = check_ledger(engine)
    assert report.ok, report.render()


def paid_back(engine: Engine, batch: str) -> list[ReturnRow]:
    """The bank's return file when it paid every line of the payout file as asked."""
    out = io.StringIO()
    write_payout_file(bank_lines(engine, batch), out)
    return [ReturnRow(int(row["line"]), row["card_number"], parse_yuan_to_fen(row["amount"]), "paid")
            for row in csv.DictReader(io.StringIO(out.getvalue()))]


@pytest.mark.parametrize(("kind", "source"), [
    (PayoutKind.CONTRIBUTION, prior_years_account),
    (PayoutKind.SUBSIDY, lambda engine, holder: "fund:subsidy"),
    (PayoutKind.REIMBURSEMENT, lambda engine, holder: f"fund:{holder.person.insured_region_code[:4]}"),
])
def test_each_kind_pays_into_the_card_bank_account_and_balances(
    payout_engine: Engine, kind: PayoutKind, source: Callable[[Engine, DemoHolder], str]
) -> None:
    holders = [IN_CITY, RETIRED, OTHER_CITY, REPLACED, OLD_IC]
    funds_before = {source(payout_engine, h): balance(payout_engine, source(payout_engine, h)) for h in holders}
    rows = read_amounts(amounts(*[(ssn(h), 100_00 + i) for i, h in enumerate(holders)]))
    report = run_payout(payout_engine, kind, "B1", rows, MAY)
    assert len(report.paid) == 5 and not report.already_paid and not report.short
    assert report.paid_fen == sum(100_00 + i for i in range(5))
    paid_from: dict[str, int] = {}
    for i, holder in enumerate(holders):
        assert balance(payout_engine, f"card:{holder.card.card_number}:bank") == 100_00 + i
        code = source(payout_engine, holder)
        paid_from[code] = paid_from.get(code, 0) + 100_00 + i
        if kind is PayoutKind.CONTRIBUTION:
            # The person's accounts were opened with the registry's balances, then paid from.
            assert balance(payout_engine, code) == prior(holder) - (100_00 + i)
    if kind is not PayoutKind.CONTRIBUTION:
        # A fund pays for everyone it covers: it fell by exactly what was paid from it.
        for code, paid in paid_from.items():
            assert balance(payout_engine, code) == funds_before[code] - paid, code
    assert {line.card_number for line in report.lines} == {h.card.card_number for h in holders}
    assert "M00001601" not in {line.card_number for line in report.lines}  # never the old IC card
    with payout_engine.connect() as conn:
        kinds = set(conn.scalars(select(LedgerTransaction.kind).where(LedgerTransaction.dedupe_key.like("payout:%"))))
        assert kinds == {"payout"}
    assert_consistent(payout_engine)


def test_running_a_batch_twice_changes_nothing(payout_engine: Engine) -> None:
    rows = read_amounts(amounts((ssn(IN_CITY), 300_00), (ssn(RESIDENT), 50_00), (ssn(RETIRED), 120_00)))
    first = run_payout(payout_engine, PayoutKind.CONTRIBUTION, "2026-05", rows, MAY)
    before, file_before = snapshot(payout_engine), bank_lines(payout_engine, "2026-05")
    second = run_payout(payout_engine, PayoutKind.CONTRIBUTION, "2026-05", rows, MAY)
    assert snapshot(payout_engine) == before
    assert bank_lines(payout_engine, "2026-05") == file_before
    assert not second.paid and len(second.already_paid) == 3
    assert [(line.ref, line.paid_fen) for line in second.lines] == [(line.ref, line.paid_fen) for line in first.lines]
    # The resident's shortfall is still reported.
    assert [(line.line, line.shortfall_fen) for line in second.short] == [(line.line, line.shortfall_fen)
                                                                          for line in first.short] == [(3, 50_00)]
    # The same batch id is refused for another kind of payout.
    with pytest.raises(PayoutError, match="contribution batch"):
        run_payout(payout_engine, PayoutKind.SUBSIDY, "2026-05", rows, MAY)
    assert_consistent(payout_engine)


def test_a_contribution_never_overdraws_the_prior_years_account(payout_engine: Engine) -> None:
    held = prior(IN_CITY)
    rows = read_amounts(amounts((ssn(IN_CITY), held + 1_00), (ssn(RESIDENT), 80_00), (ssn(RETIRED), 10_00)))
    report = run_payout(payout_engine, PayoutKind.CONTRIBUTION, "B1", rows, MAY)
    paid = {line.social_security_number: line for line in report.lines}
    assert paid[ssn(IN_CITY)].paid_fen == held and paid[ssn(IN_CITY)].shortfall_fen == 1_00
    assert paid[ssn(RESIDENT)].paid_fen == 0 and paid[ssn(RESIDENT)].shortfall_fen == 80_00
    assert paid[ssn(RETIRED)].shortfall_fen == 0
    assert {line.social_security_number for line in report.short} == {ssn(IN_CITY), ssn(RESIDENT)}
    assert "short by 81.00 yuan" in report.summary()
    assert balance(payout_engine, prior_years_account(payout_engine, IN_CITY)) == 0
    assert balance(payout_engine, f"card:{IN_CITY.card.card_number}:bank") == held
    # Nothing to pay is nothing sent to the bank.
    assert [line.card_number for line in bank_lines(payout_engine, "B1")] == [IN_CITY.card.card_number,
                                                                             RETIRED.card.card_number]
    again = run_payout(payout_engine, PayoutKind.CONTRIBUTION, "B2",
                       read_amounts(amounts((ssn(IN_CITY), 1_00))), MAY)
    assert again.lines[0].paid_fen == 0 and again.lines[0].shortfall_fen == 1_00
    assert_consistent(payout_engine)


def test_bad_amounts_files_are_reported_by_line_and_nothing_is_written(payout_engine: Engine) -> None:
    bad_check_digit = ssn(IN_CITY)[:17] + ("0" if ssn(IN_CITY)[17] != "0" else "1")
    text = ("social_security_number,amount,note\n"
            f"{ssn(IN_CITY)},100.00,ok\n"             # line 2
            f"{bad_check_digit},100.00,\n"             # line 3
            f"{ssn(RETIRED)},0,\n"                     # line 4
            f"{ssn(OTHER_CITY)},-5.00,\n"              # line 5
            f"{ssn(REPLACED)},1.234,\n"                # line 6
            f"{ssn(IN_CITY)},20.00,twice\n"           # line 7
            f"{ssn(OLD_IC)},,\n"                       # line 8
            f"{ssn(RESIDENT)},1.00,a,b\n")             # line 9
    with pytest.raises(PayoutRejected) as caught:
        read_amounts(text, "may.csv")
    messages = [str(error) for error in caught.value.errors]
    assert [error.line for error in caught.value.errors] == [3, 4, 5, 6, 7, 8, 9]
    assert "check digit" in messages[0] and messages[0].startswith("may.csv line 3:")
    assert "more than zero" in messages[1]
    assert "not an amount in yuan" in messages[2] and "not an amount in yuan" in messages[3]
    assert "already on line 2" in messages[4]
    assert "amount is empty" in messages[5]
    assert "more fields" in messages[6]
    with pytest.raises(PayoutRejected, match="problem") as header:
        read_amounts("ssn,amount\n1,2\n")
    assert "header" in str(header.value.errors[0])
    with pytest.raises(PayoutRejected):
        read_amounts("social_security_number,amount\n")  # no rows
    # Rows that parse, but name nobody, or someone without a card to pay into: nothing is paid at all.
    rows = read_amounts(amounts((ssn(IN_CITY), 100_00), (NOT_REGISTERED, 100_00), (ssn(LOST), 100_00)))
    before = snapshot(payout_engine)
    with pytest.raises(PayoutRejected) as unknown:
        run_payout(payout_engine, PayoutKind.SUBSIDY, "B1", rows, MAY)
    assert [(error.line, "registry" in error.message or "no active" in error.message)
            for error in unknown.value.errors] == [(3, True), (4, True)]
    assert snapshot(payout_engine) == before
    with pytest.raises(PayoutError, match="batch id"):
        run_payout(payout_engine, PayoutKind.SUBSIDY, "bad:id", rows[:1], MAY)


def test_a_closed_day_takes_no_payouts(payout_engine: Engine) -> None:
    with payout_engine.begin() as conn:
        conn.execute(ClosedDay.__table__.insert(), {"business_date": MAY, "transactions": 0, "total_fen": 0,
                                                    "closed_by": "finance"})
    with pytest.raises(PayoutError, match="closed"):
        run_payout(payout_engine, PayoutKind.SUBSIDY, "B1", read_amounts(amounts((ssn(IN_CITY), 1_00))), MAY)


def test_the_payout_file(payout_engine: Engine) -> None:
    rows = read_amounts(amounts((ssn(RETIRED), 12_34), (ssn(IN_CITY), 1_000_00)))
    report = run_payout(payout_engine, PayoutKind.SUBSIDY, "2026-07", rows, MAY)
    out = io.StringIO()
    assert write_payout_file(bank_lines(payout_engine, "2026-07"), out) == (2, 1_012_34)
    lines = out.getvalue().splitlines()
    assert lines[0] == "batch_id,line,card_number,bank_account,name,amount,ref"
    assert lines[1] == (f"2026-07,1,N00000301,N00000301,{RETIRED.person.name},12.34,{report.lines[0].ref}")
    assert lines[2].endswith(f",1000.00,{report.lines[1].ref}") and lines[2].startswith("2026-07,2,N00000001,")
    assert report.lines[0].ref.startswith("PS20260520")


def test_an_exact_return_file_has_no_differences(payout_engine: Engine) -> None:
    rows = read_amounts(amounts((ssn(IN_CITY), 100_00), (ssn(RETIRED), 200_00), (ssn(OTHER_CITY), 300_00)))
    run_payout(payout_engine, PayoutKind.REIMBURSEMENT, "R1", rows, MAY)
    report = reconcile_bank_return(payout_engine, "R1", paid_back(payout_engine, "R1"))
    assert report.ok and report.matched == 3 and not report.booked
    with pytest.raises(PayoutError, match="no payouts"):
        reconcile_bank_return(payout_engine, "R2", [])


def test_every_kind_of_difference_is_reported(payout_engine: Engine) -> None:
    holders = [IN_CITY, RETIRED, OTHER_CITY, REPLACED]
    run_payout(payout_engine, PayoutKind.SUBSIDY, "S1",
               read_amounts(amounts(*[(ssn(h), 50_00) for h in holders])), MAY)
    returned = paid_back(payout_engine, "S1")
    text = ("line,card_number,amount,status,reason\n"
            f"1,{returned[0].card_number},50.00,paid,\n"        # matches
            f"2,{returned[1].card_number},49.99,paid,\n"        # another amount
            f"3,{returned[2].card_number},50.00,failed,account closed\n"
            "9,N00000601,50.00,paid,\n")                       # not in this batch; line 4 is missing
    report = reconcile_bank_return(payout_engine, "S1", read_bank_return(text))
    assert not report.ok and report.matched == 1
    assert [(d.kind, d.line) for d in report.differences] == [
        ("amount", 2), ("failed", 3), ("missing", 4), ("unexpected", 9)]
    failed = report.differences[1]
    assert "account closed" in str(failed) and "--book-failures" in str(failed)
    assert report.differences[0].ledger_fen == 50_00 and report.differences[0].bank_fen == 49_99
    with pytest.raises(PayoutRejected) as bad:
        read_bank_return("line,card_number,amount,status\n0,N00000001,1.00,paid\n1,n0000000x,1,maybe\n")
    assert [error.line for error in bad.value.errors] == [2, 3]


def test_booking_failures_gives_the_money_back(payout_engine: Engine) -> None:
    held = prior(IN_CITY)
    rows = read_amounts(amounts((ssn(IN_CITY), 150_00), (ssn(RETIRED), 20_00)))
    run_payout(payout_engine, PayoutKind.CONTRIBUTION, "C1", rows, MAY)
    prior_code, card_code = prior_years_account(payout_engine, IN_CITY), f"card:{IN_CITY.card.card_number}:bank"
    assert balance(payout_engine, prior_code) == held - 150_00
    returned = paid_back(payout_engine, "C1")
    answers = [ReturnRow(returned[0].line, returned[0].card_number, returned[0].amount_fen, "failed", "no account"),
               returned[1]]
    report = reconcile_bank_return(payout_engine, "C1", answers, book_failures=True, on=date(2026, 5, 25))
    assert report.ok and report.matched == 1 and len(report.booked) == 1
    payout_ref, reversal_ref = report.booked[0]
    assert reversal_ref.startswith("PV20260525")
    assert balance(payout_engine, prior_code) == held and balance(payout_engine, card_code) == 0
    with Session(payout_engine) as db:
        reversal = db.scalars(select(LedgerTransaction).where(LedgerTransaction.ref == reversal_ref)).one()
    assert (reversal.kind, reversal.original_ref, reversal.dedupe_key) == (
        "reversal", payout_ref, f"compensates:{payout_ref}")
    assert reversal.total_fen == -150_00
    assert_consistent(payout_engine)
    # Reconciling the same file again books nothing twice; the payout file no longer asks for it.
    before = snapshot(payout_engine)
    again = reconcile_bank_return(payout_engine, "C1", answers, book_failures=True)
    assert again.ok and not again.booked and again.already_reversed == 1
    assert snapshot(payout_engine) == before
    out = io.StringIO()
    assert write_payout_file(bank_lines(payout_engine, "C1"), out) == (1, 20_00)
    assert ",2,N00000301," in out.getvalue()  # the remaining line keeps its number
    # The bank paying it after all is a difference: the ledger took it back.
    late = reconcile_bank_return(payout_engine, "C1", [ReturnRow(1, IN_CITY.card.card_number, 150_00, "paid"),
                                                        returned[1]])
    assert [d.kind for d in late.differences] == ["paid_after_reversal"]


def test_the_payout_commands(payout_engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli.main import main

    url = payout_engine.url.render_as_string(hide_password=False)
    source = tmp_path / "july.csv"
    source.write_text("\ufeff" + amounts((ssn(IN_CITY), 88_00, "subsidy"), (ssn(OTHER_CITY), 12_50)),
                      encoding="utf-8")
    out = tmp_path / "bank.csv"
    args = ["payout", "run", "--kind", "subsidy", "--batch", "2026-07", "--amounts", str(source), "--out", str(out),
            "--date", "2026-07-15", "--db", url]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "2 paid, 100.50 yuan" in printed and "2 lines, 100.50 yuan" in printed
    assert main(args) == 0
    assert "0 paid, 0.00 yuan; 2 already paid" in capsys.readouterr().out
    bank = out.read_text(encoding="utf-8").splitlines()
    assert len(bank) == 3 and bank[1].startswith("2026-07,1,N00000001,N00000001,")

    returned = tmp_path / "return.csv"
    returned.write_text("line,card_number,amount,status,reason\n1,N00000001,88.00,paid,\n"
                        "2,Z00000101,12.50,failed,account frozen\n", encoding="utf-8")
    reconcile = ["payout", "reconcile", "--batch", "2026-07", "--return", str(returned), "--db", url]
    assert main(reconcile) == 1
    assert "DIFF line 2 card Z00000101" in capsys.readouterr().out
    assert main([*reconcile, "--book-failures"]) == 0
    assert "taken back by PV" in capsys.readouterr().out
    assert balance(payout_engine, "fund:subsidy") == -88_00
    assert main(reconcile) == 0
    assert main(["ledger", "check", "--db", url]) == 0
    assert "all invariants hold" in capsys.readouterr().out

    bad = tmp_path / "bad.csv"
    bad.write_text(f"social_security_number,amount\n{NOT_REGISTERED},1.00\n{ssn(IN_CITY)},0\n", encoding="utf-8")
    assert main(["payout", "run", "--kind", "subsidy", "--batch", "B9", "--amounts", str(bad), "--out",
                 str(tmp_path / "b9.csv"), "--db", url]) == 2
    errors = capsys.readouterr().err
    assert "bad.csv line 3: amount '0' must be more than zero" in errors and "nothing was paid" in errors
    assert not (tmp_path / "b9.csv").exists()
    assert main(["payout", "run", "--kind", "subsidy", "--batch", "B9", "--amounts", str(tmp_path / "none.csv"),
                 "--out", str(tmp_path / "b9.csv"), "--db", url]) == 2
    with pytest.raises(SystemExit) as shown:
        main(["payout", "run", "--help"])
    assert shown.value.code == 0
    assert "--amounts FILE.csv" in capsys.readouterr().out
