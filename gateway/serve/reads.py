"""Everything a request needs from the database, in one statement (two when the holder has filings to read).

The registry's facts (card, holder, institution, opening balances), the ledger's balances and year totals, as the
plain values of gateway.settlement.facts, and what the ledger records under the request's key (so that a PreSettle
under a recorded id is answered from the record before its rules and PIN at no extra cost), fetched as scalar
subqueries of one SELECT: each statement costs the interpreter a fraction of a millisecond whatever it reads. The
agency commands and the tests read the registry through the same statement (load_registry_facts and friends).

Blocking: the server runs these in its database thread pool.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Integer, String, Table, bindparam, cast, exists, literal, select
from sqlalchemy.orm import Session

from gateway.identity import is_valid_id_number
from gateway.ledger import accounts
from gateway.ledger.records import Recorded
from gateway.ledger.tables import ACCOUNTS, RECORDS, YEAR_TOTALS
from gateway.regions import city_prefix
from gateway.registry.tables import (
    CARDS,
    FILINGS,
    INSTITUTIONS,
    LOOKUP_PROBLEMS,
    OPENING_BALANCES,
    PERSONS,
    REGISTRY_VERSION,
)
from gateway.settlement import facts


class NotRegistered(LookupError):
    """A record the caller was sure exists (e.g. the institution of a signed-in terminal) does not."""


State = tuple[facts.RegistryFacts, facts.Institution, facts.Balances, facts.YearToDate]


def _one(table: Table, column: str, **where: Any) -> Any:
    condition = [table.c[name] == value for name, value in where.items()]
    return select(table.c[column]).where(*condition).limit(1).scalar_subquery().label(f"{table.name}_{column}")


def _statement() -> Any:
    """Built once: every request runs the same statement with its own parameters (cheap to execute)."""
    card_number, institution_code = bindparam("card_number", type_=String), bindparam("institution_code", type_=String)
    ssn, year = bindparam("ssn", type_=String), bindparam("year", type_=Integer)
    terminal_id, message_id = bindparam("terminal_id", type_=String), bindparam("message_id", type_=String)
    # The ledger knows the holder by the registry's person id, found here from the chip's ID number: the holder's
    # account codes (gateway.ledger.accounts) are built from it in SQL, so the statement stays one.
    person = select(PERSONS.c.person_id).where(PERSONS.c.social_security_number == ssn).scalar_subquery()
    current, prior = (literal(accounts.PERSON_PREFIX) + cast(person, String) + literal(suffix)
                      for suffix in (accounts.CURRENT_YEAR_SUFFIX, accounts.PRIOR_YEARS_SUFFIX))
    return select(
        *(_one(CARDS, c, card_number=card_number) for c in ("social_security_number", "kind", "status", "issue_date",
                                                             "expiry_date", "first_used_on")),
        *(_one(INSTITUTIONS, c, code=institution_code) for c in ("code", "region_code", "kind", "level",
                                                                  "cross_region_designated")),
        *(_one(PERSONS, c, social_security_number=ssn) for c in ("social_security_number", "person_id", "name",
                                                                  "insurance_type", "insured_region_code")),
        _one(LOOKUP_PROBLEMS, "problem", id_number=ssn),
        select(ACCOUNTS.c.balance_fen).where(ACCOUNTS.c.code == current).scalar_subquery().label("current"),
        select(ACCOUNTS.c.balance_fen).where(ACCOUNTS.c.code == prior).scalar_subquery().label("prior"),
        _one(OPENING_BALANCES, "current_year_fen", social_security_number=ssn),
        _one(OPENING_BALANCES, "prior_years_fen", social_security_number=ssn),
        _one(YEAR_TOTALS, "deductible_counted_fen", person_id=person, insurance_year=year),
        _one(YEAR_TOTALS, "pooled_fund_paid_fen", person_id=person, insurance_year=year),
        exists().where(CARDS.c.social_security_number == ssn, CARDS.c.kind == facts.CardKind.SOCIAL_SECURITY.value,
                       CARDS.c.first_used_on.is_not(None)).label("used"),
        *(_one(RECORDS, c, terminal_id=terminal_id, message_id=message_id)
          for c in ("outcome", "content_hash", "recorded_outcome")),
    )


STATEMENT = _statement()


def _parameters(institution_code: str, card_number: str, ssn: str, year: int, terminal_id: str = "",
                message_id: str = "") -> dict[str, Any]:
    return {"card_number": card_number, "institution_code": institution_code, "ssn": ssn, "year": year,
            "terminal_id": terminal_id, "message_id": message_id}


def _registry(conn: Connection, row: Any, card_number: str, ssn: str, city: str | None) -> facts.RegistryFacts:
    """The registry's part of a row of STATEMENT. Filings are read only for a holder from outside `city` (all of
    them when `city` is None): only then do they matter."""
    card = None if row["cards_kind"] is None else facts.CardRecord(
        card_number, row["cards_social_security_number"], facts.CardKind(row["cards_kind"]),
        facts.CardStatus(row["cards_status"]), row["cards_issue_date"], row["cards_expiry_date"],
        row["cards_first_used_on"])
    if not is_valid_id_number(ssn):
        # A mistyped number is nobody: no look-up can find a person or a known problem under it.
        return facts.RegistryFacts(card, None, facts.LookupProblem.ID_MISTYPED)
    person = None
    if row["persons_social_security_number"] is not None:
        region = row["persons_insured_region_code"]
        filings: tuple[facts.Filing, ...] = ()
        if city is None or city_prefix(region) != city:
            filings = tuple(facts.Filing(facts.FilingKind(f.kind), f.region_code, f.valid_from, f.valid_to)
                            for f in conn.execute(select(FILINGS.c.kind, FILINGS.c.region_code,
                                                         FILINGS.c.valid_from, FILINGS.c.valid_to)
                                                  .where(FILINGS.c.social_security_number == ssn)
                                                  .order_by(FILINGS.c.valid_from, FILINGS.c.id)))
        person = facts.PersonRecord(ssn, row["persons_person_id"], row["persons_name"],
                                    facts.InsuranceType(row["persons_insurance_type"]),
                                    region, filings, bool(row["used"]))
    problem = row["lookup_problems_problem"]
    return facts.RegistryFacts(card, person, facts.LookupProblem(problem) if problem is not None else None)


def read_registry_facts(conn: Connection, card_number: str, ssn: str) -> facts.RegistryFacts:
    """The registry's facts alone (the same statement as a request's)."""
    row = conn.execute(STATEMENT, _parameters("", card_number, ssn, 0)).mappings().one()
    return _registry(conn, row, card_number, ssn, None)


def _institution(row: Any, institution_code: str) -> facts.Institution:
    if row["institutions_code"] is None:
        raise NotRegistered(f"institution {institution_code} is not registered")
    return facts.Institution(institution_code, row["institutions_region_code"],
                             facts.InstitutionKind(row["institutions_kind"]),
                             facts.InstitutionLevel(row["institutions_level"]) if row["institutions_level"] else None,
                             bool(row["institutions_cross_region_designated"]))


def read_request_registry(engine: Engine, institution_code: str, card_number: str, ssn: str
                          ) -> tuple[facts.RegistryFacts, facts.Institution, int]:
    """The registry's facts a request decides on, with the registry's version read before them (for
    gateway.serve.registry_cache). On PostgreSQL each statement sees its own snapshot, so the facts are at least
    as new as that version: a change in between only makes the cache drop them once more."""
    with engine.connect() as conn, conn.begin():
        version = read_registry_version(conn)
        row = conn.execute(STATEMENT, _parameters(institution_code, card_number, ssn, 0)).mappings().one()
        place = _institution(row, institution_code)
        return _registry(conn, row, card_number, ssn, None), place, version


def read_registry_version(conn: Connection) -> int:
    version: int = conn.execute(select(REGISTRY_VERSION.c.version).where(REGISTRY_VERSION.c.id == 1)).scalar_one()
    return version


def load_state(engine: Engine, institution_code: str, card_number: str, ssn: str, year: int) -> State:
    """The facts the rules decide on, balances and year-to-date totals as the database has them now."""
    state, _ = load_state_and_record(engine, institution_code, card_number, ssn, year, "", "")
    return state


def load_state_and_record(engine: Engine, institution_code: str, card_number: str, ssn: str, year: int,
                          terminal_id: str, message_id: str) -> tuple[State, Recorded | None]:
    """load_state's facts, and what the ledger records under (terminal_id, message_id), in the same statement."""
    with engine.connect() as conn:
        row = conn.execute(STATEMENT, _parameters(institution_code, card_number, ssn, year, terminal_id,
                                                  message_id)).mappings().one()
        place = _institution(row, institution_code)
        registry = _registry(conn, row, card_number, ssn, city_prefix(place.region_code))
    recorded = None if row["request_records_outcome"] is None else Recorded.from_row({
        "outcome": row["request_records_outcome"], "content_hash": row["request_records_content_hash"],
        "recorded_outcome": row["request_records_recorded_outcome"]})
    return _state(row, registry, place), recorded


