"""`gateway registry demo`: a consistent demo registry, written through the importer's checks.

Demo terminals all share the credential DEMO_CREDENTIAL (documented in the README); a production
registry gives every terminal its own secret. The insured persons and their cards come from
gateway.demo.population with its fixed seed, so the registry knows every virtual card the simulators
present, with the same number, holder and status.

Writing it again (every `make run` does) adds what is missing and leaves every registered row as it is:
what a card agency recorded since (a loss report, a replacement, a filing's end, a change of region) stays.
"""

from __future__ import annotations

import csv
import io
import random
from datetime import date

from sqlalchemy import Engine

from gateway.demo.population import (
    DEFAULT_PERSONS,
    DEFAULT_SEED,
    Case,
    DemoHolder,
    demo_population,
    make_id_number,
)
from gateway.money import format_fen
from gateway.registry.importer import ImportReport, OnRegistered, RowError, import_tables, read_table
from gateway.settlement.facts import CardStatus, FilingKind, InsuranceType, LookupProblem

DEMO_CREDENTIAL = "demo-secret"
# Enough for `gateway simulate` and the benchmark against `make run`'s registry as they are: 1,000 terminals at one
# institution, at four sessions per terminal id (the gateway's default server.max_sessions_per_terminal) on 250
# ids, the virtual-reader -03 one not counted.
DEFAULT_TERMINALS_PER_INSTITUTION = 251
MAX_TERMINALS_PER_INSTITUTION = 9999
# The population's ID numbers are checked unique up to this size (tests/test_registry_persons.py).
MAX_DEMO_PERSONS = 20_000

# code, name, region, kind, level, designated for cross-region settlement
DEMO_INSTITUTIONS: tuple[tuple[str, str, str, str, str, bool], ...] = (
    ("H33020300001", "宁波演示第一医院", "330203", "hospital", "tertiary", True),
    ("H33021200002", "鄞州演示人民医院", "330212", "hospital", "secondary", False),
    ("H33020500003", "江北演示社区卫生服务中心", "330205", "hospital", "community", True),
    ("P33020300004", "海曙演示大药房", "330203", "pharmacy", "", True),
    ("P33028200005", "慈溪演示药店", "330282", "pharmacy", "", False),
    ("K33020300006", "宁波演示自助服务终端", "330203", "kiosk", "", True),
    # Designated for cross-region settlement, so that its -03 terminal settles a filed holder from another
    # Zhejiang city with the PIN (the other cities' cards sit where they are refused: not designated, not filed).
    ("H33020600007", "北仑演示异地就医定点医院", "330206", "hospital", "secondary", True),
)


# Terminal -03 of each demo institution reads an in-process virtual card of the demo population
# (`virtual:CARD`); the others use their own reader at the counter, by APDU relay.
VIRTUAL_READER_TERMINAL = 3
DEMO_VIRTUAL_CARDS: tuple[str, ...] = (
    "N00000001",  # in Ningbo, no PIN
    "Z00000101",  # another Zhejiang city, filed: PIN 000000
    "N00000301",  # retired employee in Ningbo
    "Z00000401",  # another Zhejiang city, not filed
    "W00000701",  # outside the province
    "N00001101",  # reported lost
    "Z00002001",  # another Zhejiang city (Lishui), filed (transfer), at a designated institution: PIN 000000
)


def demo_reader(institution_index: int, number: int) -> str:
    if number == VIRTUAL_READER_TERMINAL:
        return f"virtual:{DEMO_VIRTUAL_CARDS[institution_index % len(DEMO_VIRTUAL_CARDS)]}"
    return "terminal"


def demo_terminal_id(institution_code: str, number: int) -> str:
    return f"{institution_code}-{number:02d}"


def demo_csv(terminals_per_institution: int = DEFAULT_TERMINALS_PER_INSTITUTION) -> tuple[str, str]:
    institutions = io.StringIO()
    writer = csv.writer(institutions, lineterminator="\n")
    writer.writerow(["code", "name", "region_code", "kind", "level", "cross_region_designated"])
    for code, name, region, kind, level, designated in DEMO_INSTITUTIONS:
        writer.writerow([code, name, region, kind, level, "true" if designated else "false"])
    terminals = io.StringIO()
    writer = csv.writer(terminals, lineterminator="\n")
    writer.writerow(["terminal_id", "institution_code", "credential", "enabled", "reader"])
    for index, (code, *_) in enumerate(DEMO_INSTITUTIONS):
        for number in range(1, terminals_per_institution + 1):
            writer.writerow([demo_terminal_id(code, number), code, DEMO_CREDENTIAL, "true", demo_reader(index, number)])
    return institutions.getvalue(), terminals.getvalue()


# Persons ---------------------------------------------------------------------------------------

