"""Which accounts a transaction moves money between. Pure: a list of (account, signed fen) that sums to zero."""

from __future__ import annotations

from gateway.ledger import accounts
from gateway.ledger.accounts import AccountSpec
from gateway.ledger.errors import LedgerInvariantBroken
from gateway.settlement.split import FundSplit

Posting = tuple[AccountSpec, int]


# The six accounts a settlement moves, in this order: the person's current-year and prior-years accounts, the pooled
# fund of the person's city, persons' cash, the institution's receivable and its cash.
SettlementAccounts = tuple[AccountSpec, AccountSpec, AccountSpec, AccountSpec, AccountSpec, AccountSpec]


def settlement_accounts(person_id: int, insured_region_code: str, institution_code: str) -> SettlementAccounts:
    return (accounts.person_current_year(person_id), accounts.person_prior_years(person_id),
            accounts.pooled_fund(insured_region_code), accounts.persons_cash(),
            accounts.institution_receivable(institution_code), accounts.institution_cash(institution_code))


def settlement_postings(person_id: int, insured_region_code: str, institution_code: str,
                        split: FundSplit) -> list[Posting]:
    """The person's accounts, the pooled fund of the person's city and the person's cash pay; the
    institution is owed what the accounts and the fund paid, and holds the cash it collected."""
    return postings_of_settlement(settlement_accounts(person_id, insured_region_code, institution_code), split)


def postings_of_settlement(specs: SettlementAccounts, split: FundSplit) -> list[Posting]:
    """settlement_postings on accounts built before (the writer builds them once per holder and batch)."""
    current, prior, fund, cash = (split.current_year_account_fen, split.prior_years_account_fen,
                                  split.pooled_fund_fen, split.cash_fen)
    amounts = (-current, -prior, -fund, -cash, fund + current + prior, cash)
    return _balanced([(spec, amount) for spec, amount in zip(specs, amounts, strict=True) if amount != 0])


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
