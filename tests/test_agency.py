"""`gateway agency ...`: card agency operations through the command line, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.cli.main import main
from gateway.demo.population import Case, DemoHolder, demo_population, make_id_number
from gateway.demo.registry import demo_filings, write_demo_registry
from gateway.registry.models import Card, Filing, Person
from gateway.serve.reads import load_registry_facts
from gateway.settlement.facts import CardKind, CardStatus, FilingKind

PERSONS = 30
POPULATION = demo_population(PERSONS)


def holder(case: Case) -> DemoHolder:
    return next(h for h in POPULATION if h.case is case)


IN_CITY = POPULATION[0]               # N00000001, active, insured in a Ningbo district
LOST = holder(Case.LOST)              # N00001101, reported lost
REPLACED = holder(Case.REPLACED)      # N00001301 replaced by N00001302
UNFILED = holder(Case.ZHEJIANG_UNFILED)
FILED = holder(Case.ZHEJIANG_FILED)
UNKNOWN_PERSON = make_id_number("330205", date(1970, 1, 1), 44)  # valid check digit, nobody in the registry


@pytest.fixture
def db(migrated_engine: Engine, db_url: str) -> str:
    write_demo_registry(migrated_engine, persons=PERSONS)
    return db_url


def run(capsys: pytest.CaptureFixture[str], db: str, *words: str) -> tuple[int, str, str]:
    code = main(["agency", *words, "--db", db])
    out, err = capsys.readouterr()
    return code, out, err


def card(engine: Engine, number: str) -> Card:
    with Session(engine) as session:
        found = session.get(Card, number)
        assert found is not None
        return found


def assert_masked(text: str, *numbers: str) -> None:
    for number in numbers:
        assert number not in text
        assert f"{number[:6]}{'*' * 8}{number[-4:]}" in text


def test_report_lost_and_lift_the_report(db: str, migrated_engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "report-lost", "N00000001")
    assert code == 0 and "N00000001" in out and "reported lost" in out
    assert_masked(out, IN_CITY.person.social_security_number)
    assert card(migrated_engine, "N00000001").status == "lost_reported"
    code, out, _ = run(capsys, db, "lift-report", "N00000001")
    assert code == 0 and "lifted" in out
    assert card(migrated_engine, "N00000001").status == "active"


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["report-lost", "N00001101"], "already reported lost"),
        (["report-lost", "N00001301"], "replaced by N00001302, and a replaced card is refused forever"),
        (["report-lost", "N99999999"], "card N99999999 is not registered"),
        (["lift-report", "N00000001"], "no loss report to lift: it is active"),
        (["lift-report", "N00001301"], "no loss report to lift: it was replaced"),
        (["lift-report", "N99999999"], "not registered"),
    ],
)
def test_impossible_card_transitions_are_refused(
    db: str, migrated_engine: Engine, capsys: pytest.CaptureFixture[str], words: list[str], expected: str
) -> None:
    before = card(migrated_engine, words[1]).status if words[1] != "N99999999" else None
    code, out, err = run(capsys, db, *words)
    assert code == 1 and out == "" and "refused" in err and expected in err
    if before is not None:
        assert card(migrated_engine, words[1]).status == before


def test_replace_a_card(db: str, migrated_engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "replace-card", "N00000001", "--new-card", "N00000002", "--issue-date",
                       "2026-11-25", "--expiry-date", "20361125", "--identification-code",
                       "330203d1560000050123456789abcdef")
    assert code == 0 and "replaced by N00000002" in out
    assert_masked(out, IN_CITY.person.social_security_number)
    old, new = card(migrated_engine, "N00000001"), card(migrated_engine, "N00000002")
    assert (old.status, old.replaced_by) == ("replaced", "N00000002")
    assert (new.status, new.kind, new.social_security_number) == ("active", "social_security",
                                                                  IN_CITY.person.social_security_number)
    assert (new.issue_date, new.expiry_date) == (date(2026, 11, 25), date(2036, 11, 25))
    assert new.card_identification_code == "330203D1560000050123456789ABCDEF"
    with Session(migrated_engine) as session:
        facts = load_registry_facts(session, "N00000001", IN_CITY.person.social_security_number)
    assert facts.card is not None and facts.card.status is CardStatus.REPLACED


def test_a_card_reported_lost_can_be_replaced(db: str, migrated_engine: Engine,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(capsys, db, "replace-card", "N00001101", "--new-card", "N00001102", "--issue-date",
                     "2026-11-25", "--expiry-date", "2036-11-25")
    assert code == 0
    assert card(migrated_engine, "N00001101").status == "replaced"
    new = card(migrated_engine, "N00001102")
    assert new.kind == CardKind.SOCIAL_SECURITY and new.social_security_number == LOST.person.social_security_number


@pytest.mark.parametrize(
    ("words", "exit_code", "expected"),
    [
        (["N00001301", "--new-card", "N00001303"], 1, "cannot be replaced: it was replaced by N00001302"),
        (["N00000001", "--new-card", "N00001302"], 1, "card N00001302 is already registered"),
        (["N99999999", "--new-card", "N99999998"], 1, "card N99999999 is not registered"),
        (["N00000001", "--new-card", "n-2"], 2, "new card number 'n-2' must be 9 capital letters or digits"),
        (["N00000001", "--new-card", "N00000002", "--identification-code", "XYZ"], 2, "identification code 'XYZ'"),
    ],
)
def test_impossible_replacements_are_refused(
    db: str, migrated_engine: Engine, capsys: pytest.CaptureFixture[str], words: list[str], exit_code: int,
    expected: str,
) -> None:
    with Session(migrated_engine) as session:
        cards_before = session.scalar(select(Card.card_number).order_by(Card.card_number.desc()).limit(1))
    code, out, err = run(capsys, db, "replace-card", *words, "--issue-date", "2026-11-25",
                         "--expiry-date", "2036-11-25")
    assert (code, out) == (exit_code, "") and expected in err
    assert card(migrated_engine, "N00000001").status == "active"
    with Session(migrated_engine) as session:
        assert session.scalar(select(Card.card_number).order_by(Card.card_number.desc()).limit(1)) == cards_before


def test_replacement_dates_are_checked(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, db, "replace-card", "N00000001", "--new-card", "N00000002", "--issue-date",
                       "2036-11-25", "--expiry-date", "2026-11-25")
    assert code == 2 and "after expiry date" in err
    with pytest.raises(SystemExit) as exited:
        main(["agency", "replace-card", "N00000001", "--new-card", "N00000002", "--issue-date", "2026-02-30",
              "--expiry-date", "2036-11-25", "--db", db])
    assert exited.value.code == 2 and "not a calendar date" in capsys.readouterr().err


def filings_of(engine: Engine, number: str) -> list[tuple[str, str, date, date | None]]:
    with Session(engine) as session:
        return [(f.kind, f.region_code, f.valid_from, f.valid_to) for f in session.scalars(
            select(Filing).where(Filing.social_security_number == number).order_by(Filing.valid_from))]


def test_register_end_and_refuse_to_repeat_a_filing(db: str, migrated_engine: Engine,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    number = UNFILED.person.social_security_number
    code, out, _ = run(capsys, db, "register-filing", number, "--kind", "transfer", "--region", "330200",
                       "--from", "2026-11-01")
    assert code == 0 and "registered, open-ended" in out
    assert_masked(out, number)
    assert filings_of(migrated_engine, number) == [("transfer", "330200", date(2026, 11, 1), None)]
    with Session(migrated_engine) as session:
        person = load_registry_facts(session, UNFILED.card.card_number, number).person
    assert person is not None and [f.kind for f in person.filings] == [FilingKind.TRANSFER]
    code, _, err = run(capsys, db, "register-filing", number, "--kind", "transfer", "--region", "330200",
                       "--from", "20261101")
    assert code == 1 and "already registered, open-ended" in err
    code, out, _ = run(capsys, db, "register-filing", number, "--kind", "transfer", "--region", "330200",
                       "--from", "2026-11-01", "--to", "2026-12-31")
    assert code == 0 and "now to 2026-12-31 (was open-ended)" in out
    assert filings_of(migrated_engine, number) == [("transfer", "330200", date(2026, 11, 1), date(2026, 12, 31))]


@pytest.mark.parametrize(
    ("number", "extra", "exit_code", "expected"),
    [
        (UNKNOWN_PERSON, [], 1, f"no insured person {UNKNOWN_PERSON[:6]}********{UNKNOWN_PERSON[-4:]}"),
        (UNFILED.person.social_security_number[:17] + "Y", [], 2, "must be 18 characters"),
        (IN_CITY.person.social_security_number, [], 1, "in their own city and needs no filing"),
        (UNFILED.person.social_security_number, ["--to", "2026-01-01"], 2, "ends (2026-01-01) before it starts"),
        (UNFILED.person.social_security_number, ["--region", "330204"], 2, "region '330204' (Jiangdong) is retired"),
        (UNFILED.person.social_security_number, ["--region", "999999"], 2, "region '999999' is not a region code"),
    ],
)
def test_impossible_filings_are_refused(
    db: str, migrated_engine: Engine, capsys: pytest.CaptureFixture[str], number: str, extra: list[str],
    exit_code: int, expected: str,
) -> None:
    words = ["register-filing", number, "--kind", "residence", "--from", "2026-11-01", "--region", "330200", *extra]
    code, out, err = run(capsys, db, *words)
    assert (code, out) == (exit_code, "") and expected in err, err
    assert number not in err
    with Session(migrated_engine) as session:
        assert session.scalar(select(Filing).where(Filing.valid_from == date(2026, 11, 1))) is None


def test_the_filing_kind_is_one_of_two(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["agency", "register-filing", FILED.person.social_security_number, "--kind", "holiday", "--region",
              "330200", "--from", "2026-01-01", "--db", db])
    assert exited.value.code == 2 and "invalid choice: 'holiday'" in capsys.readouterr().err


def test_change_of_pooling_region_keeps_the_card(db: str, migrated_engine: Engine,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    number = IN_CITY.person.social_security_number
    new_region = "330212" if IN_CITY.person.insured_region_code != "330212" else "330205"
    code, out, _ = run(capsys, db, "change-region", number, new_region)
    assert code == 0 and f"now insured in {new_region} (was {IN_CITY.person.insured_region_code})" in out
    assert "cards kept: N00000001" in out
    assert_masked(out, number)
    with Session(migrated_engine) as session:
        person = session.get(Person, number)
        assert person is not None and person.insured_region_code == new_region
        facts = load_registry_facts(session, "N00000001", number)
    assert facts.card is not None and facts.card.status is CardStatus.ACTIVE
    assert facts.person is not None and facts.person.insured_region_code == new_region


@pytest.mark.parametrize(
    ("number", "region", "exit_code", "expected"),
    [
        (IN_CITY.person.social_security_number, IN_CITY.person.insured_region_code, 1, "is already insured in"),
        (IN_CITY.person.social_security_number, "999999", 2, "region '999999' is not a region code"),
        (IN_CITY.person.social_security_number, "330283", 2, "region '330283' (Fenghua"),
        (UNKNOWN_PERSON, "330212", 1, "no insured person"),
    ],
)
def test_impossible_region_changes_are_refused(
    db: str, migrated_engine: Engine, capsys: pytest.CaptureFixture[str], number: str, region: str, exit_code: int,
    expected: str,
) -> None:
    code, out, err = run(capsys, db, "change-region", number, region)
    assert (code, out) == (exit_code, "") and expected in err, err
    with Session(migrated_engine) as session:
        person = session.get(Person, IN_CITY.person.social_security_number)
        assert person is not None and person.insured_region_code == IN_CITY.person.insured_region_code


ACTIONS = ["report-lost", "lift-report", "replace-card", "register-filing", "change-region"]


@pytest.mark.parametrize("words", [[], *([a] for a in ACTIONS)], ids=["agency", *ACTIONS])
def test_help_everywhere(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["agency", *words, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "usage: gateway agency" in out
    if words:
        assert "--db URL" in out and "--config FILE" in out


def test_an_unmigrated_database_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agency", "report-lost", "N00000001", "--db", f"sqlite:///{tmp_path / 'new.db'}"]) == 1
    assert "gateway db upgrade" in capsys.readouterr().err


def test_a_bad_database_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agency", "report-lost", "N00000001", "--db", "mysql://x@y/z"]) == 2
    assert "unsupported database" in capsys.readouterr().err


# `gateway registry demo` again (every `make run`) after an agency operation: the operation stays --------

FILED_KIND, FILED_REGION, FILED_FROM, _ = demo_filings(FILED)[0]
OTHER_DISTRICT = "330212" if IN_CITY.person.insured_region_code != "330212" else "330205"
AGENCY_RECORDS = [
    # (the agency command, the registered row it changed, its column, the value the command left there)
    (["report-lost", "N00000001"], (Card, "N00000001"), "status", "lost_reported"),
    (["lift-report", LOST.card.card_number], (Card, LOST.card.card_number), "status", "active"),
    (["replace-card", "N00000001", "--new-card", "N00000002", "--issue-date", "2026-11-25", "--expiry-date",
      "2036-11-25"], (Card, "N00000001"), "replaced_by", "N00000002"),
    (["register-filing", FILED.person.social_security_number, "--kind", FILED_KIND.value, "--region", FILED_REGION,
      "--from", FILED_FROM.isoformat(), "--to", "2026-06-30"],
     (Filing, (FILED.person.social_security_number, FILED_KIND.value, FILED_REGION, FILED_FROM)), "valid_to",
     date(2026, 6, 30)),
    (["change-region", IN_CITY.person.social_security_number, OTHER_DISTRICT],
     (Person, IN_CITY.person.social_security_number), "insured_region_code", OTHER_DISTRICT),
    # Insured in Ningbo now, the holder's demo filing for Ningbo is in their own city: kept, not refused.
    (["change-region", FILED.person.social_security_number, "330203"],
     (Person, FILED.person.social_security_number), "insured_region_code", "330203"),
]


def registered_value(engine: Engine, row: tuple[type[Any], Any], column: str) -> Any:
    model, key = row
    with Session(engine) as session:
        if model is Filing:  # no key of its own: person, kind, region and start
            number, kind, region, valid_from = key
            found = session.scalars(select(Filing).where(
                Filing.social_security_number == number, Filing.kind == kind, Filing.region_code == region,
                Filing.valid_from == valid_from)).one()
        else:
            found = session.get(model, key)
        assert found is not None
        return getattr(found, column)


@pytest.mark.parametrize(("words", "row", "column", "value"), AGENCY_RECORDS,
                         ids=[" ".join(words[:2]) for words, *_ in AGENCY_RECORDS])
def test_writing_the_demo_registry_again_keeps_what_the_agency_recorded(
    db: str, migrated_engine: Engine, capsys: pytest.CaptureFixture[str], words: list[str],
    row: tuple[type[Any], Any], column: str, value: Any,
) -> None:
    assert run(capsys, db, *words)[0] == 0
    assert main(["registry", "demo", "--persons", str(PERSONS + 1), "--db", db]) == 0
    out = capsys.readouterr().out
    assert registered_value(migrated_engine, row, column) == value
    assert "1 kept as registered" in out and set(re.findall(r"(\d+) updated", out)) == {"0"}, out
    assert "persons: 1 new" in out  # what is missing is still added
