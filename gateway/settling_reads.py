"""Everything a request needs from the database, read on one connection with plain SQL.

The same facts as gateway.registry.facts and gateway.ledger.reads, fetched in one thread hop: this runs
for every settlement, and each ORM round trip held the interpreter for a fraction of a millisecond that
the reactor then waited for.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Engine, Table, select

from gateway.ledger import accounts
from gateway.ledger.models import LedgerAccount, RequestRecord, YearTotal
from gateway.ledger.reads import StoredRequest
from gateway.reader.card import is_valid_id_number
from gateway.registry.models import Card, Filing, Institution, LookupProblemEntry, OpeningBalance, Person
from gateway.settlement import facts

CARDS = cast(Table, Card.__table__)
PERSONS = cast(Table, Person.__table__)
FILINGS = cast(Table, Filing.__table__)
PROBLEMS = cast(Table, LookupProblemEntry.__table__)
INSTITUTIONS = cast(Table, Institution.__table__)
OPENINGS = cast(Table, OpeningBalance.__table__)
ACCOUNTS = cast(Table, LedgerAccount.__table__)
YEAR_TOTALS = cast(Table, YearTotal.__table__)
RECORDS = cast(Table, RequestRecord.__table__)

State = tuple[facts.RegistryFacts, facts.Institution, facts.Balances, facts.YearToDate]


class NotRegistered(LookupError):
    pass


def load_state(engine: Engine, institution_code: str, card_number: str, ssn: str, year: int,
               request_key: tuple[str, str] | None = None) -> tuple[StoredRequest | None, State | None]:
    """The stored outcome of `request_key` if there is one (then nothing else is read); else the facts."""
    with engine.connect() as conn:
        if request_key is not None:
            row = conn.execute(select(RECORDS.c.outcome, RECORDS.c.content_hash, RECORDS.c.response).where(
                RECORDS.c.terminal_id == request_key[0], RECORDS.c.message_id == request_key[1])).first()
            if row is not None:
                return StoredRequest(row.outcome, row.content_hash, row.response), None
        card = conn.execute(select(CARDS).where(CARDS.c.card_number == card_number)).mappings().first()
        institution = conn.execute(select(INSTITUTIONS).where(
            INSTITUTIONS.c.code == institution_code)).mappings().first()
        if institution is None:
            raise NotRegistered(f"institution {institution_code} is not registered")
        place = facts.Institution(institution["code"], institution["region_code"],
                                  facts.InstitutionKind(institution["kind"]),
                                  facts.InstitutionLevel(institution["level"]) if institution["level"] else None,
                                  institution["cross_region_designated"])
        card_record = None if card is None else facts.CardRecord(
            card["card_number"], card["social_security_number"], facts.CardKind(card["kind"]),
            facts.CardStatus(card["status"]), card["issue_date"], card["expiry_date"], card["first_used_on"])
        if not is_valid_id_number(ssn):
            registry = facts.RegistryFacts(card_record, None, facts.LookupProblem.ID_MISTYPED)
            return None, (registry, place, facts.Balances(), facts.YearToDate())
        problem = conn.execute(select(PROBLEMS.c.problem).where(PROBLEMS.c.id_number == ssn)).scalar()
        person = conn.execute(select(PERSONS).where(PERSONS.c.social_security_number == ssn)).mappings().first()
        person_record = None
        if person is not None:
            filings = conn.execute(select(FILINGS.c.kind, FILINGS.c.region_code, FILINGS.c.valid_from,
                                          FILINGS.c.valid_to).where(FILINGS.c.social_security_number == ssn)
                                   .order_by(FILINGS.c.valid_from, FILINGS.c.id)).all()
            used = conn.execute(select(CARDS.c.card_number).where(
                CARDS.c.social_security_number == ssn, CARDS.c.kind == facts.CardKind.SOCIAL_SECURITY.value,
                CARDS.c.first_used_on.is_not(None)).limit(1)).first()
            person_record = facts.PersonRecord(
                ssn, person["name"], facts.InsuranceType(person["insurance_type"]), person["insured_region_code"],
                tuple(facts.Filing(facts.FilingKind(f.kind), f.region_code, f.valid_from, f.valid_to)
                      for f in filings),
                used is not None)
        registry = facts.RegistryFacts(card_record, person_record,
                                       facts.LookupProblem(problem) if problem is not None else None)
        current, prior = accounts.person_current_year(ssn).code, accounts.person_prior_years(ssn).code
        found = {code: balance for code, balance in conn.execute(
            select(ACCOUNTS.c.code, ACCOUNTS.c.balance_fen).where(ACCOUNTS.c.code.in_([current, prior])))}
        if found:
            balances = facts.Balances(found.get(current, 0), found.get(prior, 0))
        else:
            opening = conn.execute(select(OPENINGS.c.current_year_fen, OPENINGS.c.prior_years_fen).where(
                OPENINGS.c.social_security_number == ssn)).first()
            balances = facts.Balances(opening[0], opening[1]) if opening else facts.Balances()
        totals = conn.execute(select(YEAR_TOTALS.c.deductible_counted_fen, YEAR_TOTALS.c.pooled_fund_paid_fen).where(
            YEAR_TOTALS.c.social_security_number == ssn, YEAR_TOTALS.c.insurance_year == year)).first()
        ytd = facts.YearToDate(totals[0], totals[1]) if totals else facts.YearToDate()
        return None, (registry, place, balances, ytd)