# Holders of these cases are insured in another Zhejiang city and filed for care in Ningbo.
FILED_CASES = frozenset({Case.ZHEJIANG_FILED, Case.ZHEJIANG_PIN_CHANGED, Case.PIN_LOCKED})
FILING_REGION = "330200"
FILING_FROM = date(2025, 1, 1)
# The second not-filed holder (the first, Z00000401, holds no filing at all) has a filing that ended
# before the demo's reference day: still not filed, but through the expired-filing path.
EXPIRED_FILING_HOLDER = 23
EXPIRED_FILING = (date(2024, 1, 1), date(2024, 12, 31))
BALANCE_YEAR = 2026
# One ID number per stored look-up problem. Nobody in the population is born in 1961, so none of
# these numbers is a person of the registry.
LOOKUP_PROBLEM_NOTES: dict[LookupProblem, str] = {
    LookupProblem.NOT_COVERED: "demo: 不在参保范围",
    LookupProblem.ID_MISMATCH: "demo: 系统内身份证号码不一致",
    LookupProblem.BANK_ACCOUNT_CHANGED: "demo: 银行账户变更未登记",
    LookupProblem.ID_CHANGED: "demo: 身份证号码变更未登记",
    LookupProblem.GOVERNMENT_STAFF: "demo: 市级机关事业单位人员",
    LookupProblem.HMT_OR_FOREIGN: "demo: 港澳台及外籍人员",
    LookupProblem.MULTIPLE_ACCOUNTS: "demo: 一人多户",
    LookupProblem.DUPLICATE_ID: "demo: 身份证号码重复",
}


def demo_lookup_problem_numbers() -> dict[LookupProblem, str]:
    return {problem: make_id_number("330203", date(1961, 1, 1 + i), 101 + 2 * i)
            for i, problem in enumerate(LOOKUP_PROBLEM_NOTES)}


def demo_filings(holder: DemoHolder) -> list[tuple[FilingKind, str, date, date | None]]:
    if holder.case in FILED_CASES:
        kind = FilingKind.RESIDENCE if holder.index % 2 else FilingKind.TRANSFER
        return [(kind, FILING_REGION, FILING_FROM, None)]
    if holder.index == EXPIRED_FILING_HOLDER and holder.case is Case.ZHEJIANG_UNFILED:
        return [(FilingKind.TRANSFER, FILING_REGION, *EXPIRED_FILING)]
    return []


def demo_balances(holder: DemoHolder, seed: int = DEFAULT_SEED) -> tuple[int, int]:
    """(current-year, prior-years) opening balances in fen; residents have no personal account."""
    if holder.person.insurance_type == InsuranceType.RESIDENT:
        return 0, 0
    rng = random.Random(f"{seed}:balance:{holder.index}")
    current = 0 if holder.index % 7 == 3 else rng.randint(300_00, 3_000_00)  # some spent the year's account
    return current, rng.randint(200_00, 8_000_00)


def _csv(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def demo_person_csv(persons: int = DEFAULT_PERSONS) -> dict[str, str]:
    """The CSV files of the demo population: persons, cards, filings, lookup_problems, balances."""
    holders = demo_population(persons)
    person_rows, card_rows, filing_rows, balance_rows = [], [], [], []
    for holder in holders:
        person = holder.person
        person_rows.append([person.social_security_number, person.name, person.insurance_type.value,
                            person.insured_region_code])
        for position, card in enumerate(holder.cards):
            # A replaced card names the card that replaced it: the holder's next one.
            successor = holder.cards[position + 1].card_number if card.status is CardStatus.REPLACED else ""
            card_rows.append([card.card_number, person.social_security_number, card.kind.value, card.status.value,
                              card.issue_date.isoformat(), card.expiry_date.isoformat(),
                              card.card_identification_code, successor])
        for kind, region, valid_from, valid_to in demo_filings(holder):
            filing_rows.append([person.social_security_number, kind.value, region, valid_from.isoformat(),
                                valid_to.isoformat() if valid_to else ""])
        current, prior = demo_balances(holder)
        balance_rows.append([person.social_security_number, str(BALANCE_YEAR), format_fen(current), format_fen(prior)])
    numbers = demo_lookup_problem_numbers()
    return {
        "persons": _csv(["social_security_number", "name", "insurance_type", "insured_region_code"], person_rows),
        "cards": _csv(["card_number", "social_security_number", "kind", "status", "issue_date", "expiry_date",
                       "card_identification_code", "replaced_by"], card_rows),
        "filings": _csv(["social_security_number", "kind", "region_code", "valid_from", "valid_to"], filing_rows),
        "lookup_problems": _csv(["id_number", "problem", "note"],
                                [[numbers[p], p.value, note] for p, note in LOOKUP_PROBLEM_NOTES.items()]),
        "balances": _csv(["social_security_number", "insurance_year", "current_year", "prior_years"], balance_rows),
    }


def write_demo_registry(
    engine: Engine,
    terminals_per_institution: int = DEFAULT_TERMINALS_PER_INSTITUTION,
    persons: int = DEFAULT_PERSONS,
) -> ImportReport:
    if not 1 <= terminals_per_institution <= MAX_TERMINALS_PER_INSTITUTION:
        raise ValueError(f"terminals per institution must be 1 to {MAX_TERMINALS_PER_INSTITUTION}")
    if not 0 <= persons <= MAX_DEMO_PERSONS:
        raise ValueError(f"demo persons must be 0 to {MAX_DEMO_PERSONS}")
    institutions_csv, terminals_csv = demo_csv(terminals_per_institution)
    texts = {"institutions": institutions_csv, "terminals": terminals_csv, **demo_person_csv(persons)}
    errors: list[RowError] = []
    tables = [read_table(f"demo {name}", text, errors) for name, text in texts.items()]
    return import_tables(engine, [t for t in tables if t is not None], errors, OnRegistered.KEEP)
