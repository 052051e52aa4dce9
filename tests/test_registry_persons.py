"""Insured persons in the registry: import (checked, all or nothing, repeatable), the demo population, and
the facts the settlement rules get from it — on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.db.engine import make_engine
from gateway.db.migrate import upgrade
from gateway.demo.population import Case, demo_population, make_id_number
from gateway.demo.registry import (
    BALANCE_YEAR,
    EXPIRED_FILING,
    EXPIRED_FILING_HOLDER,
    FILED_CASES,
    FILING_FROM,
    FILING_REGION,
    LOOKUP_PROBLEM_NOTES,
    MAX_DEMO_PERSONS,
    demo_balances,
    demo_lookup_problem_numbers,
    write_demo_registry,
)
from gateway.identity import is_valid_id_number
from gateway.registry.importer import ImportFailed, import_files
from gateway.registry.models import Card, Filing, LookupProblemEntry, OpeningBalance, Person
from gateway.serve.reads import NotRegistered, load_institution, load_opening_balances, load_registry_facts
from gateway.settlement.facts import (
    Balances,
    CardKind,
    CardStatus,
    FilingKind,
    InstitutionKind,
    InstitutionLevel,
    InsuranceType,
    LookupProblem,
)
from tests.registry_support import count, write

IN_CITY = make_id_number("330203", date(1980, 5, 1), 11)      # Ningbo employee; a card replaced
HANGZHOU = make_id_number("330100", date(1955, 3, 2), 22)     # retired in Hangzhou, filed for Ningbo
RESIDENT = make_id_number("330212", date(1990, 7, 3), 33)     # Ningbo resident; an old IC card too
NOBODY = make_id_number("330205", date(1970, 1, 1), 44)       # valid, but in no file
PROBLEM = make_id_number("330203", date(1961, 6, 6), 55)      # the insurance center cannot look it up
CODE = "330203D156000005" + "0123456789ABCDEF"

PERSONS = f"""social_security_number,name,insurance_type,insured_region_code
{IN_CITY},张三,employee_active,330203
{HANGZHOU},李四,employee_retired,330100
{RESIDENT},王五,resident,330212
"""
CARDS = f"""card_number,social_security_number,kind,status,issue_date,expiry_date,card_identification_code,replaced_by
N10000001,{IN_CITY},social_security,replaced,2018-01-01,2028-01-01,{CODE},N10000002
N10000002,{IN_CITY},social_security,active,2025-03-01,2035-03-01,,
Z10000001,{HANGZHOU},social_security,active,2019-04-01,2029-04-01,,
M10000001,{RESIDENT},old_medical_ic,active,2008-01-01,2099-12-31,,
N10000003,{RESIDENT},social_security,active,20200101,20300101,,
"""
FILINGS = f"""social_security_number,kind,region_code,valid_from,valid_to
{HANGZHOU},residence,330200,2025-01-01,
{HANGZHOU},transfer,330200,2023-01-01,2023-12-31
"""
LOOKUP_PROBLEMS = f"""id_number,problem,note
{PROBLEM},government_staff,市级机关
"""
BALANCES = f"""social_security_number,insurance_year,current_year,prior_years
{IN_CITY},2026,1234.56,100
{RESIDENT},2026,0,0.00
"""
ALL = {"persons.csv": PERSONS, "cards.csv": CARDS, "filings.csv": FILINGS, "lookup_problems.csv": LOOKUP_PROBLEMS,
       "balances.csv": BALANCES}
MODELS = (Person, Card, Filing, LookupProblemEntry, OpeningBalance)


def import_all(engine: Engine, tmp_path: Path, files: dict[str, str] = ALL) -> dict[str, tuple[int, int, int]]:
    paths = [write(tmp_path, name, text) for name, text in reversed(files.items())]  # dependants first
    report = import_files(engine, paths)
    return {name: (c.inserted, c.updated, c.unchanged) for name, c in report.tables.items()}


# Import ---------------------------------------------------------------------------------------


def test_import_writes_persons_cards_filings_problems_and_balances(migrated_engine: Engine, tmp_path: Path) -> None:
    counts = import_all(migrated_engine, tmp_path)
    assert counts == {"persons": (3, 0, 0), "lookup_problems": (1, 0, 0), "cards": (5, 0, 0),
                      "filings": (2, 0, 0), "balances": (2, 0, 0)}
    with Session(migrated_engine) as db:
        old = db.get(Card, "N10000001")
        assert old is not None and old.status == "replaced" and old.replaced_by == "N10000002"
        assert old.card_identification_code == CODE and old.first_used_on is None
        compact = db.get(Card, "N10000003")
        assert compact is not None and compact.issue_date == date(2020, 1, 1)
        balance = db.get(OpeningBalance, IN_CITY)
        assert balance is not None and (balance.insurance_year, balance.current_year_fen,
                                        balance.prior_years_fen) == (2026, 123456, 10000)
        ended = db.scalars(select(Filing).where(Filing.kind == "transfer")).one()
        assert (ended.valid_from, ended.valid_to) == (date(2023, 1, 1), date(2023, 12, 31))
        problem = db.get(LookupProblemEntry, PROBLEM)
        assert problem is not None and problem.problem == "government_staff" and problem.note == "市级机关"


def test_importing_the_same_files_again_changes_nothing(migrated_engine: Engine, tmp_path: Path) -> None:
    import_all(migrated_engine, tmp_path)
    counts = import_all(migrated_engine, tmp_path)
    assert counts == {"persons": (0, 0, 3), "lookup_problems": (0, 0, 1), "cards": (0, 0, 5),
                      "filings": (0, 0, 2), "balances": (0, 0, 2)}
    assert count(migrated_engine, Filing) == 2


def test_a_filing_is_identified_by_person_kind_region_and_start(migrated_engine: Engine, tmp_path: Path) -> None:
    import_all(migrated_engine, tmp_path)
    ended = FILINGS.replace("330200,2025-01-01,", "330200,2025-01-01,2026-06-30")
    counts = import_all(migrated_engine, tmp_path, {"filings.csv": ended})
    assert counts == {"filings": (0, 1, 1)}
    with Session(migrated_engine) as db:
        assert db.scalars(select(Filing.valid_to).where(Filing.kind == "residence")).all() == [date(2026, 6, 30)]


def test_files_may_come_alone_and_reference_the_registry(migrated_engine: Engine, tmp_path: Path) -> None:
    import_all(migrated_engine, tmp_path, {"p.csv": PERSONS})
    import_all(migrated_engine, tmp_path, {"c.csv": CARDS})
    import_all(migrated_engine, tmp_path, {"f.csv": FILINGS, "b.csv": BALANCES})
    # A later file replaces a card already in the registry with one of its own.
    counts = import_all(migrated_engine, tmp_path, {"c2.csv": (
        "card_number,social_security_number,kind,status,issue_date,expiry_date,replaced_by\n"
        f"Z10000001,{HANGZHOU},social_security,replaced,2019-04-01,2029-04-01,Z10000002\n"
        f"Z10000002,{HANGZHOU},social_security,active,2026-01-01,2036-01-01,\n"
    )})
    assert counts == {"cards": (1, 1, 0)}
    assert count(migrated_engine, Card) == 6


def test_persons_import_together_with_institutions_and_terminals(migrated_engine: Engine, tmp_path: Path) -> None:
    institutions = ("code,name,region_code,kind,level,cross_region_designated\n"
                    "H33020300101,海曙测试医院,330203,hospital,tertiary,true\n")
    terminals = "terminal_id,institution_code,credential\nH33020300101-01,H33020300101,secret-0101-01\n"
    counts = import_all(migrated_engine, tmp_path, {**ALL, "i.csv": institutions, "t.csv": terminals})
    assert counts["institutions"] == (1, 0, 0) and counts["terminals"] == (1, 0, 0) and counts["cards"] == (5, 0, 0)


PERSONS_HEADER = "social_security_number,name,insurance_type,insured_region_code\n"
CARDS_HEADER = "card_number,social_security_number,kind,status,issue_date,expiry_date,replaced_by\n"
CODE_HEADER = "card_number,social_security_number,kind,status,issue_date,expiry_date,card_identification_code\n"
FILINGS_HEADER = "social_security_number,kind,region_code,valid_from,valid_to\n"
PROBLEMS_HEADER = "id_number,problem,note\n"
BALANCES_HEADER = "social_security_number,insurance_year,current_year,prior_years\n"
MISTYPED = IN_CITY[:17] + ("0" if IN_CITY[17] != "0" else "1")

BAD_ROWS = [
    (PERSONS_HEADER + f"{MISTYPED},张三,employee_active,330203\n", "line 2: social_security_number 330203"),
    (PERSONS_HEADER + f"{IN_CITY[:17]},张三,employee_active,330203\n", "line 2: social_security_number must be 18"),
    (PERSONS_HEADER + f"{IN_CITY},,employee_active,330203\n", "line 2: name is empty"),
    (PERSONS_HEADER + f"{IN_CITY},{'张' * 51},employee_active,330203\n", "line 2: name is longer than 50"),
    (PERSONS_HEADER + f"{IN_CITY},张三,farmer,330203\n", "line 2: insurance_type 'farmer' must be one of"),
    (PERSONS_HEADER + f"{IN_CITY},张三,resident,999999\n", "line 2: insured_region_code '999999' is not"),
    (PERSONS_HEADER + f"{IN_CITY},张三,resident,330204\n", "line 2: insured_region_code '330204' (Jiangdong) is"),
    (PERSONS_HEADER + f"{IN_CITY},张三,resident,330203\n{IN_CITY},李四,resident,330203\n",
     "line 3: social_security_number 330203****"),
    (CARDS_HEADER + f"n1,{IN_CITY},social_security,active,2020-01-01,2030-01-01,\n", "line 2: card_number 'n1'"),
    (CARDS_HEADER + f"N10000009,{IN_CITY},social_security,active,2031-01-01,2030-01-01,\n",
     "line 2: issue_date 2031-01-01 is after expiry_date"),
    (CARDS_HEADER + f"N10000009,{IN_CITY},social_security,active,2025-02-30,2030-01-01,\n",
     "line 2: issue_date '2025-02-30' is not a calendar date"),
    (CARDS_HEADER + f"N10000009,{IN_CITY},social_security,active,2025/01/01,2030-01-01,\n",
     "line 2: issue_date '2025/01/01' must be a date as YYYY-MM-DD or YYYYMMDD"),
    (CARDS_HEADER + f"N10000009,{IN_CITY},bank,active,2020-01-01,2030-01-01,\n", "line 2: kind 'bank' must be"),
    (CARDS_HEADER + f"N10000009,{IN_CITY},social_security,frozen,2020-01-01,2030-01-01,\n",
     "line 2: status 'frozen' must be one of"),
    (CARDS_HEADER + f"N10000009,{IN_CITY},social_security,active,2020-01-01,2030-01-01,N10000002\n",
     "line 2: replaced_by is given but status is active"),
    (CARDS_HEADER + f"N10000009,{IN_CITY},social_security,replaced,2020-01-01,2030-01-01,N10000009\n",
     "line 2: replaced_by names the card itself"),
    (CARDS_HEADER + f"N10000009,{IN_CITY},social_security,replaced,2020-01-01,2030-01-01,N19999999\n",
     "line 2: replaced_by 'N19999999' is in neither the cards file nor the registry"),
    (CARDS_HEADER + f"N10000009,{IN_CITY},social_security,replaced,2020-01-01,2030-01-01,N10000008\n"
     f"N10000008,{RESIDENT},social_security,active,2020-01-01,2030-01-01,\n",
     "line 2: replaced_by 'N10000008' is another person's card"),
    (CARDS_HEADER + f"N10000009,{IN_CITY},social_security,replaced,2020-01-01,2030-01-01,N10000008\n"
     f"N10000008,{IN_CITY},social_security,replaced,2020-01-01,2030-01-01,N10000009\n",
     "line 3: replaced_by 'N10000009': the chain of replacements goes round in a circle"),
    (CARDS_HEADER + f"N10000009,{NOBODY},social_security,active,2020-01-01,2030-01-01,\n",
     "line 2: social_security_number 330205********"),
    (CODE_HEADER + f"N10000009,{IN_CITY},social_security,active,2020-01-01,2030-01-01,330203D15600000\n",
     "line 2: card_identification_code '330203D15600000' must be"),
    (CARDS_HEADER + f"N10000009,{IN_CITY},social_security,active,2020-01-01,2030-01-01,\n"
     f"N10000009,{IN_CITY},social_security,active,2020-01-01,2030-01-01,\n",
     "line 3: card_number 'N10000009' already on line 2"),
    (FILINGS_HEADER + f"{NOBODY},residence,330200,2025-01-01,\n", "line 2: social_security_number 330205****"),
    (FILINGS_HEADER + f"{HANGZHOU},residence,330200,2025-01-01,2024-12-31\n", "line 2: valid_to 2024-12-31 is before"),
    (FILINGS_HEADER + f"{HANGZHOU},holiday,330200,2025-01-01,\n", "line 2: kind 'holiday' must be one of"),
    (FILINGS_HEADER + f"{HANGZHOU},residence,330283,2025-01-01,\n", "line 2: region_code '330283' (Fenghua"),
    (FILINGS_HEADER + f"{IN_CITY},residence,330212,2025-01-01,\n",
     "line 2: region_code '330212' is in the person's own insured city"),
    (FILINGS_HEADER + f"{HANGZHOU},residence,330200,2025-01-01,\n{HANGZHOU},residence,330200,20250101,2026-01-01\n",
     "line 3: social_security_number 330100********"),
    (PROBLEMS_HEADER + f"{PROBLEM},id_mistyped,\n", "line 2: problem id_mistyped is never stored"),
    (PROBLEMS_HEADER + f"{MISTYPED},not_covered,\n", "line 2: id_number 330203********"),
    (PROBLEMS_HEADER + f"{PROBLEM},unlucky,\n", "line 2: problem 'unlucky' must be one of"),
    (PROBLEMS_HEADER + f"{PROBLEM},not_covered,{'x' * 201}\n", "line 2: note is longer than 200"),
    (BALANCES_HEADER + f"{IN_CITY},2026,1.234,0\n", "line 2: current_year: '1.234' is not an amount in yuan"),
    (BALANCES_HEADER + f"{IN_CITY},2026,0,1e3\n", "line 2: prior_years: '1e3' is not an amount"),
    (BALANCES_HEADER + f"{IN_CITY},2026,-1,0\n", "line 2: current_year: '-1' is not an amount"),
    (BALANCES_HEADER + f"{IN_CITY},2026,abc,0\n", "line 2: current_year: 'abc' is not an amount"),
    (BALANCES_HEADER + f"{IN_CITY},2026,,0\n", "line 2: current_year is empty"),
    (BALANCES_HEADER + f"{IN_CITY},26,0,0\n", "line 2: insurance_year '26' must be a year"),
    (BALANCES_HEADER + f"{NOBODY},2026,0,0\n", "line 2: social_security_number 330205****"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_ROWS, ids=[f"{i}-{b[1][8:40]}" for i, b in enumerate(BAD_ROWS)])
def test_bad_rows_are_reported_by_line_and_nothing_is_written(
    migrated_engine: Engine, tmp_path: Path, text: str, expected: str
) -> None:
    files = [write(tmp_path, "bad.csv", text)]
    if not text.startswith(PERSONS_HEADER):
        files.insert(0, write(tmp_path, "persons.csv", PERSONS))
    with pytest.raises(ImportFailed) as failed:
        import_files(migrated_engine, files)
    messages = [str(e) for e in failed.value.errors]
    assert any(expected in m and "bad.csv" in m for m in messages), messages
    assert all(IN_CITY not in m and HANGZHOU not in m and NOBODY not in m for m in messages)  # masked
    assert [count(migrated_engine, model) for model in MODELS] == [0] * len(MODELS)


def test_every_bad_row_of_every_file_is_reported(migrated_engine: Engine, tmp_path: Path) -> None:
    cards = CARDS + f"N10000009,{NOBODY},social_security,active,2020-01-01,2030-01-01,,\n"
    balances = BALANCES + f"{HANGZHOU},2026,1.001,0\n"
    with pytest.raises(ImportFailed) as failed:
        import_all(migrated_engine, tmp_path, {**ALL, "cards.csv": cards, "balances.csv": balances})
    assert sorted((Path(e.file).name, e.line) for e in failed.value.errors) == [("balances.csv", 4), ("cards.csv", 7)]
    assert count(migrated_engine, Person) == 0


def test_the_database_refuses_what_the_importer_would(migrated_engine: Engine, tmp_path: Path) -> None:
    import_all(migrated_engine, tmp_path)
    statements = [
        update(OpeningBalance).values(current_year_fen=-1),
        update(Card).where(Card.card_number == "N10000002").values(status="frozen"),
        update(Card).where(Card.card_number == "N10000002").values(replaced_by="N10000003"),  # still active
        update(Person).values(insurance_type="farmer"),
        update(LookupProblemEntry).values(problem="id_mistyped"),
        update(Filing).values(valid_to=date(2000, 1, 1)),
    ]
    for statement in statements:
        with Session(migrated_engine) as db, pytest.raises(IntegrityError):
            db.execute(statement)
            db.commit()


def test_the_check_constraints_list_exactly_the_enum_values() -> None:
    def check_text(model: type, name: str) -> str:
        table = model.__table__  # type: ignore[attr-defined]
        [text] = [str(c.sqltext) for c in table.constraints if c.name == f"ck_{table.name}_{name}"]
        return text

    def quoted(text: str) -> set[str]:
        return {part.split("'")[1] for part in text.split(",")}

    assert quoted(check_text(Person, "insurance_type")) == {t.value for t in InsuranceType}
    assert quoted(check_text(Card, "kind")) == {k.value for k in CardKind}
    assert quoted(check_text(Card, "status")) == {s.value for s in CardStatus}
    assert quoted(check_text(Filing, "kind")) == {k.value for k in FilingKind}
    assert quoted(check_text(LookupProblemEntry, "problem")) == {p.value for p in LookupProblem} - {"id_mistyped"}


# The demo registry ----------------------------------------------------------------------------


def test_the_demo_registry_holds_the_population(migrated_engine: Engine) -> None:
    first = write_demo_registry(migrated_engine)
    population = demo_population()
    with Session(migrated_engine) as db:
        cards = {c.card_number: c for c in db.scalars(select(Card))}
        persons = {p.social_security_number: p for p in db.scalars(select(Person))}
        filings = db.scalars(select(Filing)).all()
        balances = {b.social_security_number: b for b in db.scalars(select(OpeningBalance))}
        problems = {p.id_number: p.problem for p in db.scalars(select(LookupProblemEntry))}
    assert len(persons) == len(population) == 200
    assert len(cards) == sum(len(h.cards) for h in population)
    for holder in population:
        person = persons[holder.person.social_security_number]
        assert (person.name, person.insurance_type, person.insured_region_code) == (
            holder.person.name, holder.person.insurance_type.value, holder.person.insured_region_code)
        for position, card in enumerate(holder.cards):
            registered = cards[card.card_number]
            assert registered.social_security_number == holder.person.social_security_number
            assert (registered.kind, registered.status) == (card.kind.value, card.status.value)
            assert (registered.issue_date, registered.expiry_date) == (card.issue_date, card.expiry_date)
            assert registered.card_identification_code == card.card_identification_code
            expected_successor = holder.cards[position + 1].card_number if card.status.value == "replaced" else None
            assert registered.replaced_by == expected_successor
        current, prior = demo_balances(holder)
        balance = balances[holder.person.social_security_number]
        assert (balance.insurance_year, balance.current_year_fen, balance.prior_years_fen) == (
            BALANCE_YEAR, current, prior)
        if holder.person.insurance_type.value == "resident":
            assert (current, prior) == (0, 0)
        mine = [f for f in filings if f.social_security_number == holder.person.social_security_number]
        if holder.case in FILED_CASES:
            assert [(f.region_code, f.valid_from, f.valid_to) for f in mine] == [(FILING_REGION, FILING_FROM, None)]
        elif holder.index == EXPIRED_FILING_HOLDER:
            assert holder.case is Case.ZHEJIANG_UNFILED
            assert [(f.valid_from, f.valid_to) for f in mine] == [EXPIRED_FILING]
        else:
            assert mine == []
    employees = [b for b in balances.values() if persons[b.social_security_number].insurance_type != "resident"]
    assert any(b.current_year_fen == 0 for b in employees) and all(b.prior_years_fen > 0 for b in employees)
    assert set(problems.values()) == set(LookupProblem) - {LookupProblem.ID_MISTYPED}
    assert all(is_valid_id_number(number) and number not in persons for number in problems)
    assert first.tables["cards"].inserted == len(cards)
    second = write_demo_registry(migrated_engine)
    assert all(c.inserted == c.updated == 0 for c in second.tables.values()), second.summary()
    assert count(migrated_engine, Filing) == len(filings)


def test_the_demo_can_hold_fewer_persons_and_refuses_too_many(migrated_engine: Engine) -> None:
    report = write_demo_registry(migrated_engine, persons=20)
    assert report.tables["persons"].inserted == 20
    with pytest.raises(ValueError, match="demo persons"):
        write_demo_registry(migrated_engine, persons=MAX_DEMO_PERSONS + 1)


def test_the_population_has_distinct_id_numbers_up_to_the_demo_limit() -> None:
    numbers = [h.person.social_security_number for h in demo_population(MAX_DEMO_PERSONS)]
    assert len(set(numbers)) == len(numbers)
    assert not set(demo_lookup_problem_numbers().values()) & set(numbers)


# Facts for the rules --------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def demo_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One demo registry per database for the loader tests, which roll back whatever they change."""
    if request.param == "sqlite":
        url, admin = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'gateway.db'}", None
    else:
        import psycopg

        admin = str(request.getfixturevalue("postgres_admin"))
        name = f"gateway_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin.replace("+psycopg", ""), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        url = admin.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        write_demo_registry(engine)
        yield engine
    finally:
        engine.dispose()
        if admin is not None:
            with psycopg.connect(admin.replace("+psycopg", ""), autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def holder_of_case(case: Case) -> tuple[str, str]:
    holder = next(h for h in demo_population() if h.case is case)
    return holder.card.card_number, holder.person.social_security_number


def test_an_active_in_city_card(demo_db: Engine) -> None:
    holder = demo_population()[0]
    with Session(demo_db) as db:
        facts = load_registry_facts(db, "N00000001", holder.person.social_security_number)
    assert facts.card is not None and facts.person is not None and facts.lookup_problem is None
    assert (facts.card.kind, facts.card.status) == (CardKind.SOCIAL_SECURITY, CardStatus.ACTIVE)
    assert facts.card.social_security_number == holder.person.social_security_number
    assert facts.person.insured_region_code.startswith("3302") and facts.person.filings == ()
    assert facts.person.insurance_type is InsuranceType.EMPLOYEE_ACTIVE
    assert not facts.person.social_security_card_used


def test_a_replaced_card(demo_db: Engine) -> None:
    holder = next(h for h in demo_population() if h.case is Case.REPLACED)
    old, new = holder.cards
    with Session(demo_db) as db:
        facts = load_registry_facts(db, old.card_number, holder.person.social_security_number)
        replacement = load_registry_facts(db, new.card_number, holder.person.social_security_number)
    assert facts.card is not None and facts.card.status is CardStatus.REPLACED
    assert replacement.card is not None and replacement.card.status is CardStatus.ACTIVE


def test_an_old_ic_card_is_void_once_the_new_card_was_used(demo_db: Engine) -> None:
    holder = next(h for h in demo_population() if h.case is Case.OLD_IC_HOLDER)
    old_ic, new = holder.cards
    number = holder.person.social_security_number
    with Session(demo_db) as db:
        before = load_registry_facts(db, old_ic.card_number, number)
        # The old IC card's own use does not count: only a social security card's does.
        db.execute(update(Card).where(Card.card_number == old_ic.card_number).values(first_used_on=date(2009, 1, 1)))
        unchanged = load_registry_facts(db, old_ic.card_number, number)
        db.execute(update(Card).where(Card.card_number == new.card_number).values(first_used_on=date(2026, 3, 1)))
        after = load_registry_facts(db, old_ic.card_number, number)
    assert before.card is not None and before.card.kind is CardKind.OLD_MEDICAL_IC
    assert before.person is not None and not before.person.social_security_card_used
    assert unchanged.person is not None and not unchanged.person.social_security_card_used
    assert after.person is not None and after.person.social_security_card_used


def test_a_filed_holder_has_the_filing(demo_db: Engine) -> None:
    card_number, number = holder_of_case(Case.ZHEJIANG_FILED)
    expired_holder = demo_population()[EXPIRED_FILING_HOLDER]
    with Session(demo_db) as db:
        filed = load_registry_facts(db, card_number, number).person
        expired = load_registry_facts(db, expired_holder.card.card_number,
                                      expired_holder.person.social_security_number).person
    assert filed is not None and [(f.region_code, f.valid_from, f.valid_to) for f in filed.filings] == [
        (FILING_REGION, FILING_FROM, None)]
    assert filed.filings[0].covers(date(2026, 11, 24))
    assert expired is not None and not any(f.covers(date(2026, 11, 24)) for f in expired.filings)


def test_an_unregistered_card(demo_db: Engine) -> None:
    number = demo_population()[0].person.social_security_number
    with Session(demo_db) as db:
        facts = load_registry_facts(db, "N99999999", number)
    assert facts.card is None and facts.person is not None and facts.lookup_problem is None


def test_a_mistyped_id_number(demo_db: Engine) -> None:
    number = demo_population()[0].person.social_security_number
    mistyped = number[:17] + ("0" if number[17] != "0" else "1")
    with Session(demo_db) as db:
        facts = load_registry_facts(db, "N00000001", mistyped)
    assert facts.lookup_problem is LookupProblem.ID_MISTYPED and facts.person is None
    assert facts.card is not None


@pytest.mark.parametrize("problem", sorted(LOOKUP_PROBLEM_NOTES))
def test_each_lookup_problem(demo_db: Engine, problem: LookupProblem) -> None:
    number = demo_lookup_problem_numbers()[problem]
    with Session(demo_db) as db:
        facts = load_registry_facts(db, "N00000001", number)
    assert facts.lookup_problem is problem and facts.person is None


def test_a_lookup_problem_of_a_registered_person(demo_db: Engine) -> None:
    number = demo_population()[0].person.social_security_number
    with Session(demo_db) as db:
        db.add(LookupProblemEntry(id_number=number, problem="bank_account_changed"))
        db.flush()
        facts = load_registry_facts(db, "N00000001", number)
    assert facts.lookup_problem is LookupProblem.BANK_ACCOUNT_CHANGED and facts.person is not None


def test_institutions(demo_db: Engine) -> None:
    with Session(demo_db) as db:
        hospital = load_institution(db, "H33020300001")
        pharmacy = load_institution(db, "P33028200005")
        with pytest.raises(NotRegistered):
            load_institution(db, "H99999999999")
    assert (hospital.kind, hospital.level, hospital.region_code, hospital.cross_region_designated) == (
        InstitutionKind.HOSPITAL, InstitutionLevel.TERTIARY, "330203", True)
    assert (pharmacy.kind, pharmacy.level, pharmacy.cross_region_designated) == (InstitutionKind.PHARMACY, None, False)


def test_opening_balances(demo_db: Engine) -> None:
    holders = demo_population()
    with Session(demo_db) as db:
        for holder in holders[:20]:
            current, prior = demo_balances(holder)
            assert load_opening_balances(db, holder.person.social_security_number) == Balances(current, prior)
        assert load_opening_balances(db, NOBODY) == Balances(0, 0)


def test_registry_facts_are_plain_values(demo_db: Engine) -> None:
    """The rules get frozen values, usable after the session is gone."""
    holder = demo_population()[0]
    with Session(demo_db) as db:
        facts = load_registry_facts(db, "N00000001", holder.person.social_security_number)
    assert dataclasses.is_dataclass(facts) and facts.person is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.person.name = "x"  # type: ignore[misc]


def test_the_demo_command_takes_the_number_of_persons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli.main import main

    db = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["db", "upgrade", "--db", db]) == 0
    assert main(["registry", "demo", "--persons", "5", "--db", db]) == 0
    assert "persons: 5 new" in capsys.readouterr().out
    assert main(["registry", "demo", "--persons", str(MAX_DEMO_PERSONS + 1), "--db", db]) == 2
    assert "demo persons must be 0 to" in capsys.readouterr().err
