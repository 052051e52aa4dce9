"""What the registry says about a card, its holder, an institution and opening balances, as the plain
values of gateway.settlement.facts.

Blocking: the server runs these in its database thread pool, each within a session it owns.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.reader.card import is_valid_id_number
from gateway.registry.models import Card, Filing, Institution, LookupProblemEntry, OpeningBalance, Person
from gateway.settlement import facts


class NotRegistered(LookupError):
    """A record the caller was sure exists (e.g. the institution of a signed-in terminal) does not."""


def load_registry_facts(session: Session, card_number: str, social_security_number: str) -> facts.RegistryFacts:
    """The card as registered, and the person under `social_security_number` (as the chip gives it)."""
    card = session.get(Card, card_number)
    if not is_valid_id_number(social_security_number):
        # A mistyped number is nobody: no look-up can find a person or a known problem under it.
        return facts.RegistryFacts(card=_card_record(card), person=None, lookup_problem=facts.LookupProblem.ID_MISTYPED)
    entry = session.get(LookupProblemEntry, social_security_number)
    return facts.RegistryFacts(
        card=_card_record(card),
        person=_person_record(session, social_security_number),
        lookup_problem=facts.LookupProblem(entry.problem) if entry is not None else None,
    )


def load_institution(session: Session, code: str) -> facts.Institution:
    institution = session.get(Institution, code)
    if institution is None:
        raise NotRegistered(f"institution {code} is not registered")
    return facts.Institution(
        code=institution.code,
        region_code=institution.region_code,
        kind=facts.InstitutionKind(institution.kind),
        level=facts.InstitutionLevel(institution.level) if institution.level else None,
        cross_region_designated=institution.cross_region_designated,
    )


def load_opening_balances(session: Session, social_security_number: str) -> facts.Balances:
    """The opening balances, in fen; a person without a row has none (0 and 0)."""
    balance = session.get(OpeningBalance, social_security_number)
    if balance is None:
        return facts.Balances()
    return facts.Balances(current_year_fen=balance.current_year_fen, prior_years_fen=balance.prior_years_fen)


def _card_record(card: Card | None) -> facts.CardRecord | None:
    if card is None:
        return None
    return facts.CardRecord(
        card_number=card.card_number,
        social_security_number=card.social_security_number,
        kind=facts.CardKind(card.kind),
        status=facts.CardStatus(card.status),
        issue_date=card.issue_date,
        expiry_date=card.expiry_date,
        first_used_on=card.first_used_on,
    )


def _person_record(session: Session, social_security_number: str) -> facts.PersonRecord | None:
    person = session.get(Person, social_security_number)
    if person is None:
        return None
    filings = session.scalars(
        select(Filing).where(Filing.social_security_number == social_security_number)
        .order_by(Filing.valid_from, Filing.id)
    )
    used = session.scalar(
        select(Card.card_number).where(
            Card.social_security_number == social_security_number,
            Card.kind == facts.CardKind.SOCIAL_SECURITY.value,
            Card.first_used_on.is_not(None),
        ).limit(1)
    )
    return facts.PersonRecord(
        social_security_number=person.social_security_number,
        name=person.name,
        insurance_type=facts.InsuranceType(person.insurance_type),
        insured_region_code=person.insured_region_code,
        filings=tuple(
            facts.Filing(kind=facts.FilingKind(f.kind), region_code=f.region_code, valid_from=f.valid_from,
                         valid_to=f.valid_to)
            for f in filings
        ),
        social_security_card_used=used is not None,
    )
