"""Building ledger intents for the demo population, as the service would."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.demo.population import demo_population
from gateway.ledger.intents import Intent, ReverseIntent, RevokeIntent, SettleIntent, business_date
from gateway.ledger.writer import LedgerWriter
from gateway.protocol.messages import pb
from gateway.serve.answers import answer, content_hash
from gateway.serve.reads import load_institution, load_registry_facts, load_state
from gateway.settlement.facts import ChipFacts, Facts, Purpose, SettlementRequest
from gateway.settlement.policy import load_builtin_policies
from gateway.settlement.rules import Refusal, admit

# 10:00 in Beijing on 2026-11-24.
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
TODAY = date(2026, 11, 24)
TERMINAL = "H33020300001-01"
INSTITUTION = "H33020300001"
POLICIES = load_builtin_policies()
CARDS = {card.card_number: (holder, card) for holder in demo_population() for card in holder.cards}


def settle_request(message_id: str, total_fen: int, medical_type: int = 11, terminal: str = TERMINAL) -> pb.Request:
    request = pb.Request(terminal_id=terminal, message_id=message_id)
    request.settle.medical_type = medical_type  # type: ignore[assignment]
    request.settle.total_fen = total_fen
    return request


def settle(engine: Engine, card_number: str, message_id: str, total_fen: int, *, medical_type: int = 11,
           terminal: str = TERMINAL, institution: str = INSTITUTION, pin: bool = False,
           at: datetime = NOW, admitted: bool = False) -> SettleIntent:
    """admitted: the intent carries what the request path's rules admitted on its facts, as the service sends it
    (they must admit it); otherwise none, and the writer decides it all."""
    holder, card = CARDS[card_number]
    ssn = holder.person.social_security_number
    with Session(engine) as session:
        registry = load_registry_facts(session, card_number, ssn)
        institution_facts = load_institution(session, institution)
    request = SettlementRequest(Purpose.SETTLE, business_date(at), medical_type, total_fen, (), pin)
    facts = Facts(request, ChipFacts(card_number, ssn, card.issuing_region_code, card.expiry_date), registry,
                  institution_facts)
    digest = content_hash(settle_request(message_id, total_fen, medical_type, terminal))
    admission = admit(facts, POLICIES) if admitted else None
    if isinstance(admission, Refusal):
        raise ValueError(f"the rules refuse this settlement ({admission.rule}): the service would not send it")
    return SettleIntent(terminal, message_id, digest, facts, card_number, at, admitted=admission)


def revoke(settlement_id: str, message_id: str, *, terminal: str = TERMINAL, institution: str = INSTITUTION,
           at: datetime = NOW) -> RevokeIntent:
    request = pb.Request(terminal_id=terminal, message_id=message_id)
    request.revoke.settlement_id = settlement_id
    return RevokeIntent(terminal, message_id, content_hash(request), institution, settlement_id, at)


def reverse(original: str, message_id: str, *, terminal: str = TERMINAL, at: datetime = NOW) -> ReverseIntent:
    request = pb.Request(terminal_id=terminal, message_id=message_id)
    request.reverse.original_message_id = original
    return ReverseIntent(terminal, message_id, content_hash(request), original, at)


def write(writer: LedgerWriter, intents: list[Intent]) -> list[pb.Response]:
    """The intents written in one batch, answered as the request path answers them."""
    return [answer(intent.message_id, outcome) for intent, outcome in zip(intents, writer.write(intents), strict=True)]


def balances_of(engine: Engine, card_number: str, year: int = 2026) -> tuple[int, int, int, int]:
    holder, _ = CARDS[card_number]
    _, _, balances, ytd = load_state(engine, INSTITUTION, card_number, holder.person.social_security_number, year)
    return (balances.current_year_fen, balances.prior_years_fen, ytd.deductible_counted_fen,
            ytd.pooled_fund_paid_fen)


def person_id_of(engine: Engine, social_security_number: str) -> int:
    """The registry's id of the person, by which the ledger knows them (their accounts, transactions, totals)."""
    from gateway.registry.tables import PERSONS

    with engine.connect() as conn:
        found: int = conn.execute(select(PERSONS.c.person_id).where(
            PERSONS.c.social_security_number == social_security_number)).scalar_one()
    return found


def mark_closed(engine: Engine, day: date) -> None:
    """The row `gateway day close` leaves for `day` (finance's own checks before closing are theirs to test)."""
    from gateway.ledger.tables import CLOSED_DAYS

    with engine.begin() as conn:
        conn.execute(CLOSED_DAYS.insert().values(business_date=day, transactions=0, total_fen=0, closed_by="test"))
