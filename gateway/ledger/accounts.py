"""Account codes and what kind of account each is. Codes are the ledger's keys: readable in exports.

A person's accounts are named by the registry's person id (gateway.registry.models.Person.person_id), never by
the ID number: the ledger holds no ID number anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.ledger.models import AccountKind

PERSONS_CASH = "persons:cash"
OPENING = "opening"
SUBSIDY_FUND = "fund:subsidy"
# A person's account code is PERSON_PREFIX + the person id + one of these (gateway.serve.reads builds the same
# codes in SQL from them, to read a holder's balances in the statement that finds the holder).
PERSON_PREFIX = "person:"
CURRENT_YEAR_SUFFIX = ":current_year"
PRIOR_YEARS_SUFFIX = ":prior_years"


@dataclass(frozen=True)
class AccountSpec:
    code: str
    kind: AccountKind
    owner: str
    must_not_go_negative: bool


def person_current_year(person_id: int) -> AccountSpec:
    return AccountSpec(f"{PERSON_PREFIX}{person_id}{CURRENT_YEAR_SUFFIX}", AccountKind.PERSON_CURRENT_YEAR,
                       str(person_id), True)


def person_prior_years(person_id: int) -> AccountSpec:
    return AccountSpec(f"{PERSON_PREFIX}{person_id}{PRIOR_YEARS_SUFFIX}", AccountKind.PERSON_PRIOR_YEARS,
                       str(person_id), True)


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
