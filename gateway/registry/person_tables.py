"""Registry files about insured persons: persons, cards, filings, lookup_problems, balances.

Each is parsed and checked row by row, then cross-checked against the other files of the same import
and the database (check_person_references), then written persons first, since cards, filings and
balances reference them.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.identity import CARD_NUMBER, mask_id
from gateway.money import AmountError, parse_yuan_to_fen
from gateway.reader.card import IDENTIFICATION_CODE_FORM, is_identification_code
from gateway.regions import city_prefix
from gateway.registry.cells import (
    OnRegistered,
    ParsedTable,
    RowError,
    RowProblem,
    TableCounts,
    TableSpec,
    optional,
    parse_choice,
    parse_current_region,
    parse_date,
    parse_id_number,
    require,
    row_by_row,
    rows_with_keys,
    update_existing,
    upsert,
)
from gateway.registry.models import (
    MAX_NOTE_CHARS,
    MAX_PERSON_NAME_CHARS,
    Card,
    Filing,
    LookupProblemEntry,
    OpeningBalance,
    Person,
)
from gateway.settlement.calendar import FIRST_INSURANCE_YEAR, LAST_INSURANCE_YEAR
from gateway.settlement.facts import CardKind, CardStatus, FilingKind, InsuranceType, LookupProblem

STORED_LOOKUP_PROBLEMS = tuple(p.value for p in LookupProblem if p is not LookupProblem.ID_MISTYPED)


# Row parsers ----------------------------------------------------------------------------------


def parse_card_number(column: str, text: str) -> str:
    if not CARD_NUMBER.fullmatch(text):
        raise RowProblem(f"{column} {text!r} must be 9 capital letters or digits, e.g. N00000001")
    return text


def _parse_person(row: dict[str, str]) -> dict[str, Any]:
    name = require(row, "name")
    if len(name) > MAX_PERSON_NAME_CHARS:
        raise RowProblem(f"name is longer than {MAX_PERSON_NAME_CHARS} characters")
    return {
        "social_security_number": parse_id_number("social_security_number", require(row, "social_security_number")),
        "name": name,
        "insurance_type": parse_choice("insurance_type", require(row, "insurance_type"),
                                       (t.value for t in InsuranceType)),
        "insured_region_code": parse_current_region("insured_region_code", require(row, "insured_region_code")),
    }


def _parse_card(row: dict[str, str]) -> dict[str, Any]:
    card_number = parse_card_number("card_number", require(row, "card_number"))
    status = parse_choice("status", require(row, "status"), (s.value for s in CardStatus))
    issue_date = parse_date("issue_date", require(row, "issue_date"))
    expiry_date = parse_date("expiry_date", require(row, "expiry_date"))
    if issue_date > expiry_date:
        raise RowProblem(f"issue_date {issue_date} is after expiry_date {expiry_date}")
    identification = optional(row, "card_identification_code")
    if identification is not None:
        identification = identification.upper()
        if not is_identification_code(identification):
            raise RowProblem(f"card_identification_code {identification!r} must be {IDENTIFICATION_CODE_FORM}")
    replaced_by = optional(row, "replaced_by")
    if replaced_by is not None:
        parse_card_number("replaced_by", replaced_by)
        if status != CardStatus.REPLACED:
            raise RowProblem(f"replaced_by is given but status is {status}: only a replaced card names its successor")
        if replaced_by == card_number:
            raise RowProblem("replaced_by names the card itself")
    return {
        "card_number": card_number,
        "social_security_number": parse_id_number("social_security_number", require(row, "social_security_number")),
        "card_identification_code": identification,
        "kind": parse_choice("kind", require(row, "kind"), (k.value for k in CardKind)),
        "status": status,
        "issue_date": issue_date,
        "expiry_date": expiry_date,
        "replaced_by": replaced_by,
    }


def _parse_filing(row: dict[str, str]) -> dict[str, Any]:
    valid_from = parse_date("valid_from", require(row, "valid_from"))
    valid_to_text = optional(row, "valid_to")
    valid_to = None if valid_to_text is None else parse_date("valid_to", valid_to_text)
    if valid_to is not None and valid_to < valid_from:
        raise RowProblem(f"valid_to {valid_to} is before valid_from {valid_from}")
    return {
        "social_security_number": parse_id_number("social_security_number", require(row, "social_security_number")),
        "kind": parse_choice("kind", require(row, "kind"), (k.value for k in FilingKind)),
        "region_code": parse_current_region("region_code", require(row, "region_code")),
        "valid_from": valid_from,
        "valid_to": valid_to,
    }


def _parse_lookup_problem(row: dict[str, str]) -> dict[str, Any]:
    problem = require(row, "problem").lower()
    if problem == LookupProblem.ID_MISTYPED:
        raise RowProblem("problem id_mistyped is never stored: the gateway recognises a mistyped number "
                         "by its check digit")
    note = optional(row, "note")
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise RowProblem(f"note is longer than {MAX_NOTE_CHARS} characters")
    return {
        # A number failing its check digit would always be reported as mistyped, never as this problem.
        "id_number": parse_id_number("id_number", require(row, "id_number")),
        "problem": parse_choice("problem", problem, STORED_LOOKUP_PROBLEMS),
        "note": note,
    }


def _parse_balance(row: dict[str, str]) -> dict[str, Any]:
    year_text = require(row, "insurance_year")
    if not re.fullmatch(r"[0-9]{4}", year_text) or not FIRST_INSURANCE_YEAR <= int(year_text) <= LAST_INSURANCE_YEAR:
        raise RowProblem(f"insurance_year {year_text!r} must be a year from {FIRST_INSURANCE_YEAR} "
                         f"to {LAST_INSURANCE_YEAR}")
    amounts = {}
    for column in ("current_year", "prior_years"):
        try:
            amounts[f"{column}_fen"] = parse_yuan_to_fen(require(row, column))
        except AmountError as exc:
            raise RowProblem(f"{column}: {exc}") from exc
    return {
        "social_security_number": parse_id_number("social_security_number", require(row, "social_security_number")),
        "insurance_year": int(year_text),
        **amounts,
    }


# Writers --------------------------------------------------------------------------------------


def _write_person(session: Session, record: dict[str, Any], counts: TableCounts,
                  on_registered: OnRegistered) -> None:
    upsert(session, Person, record["social_security_number"], record, counts, on_registered)


def _write_lookup_problem(session: Session, record: dict[str, Any], counts: TableCounts,
                          on_registered: OnRegistered) -> None:
    upsert(session, LookupProblemEntry, record["id_number"], record, counts, on_registered)


def _write_balance(session: Session, record: dict[str, Any], counts: TableCounts,
                   on_registered: OnRegistered) -> None:
    upsert(session, OpeningBalance, record["social_security_number"], record, counts, on_registered)


def _write_filing(session: Session, record: dict[str, Any], counts: TableCounts,
                  on_registered: OnRegistered) -> None:
    existing = session.scalars(select(Filing).where(
        Filing.social_security_number == record["social_security_number"], Filing.kind == record["kind"],
        Filing.region_code == record["region_code"], Filing.valid_from == record["valid_from"],
    )).one_or_none()
    if existing is None:
        session.add(Filing(**record))
        counts.inserted += 1
    else:
        update_existing(existing, record, counts, on_registered)


def _write_cards(session: Session, table: ParsedTable, counts: TableCounts, on_registered: OnRegistered) -> None:
    """Write a replacement card before the card it replaced names it (replaced_by is a foreign key).

    Within one flush SQLAlchemy emits UPDATEs before INSERTs, so the cards go in rounds: first those
    naming no card of this file, then those naming a card of the previous round, flushing in between.
    check_person_references has ruled out cycles.
    """
    links = {r["card_number"]: r["replaced_by"] for r in table.records()}
    rounds: dict[int, list[dict[str, Any]]] = {}
    for record in table.records():
        depth, successor = 0, record["replaced_by"]
        while successor in links:
            depth, successor = depth + 1, links[successor]
        rounds.setdefault(depth, []).append(record)
    # Depth 0 names no card of this file (the newest of its chain): its round goes first.
    for depth in sorted(rounds):
        for record in rounds[depth]:
            upsert(session, Card, record["card_number"], record, counts, on_registered)
        session.flush()


PERSONS = TableSpec(
    name="persons",
    required_columns=frozenset({"social_security_number", "name", "insurance_type", "insured_region_code"}),
    optional_columns=frozenset(),
    key_columns=("social_security_number",),
    parse_row=_parse_person,
    write=row_by_row(_write_person),
    order=30,
)
LOOKUP_PROBLEMS = TableSpec(
    name="lookup_problems",
    required_columns=frozenset({"id_number", "problem"}),
    optional_columns=frozenset({"note"}),
    key_columns=("id_number",),
    parse_row=_parse_lookup_problem,
    write=row_by_row(_write_lookup_problem),
    order=30,
)
CARDS = TableSpec(
    name="cards",
    required_columns=frozenset({"card_number", "social_security_number", "kind", "status", "issue_date",
                                "expiry_date"}),
    optional_columns=frozenset({"card_identification_code", "replaced_by"}),
    key_columns=("card_number",),
    parse_row=_parse_card,
    write=_write_cards,
    order=40,
)
FILINGS = TableSpec(
    name="filings",
    required_columns=frozenset({"social_security_number", "kind", "region_code", "valid_from"}),
    optional_columns=frozenset({"valid_to"}),
    # Filings have no key of their own: the same person, kind, region and start is the same filing.
    key_columns=("social_security_number", "kind", "region_code", "valid_from"),
    parse_row=_parse_filing,
    write=row_by_row(_write_filing),
    order=50,
)
BALANCES = TableSpec(
    name="balances",
    required_columns=frozenset({"social_security_number", "insurance_year", "current_year", "prior_years"}),
    optional_columns=frozenset(),
    key_columns=("social_security_number",),
    parse_row=_parse_balance,
    write=row_by_row(_write_balance),
    order=50,
)
PERSON_TABLE_SPECS: tuple[TableSpec, ...] = (PERSONS, CARDS, FILINGS, LOOKUP_PROBLEMS, BALANCES)


# Cross-references -----------------------------------------------------------------------------


def check_person_references(
    session: Session, by_name: dict[str, ParsedTable], on_registered: OnRegistered = OnRegistered.UPDATE
) -> list[RowError]:
    """Every card, filing and balance names a person in the files or the registry; replacement cards exist
    and belong to the same person; a filing is for care outside the person's own city.

    The person's city is the one they are insured in after the import: the registry's where it keeps its
    registered rows (OnRegistered.KEEP), else the files'. A filing that is kept as registered is not checked
    again: the import does not write it.
    """
    errors: list[RowError] = []
    persons = by_name.get("persons")
    insured_region = {r["social_security_number"]: r["insured_region_code"] for r in persons.records()} \
        if persons else {}
    referencing = [t for t in (by_name.get(n) for n in ("cards", "filings", "balances")) if t is not None]
    wanted = {r["social_security_number"] for t in referencing for r in t.records()}
    if on_registered is OnRegistered.UPDATE:
        wanted -= insured_region.keys()
    for number, region in rows_with_keys(session, (Person.social_security_number, Person.insured_region_code),
                                         Person.social_security_number, wanted):
        insured_region[number] = region
    filings = by_name.get("filings")
    kept_filings = _registered_filings(session, filings) if filings and on_registered is OnRegistered.KEEP \
        else set()
    for table in referencing:
        for line, record in table.rows:
            number = record["social_security_number"]
            if number not in insured_region:
                errors.append(RowError(table.source, line, f"social_security_number {mask_id(number)} is in "
                                                           "neither the persons file nor the registry"))
            elif table.spec is FILINGS and FILINGS.key_of(record) not in kept_filings \
                    and city_prefix(record["region_code"]) == city_prefix(insured_region[number]):
                errors.append(RowError(table.source, line, f"region_code {record['region_code']!r} is in the "
                                       f"person's own insured city ({insured_region[number]}): a filing is for "
                                       "care elsewhere"))
    cards = by_name.get("cards")
    if cards is not None:
        errors.extend(_check_replacements(session, cards))
    return errors


def _registered_filings(session: Session, filings: ParsedTable) -> set[tuple[Any, ...]]:
    """The keys (FILINGS.key_columns) of the registered filings of the file's persons."""
    key = (Filing.social_security_number, Filing.kind, Filing.region_code, Filing.valid_from)
    return set(rows_with_keys(session, key, Filing.social_security_number,
                              {r["social_security_number"] for r in filings.records()}))


