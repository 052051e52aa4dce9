"""Card agency operations on the registry (`gateway agency ...`), DESIGN.md 3.1 items 5 and 7.

Each function changes the registry inside the caller's transaction and returns a sentence saying what
it did, with ID numbers masked. A request that cannot apply to the record as it stands raises
AgencyRefused; a malformed argument raises ValueError. An operation that would change nothing is
refused too: it usually means the wrong card or person was typed.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.identity import mask_id
from gateway.reader.card import IDENTIFICATION_CODE_FORM, is_identification_code
from gateway.regions import city_prefix
from gateway.registry.cells import parse_current_region, parse_id_number
from gateway.registry.models import Card, Filing, Person
from gateway.registry.person_tables import parse_card_number
from gateway.settlement.facts import CardKind, CardStatus, FilingKind


class AgencyRefused(Exception):
    """The operation does not apply to the card or person as registered; the message says why."""


def report_lost(session: Session, card_number: str) -> str:
    """A phoned-in loss report: the card is refused until the report is lifted or the card replaced."""
    card = _card(session, card_number)
    if card.status != CardStatus.ACTIVE:
        raise AgencyRefused(f"card {card.card_number} cannot be reported lost: {_status_text(card)}")
    card.status = CardStatus.LOST_REPORTED.value
    return (f"card {card.card_number} of {mask_id(card.social_security_number)} reported lost: "
            "it is refused until the report is lifted or the card is replaced")


def lift_report(session: Session, card_number: str) -> str:
    """The holder came back with ID and card: the card settles again."""
    card = _card(session, card_number)
    if card.status != CardStatus.LOST_REPORTED:
        raise AgencyRefused(f"card {card.card_number} has no loss report to lift: {_status_text(card)}")
    card.status = CardStatus.ACTIVE.value
    return f"loss report of card {card.card_number} of {mask_id(card.social_security_number)} lifted: it is active"


def replace_card(
    session: Session,
    card_number: str,
    new_card_number: str,
    issue_date: date,
    expiry_date: date,
    identification_code: str | None = None,
) -> str:
    """A new social security card for the same person; the old one is refused forever."""
    parse_card_number("new card number", new_card_number)
    if issue_date > expiry_date:
        raise ValueError(f"issue date {issue_date} is after expiry date {expiry_date}")
    if identification_code is not None:
        identification_code = identification_code.upper()
        if not is_identification_code(identification_code):
            raise ValueError(f"identification code {identification_code!r} must be {IDENTIFICATION_CODE_FORM}")
    old = _card(session, card_number)
    if old.status not in (CardStatus.ACTIVE, CardStatus.LOST_REPORTED):
        raise AgencyRefused(f"card {old.card_number} cannot be replaced: {_status_text(old)}")
    if session.get(Card, new_card_number) is not None:
        raise AgencyRefused(f"card {new_card_number} is already registered")
    session.add(Card(
        card_number=new_card_number, social_security_number=old.social_security_number,
        card_identification_code=identification_code, kind=CardKind.SOCIAL_SECURITY.value,
        status=CardStatus.ACTIVE.value, issue_date=issue_date, expiry_date=expiry_date,
    ))
    session.flush()  # the new card exists before the old one names it (replaced_by is a foreign key)
    old.status, old.replaced_by = CardStatus.REPLACED.value, new_card_number
    return (f"card {old.card_number} of {mask_id(old.social_security_number)} replaced by {new_card_number} "
            f"(active, valid {issue_date} to {expiry_date}); {old.card_number} is refused from now on")


def register_filing(
    session: Session,
    social_security_number: str,
    kind: FilingKind,
    region_code: str,
    valid_from: date,
    valid_to: date | None = None,
) -> str:
    """A filing for care elsewhere. Registering a known filing (same kind, region and start) again with
    another end date changes its end: that is how a filing is ended or extended."""
    person = _person(session, social_security_number)
    region_code = parse_current_region("region", region_code)
    if valid_to is not None and valid_to < valid_from:
        raise ValueError(f"the filing ends ({valid_to}) before it starts ({valid_from})")
    if city_prefix(region_code) == city_prefix(person.insured_region_code):
        raise AgencyRefused(f"{mask_id(person.social_security_number)} is insured in {person.insured_region_code}: "
                            f"care in {region_code} is in their own city and needs no filing")
    existing = session.scalars(select(Filing).where(
        Filing.social_security_number == person.social_security_number, Filing.kind == kind.value,
        Filing.region_code == region_code, Filing.valid_from == valid_from,
    ).with_for_update()).one_or_none()
    until = f"to {valid_to}" if valid_to else "open-ended"
    what = f"{kind.value} filing of {mask_id(person.social_security_number)} for {region_code} from {valid_from}"
    if existing is None:
        session.add(Filing(social_security_number=person.social_security_number, kind=kind.value,
                           region_code=region_code, valid_from=valid_from, valid_to=valid_to))
        return f"{what} registered, {until}"
    if existing.valid_to == valid_to:
        raise AgencyRefused(f"{what} is already registered, {until}")
    was = f"to {existing.valid_to}" if existing.valid_to else "open-ended"
    existing.valid_to = valid_to
    return f"{what} now {until} (was {was})"


def change_region(session: Session, social_security_number: str, region_code: str) -> str:
    """A change of pooling region: the rules follow the new region; the person keeps their cards."""
    person = _person(session, social_security_number)
    region_code = parse_current_region("region", region_code)
    if region_code == person.insured_region_code:
        raise AgencyRefused(f"{mask_id(person.social_security_number)} is already insured in {region_code}")
    was, person.insured_region_code = person.insured_region_code, region_code
    cards = session.scalars(select(Card.card_number).where(
        Card.social_security_number == person.social_security_number,
        Card.status.in_((CardStatus.ACTIVE.value, CardStatus.LOST_REPORTED.value)),
    ).order_by(Card.card_number)).all()
    kept = f"; cards kept: {', '.join(cards)}" if cards else "; no card in use"
    return f"{mask_id(person.social_security_number)} now insured in {region_code} (was {was}){kept}"


def _card(session: Session, card_number: str) -> Card:
    parse_card_number("card number", card_number)
    card = session.get(Card, card_number, with_for_update=True)
    if card is None:
        raise AgencyRefused(f"card {card_number} is not registered")
    return card


def _person(session: Session, social_security_number: str) -> Person:
    number = parse_id_number("social security number", social_security_number)
    person = session.get(Person, number, with_for_update=True)
    if person is None:
        raise AgencyRefused(f"no insured person {mask_id(number)} in the registry")
    return person


def _status_text(card: Card) -> str:
    if card.status == CardStatus.REPLACED:
        successor = f" by {card.replaced_by}" if card.replaced_by else ""
        return f"it was replaced{successor}, and a replaced card is refused forever"
    return {
        CardStatus.ACTIVE: "it is active",
        CardStatus.LOST_REPORTED: "it is already reported lost",
        CardStatus.CANCELLED: "it is cancelled",
    }[CardStatus(card.status)]
