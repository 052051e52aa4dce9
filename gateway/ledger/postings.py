"""Which accounts a transaction moves money between. Pure: a list of (account, signed fen) that sums to zero."""

from __future__ import annotations

from gateway.ledger import accounts
from gateway.ledger.accounts import AccountSpec
from gateway.ledger.errors import LedgerInvariantBroken
from gateway.settlement.split import FundSplit

Posting = tuple[AccountSpec, int]


def settlement_postings(person_id: int, insured_region_code: str, institution_code: str,
                        split: FundSplit) -> list[Posting]:
    """The person's accounts, the pooled fund of the person's city and the person's cash pay; the
    institution is owed what the accounts and the fund paid, and holds the cash it collected."""
    postings: list[Posting] = [
        (accounts.person_current_year(person_id), -split.current_year_account_fen),
        (accounts.person_prior_years(person_id), -split.prior_years_account_fen),
        (accounts.pooled_fund(insured_region_code), -split.pooled_fund_fen),
        (accounts.persons_cash(), -split.cash_fen),
        (accounts.institution_receivable(institution_code),
         split.pooled_fund_fen + split.current_year_account_fen + split.prior_years_account_fen),
        (accounts.institution_cash(institution_code), split.cash_fen),
    ]
    return _balanced([p for p in postings if p[1] != 0])


def compensation_postings(original: list[tuple[str, int]], specs: dict[str, AccountSpec]) -> list[Posting]:
    """Exactly the original's entries, negated: a revoke or a reversal undoes a settlement."""
    return _balanced([(specs[code], -amount) for code, amount in original])


def opening_postings(person_id: int, current_year_fen: int, prior_years_fen: int) -> list[Posting]:
    postings: list[Posting] = [
        (accounts.person_current_year(person_id), current_year_fen),
        (accounts.person_prior_years(person_id), prior_years_fen),
        (accounts.opening(), -(current_year_fen + prior_years_fen)),
    ]
    return _balanced([p for p in postings if p[1] != 0])


def rollover_postings(person_id: int, amount_fen: int) -> list[Posting]:
    return _balanced([(accounts.person_current_year(person_id), -amount_fen),
                      (accounts.person_prior_years(person_id), amount_fen)])


def _balanced(postings: list[Posting]) -> list[Posting]:
    if sum(amount for _, amount in postings) != 0:
        raise LedgerInvariantBroken(f"unbalanced postings {postings}")
    return postings