def _check_replacements(session: Session, cards: ParsedTable) -> list[RowError]:
    errors: list[RowError] = []
    holder = {r["card_number"]: r["social_security_number"] for r in cards.records()}
    links = {r["card_number"]: r["replaced_by"] for r in cards.records() if r["replaced_by"]}
    for number, person in rows_with_keys(session, (Card.card_number, Card.social_security_number), Card.card_number,
                                         set(links.values()) - holder.keys()):
        holder[number] = person
    for line, record in cards.rows:
        successor = record["replaced_by"]
        if successor is None:
            continue
        if successor not in holder:
            errors.append(RowError(cards.source, line,
                                   f"replaced_by {successor!r} is in neither the cards file nor the registry"))
        elif holder[successor] != record["social_security_number"]:
            errors.append(RowError(cards.source, line, f"replaced_by {successor!r} is another person's card"))
        elif _goes_round(record["card_number"], links):
            errors.append(RowError(cards.source, line,
                                   f"replaced_by {successor!r}: the chain of replacements goes round in a circle"))
    return errors


def _goes_round(card_number: str, links: dict[str, str]) -> bool:
    """Whether following replaced_by from this card ever visits a card twice."""
    seen = {card_number}
    successor = links.get(card_number)
    while successor is not None:
        if successor in seen:
            return True
        seen.add(successor)
        successor = links.get(successor)
    return False