def _state(row: Any, registry: facts.RegistryFacts, place: facts.Institution) -> State:
    if registry.lookup_problem is facts.LookupProblem.ID_MISTYPED:
        return registry, place, facts.Balances(), facts.YearToDate()
    if row["current"] is not None or row["prior"] is not None:
        balances = facts.Balances(row["current"] or 0, row["prior"] or 0)
    else:
        balances = facts.Balances(row["opening_balances_current_year_fen"] or 0,
                                  row["opening_balances_prior_years_fen"] or 0)
    ytd = facts.YearToDate(row["year_totals_deductible_counted_fen"] or 0, row["year_totals_pooled_fund_paid_fen"] or 0)
    return registry, place, balances, ytd


def load_registry_facts(session: Session, card_number: str, social_security_number: str) -> facts.RegistryFacts:
    """The card as registered, and the person under `social_security_number` (as the chip gives it), as the
    registry stands within `session` (what it changed included)."""
    session.flush()
    return read_registry_facts(session.connection(), card_number, social_security_number)


def load_institution(session: Session, code: str) -> facts.Institution:
    session.flush()
    row = session.connection().execute(STATEMENT, _parameters(code, "", "", 0)).mappings().one()
    return _institution(row, code)


def load_opening_balances(session: Session, social_security_number: str) -> facts.Balances:
    """The opening balances, in fen; a person without a row has none (0 and 0)."""
    session.flush()
    row = session.connection().execute(STATEMENT, _parameters("", "", social_security_number, 0)).mappings().one()
    return facts.Balances(row["opening_balances_current_year_fen"] or 0, row["opening_balances_prior_years_fen"] or 0)
