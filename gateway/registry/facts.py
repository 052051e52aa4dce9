"""What the registry says about a card, its holder, an institution and opening balances, as the plain
values of gateway.settlement.facts.

Blocking: the server runs these in its database thread pool, each within a session it owns.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from gateway.registry.models import Institution, OpeningBalance
from gateway.settlement import facts


class NotRegistered(LookupError):
    """A record the caller was sure exists (e.g. the institution of a signed-in terminal) does not."""


def load_registry_facts(session: Session, card_number: str, social_security_number: str) -> facts.RegistryFacts:
    """The card as registered, and the person under `social_security_number` (as the chip gives it).

    Read by the very statement a settlement reads its facts with (gateway.settling_reads).
    """
    from gateway.settling_reads import read_registry_facts  # it imports NotRegistered from here

    session.flush()  # what this session changed is part of the registry it asks about
    return read_registry_facts(session.connection(), card_number, social_security_number)


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
