"""Account codes and what kind of account each is. Codes are the ledger's keys: readable in exports."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.ledger.models import AccountKind

PERSONS_CASH = "persons:cash"
OPENING = "opening"
SUBSIDY_FUND = "fund:subsidy"


@dataclass(frozen=True)
class AccountSpec:
    code: str
    kind: AccountKind
    owner: str
    must_not_go_negative: bool


def person_current_year(ssn: str) -> AccountSpec:
    return AccountSpec(f"person:{ssn}:current_year", AccountKind.PERSON_CURRENT_YEAR, ssn, True)


def person_prior_years(ssn: str) -> AccountSpec:
    return AccountSpec(f"person:{ssn}:prior_years", AccountKind.PERSON_PRIOR_YEARS, ssn, True)


def pooled_fund(region_code: str) -> AccountSpec:
    city = region_code[:4]
    return AccountSpec(f"fund:{city}", AccountKind.POOLED_FUND, city, False)


def institution_receivable(code: str) -> AccountSpec:
    return AccountSpec(f"institution:{code}:receivable", AccountKind.INSTITUTION_RECEIVABLE, code, False)


def institution_cash(code: str) -> AccountSpec:
    return AccountSpec(f"institution:{code}:cash", AccountKind.INSTITUTION_CASH, code, False)


def card_bank(card_number: str) -> AccountSpec:
    return AccountSpec(f"card:{card_number}:bank", AccountKind.CARD_BANK, card_number, False)


def persons_cash() -> AccountSpec:
    return AccountSpec(PERSONS_CASH, AccountKind.PERSONS_CASH, "", False)


def opening() -> AccountSpec:
    return AccountSpec(OPENING, AccountKind.OPENING, "", False)


def subsidy_fund() -> AccountSpec:
    return AccountSpec(SUBSIDY_FUND, AccountKind.SUBSIDY_FUND, "", False)
