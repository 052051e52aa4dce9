"""How a settlement's total is paid: personal accounts, deductible, pooled fund, cash. Integer fen only.

Hospital care (DESIGN.md 3.6): the current-year account pays first; what it cannot pay counts toward
the yearly deductible, paid from the prior-years account and then cash; above the deductible the
pooled fund pays its ratio, up to the yearly cap; the rest is paid from the prior-years account, then
cash. Pharmacies: current-year account, then prior-years account, then cash. A scheme without
personal accounts (residents) pays what the fund does not in cash.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settlement.facts import Balances, YearToDate
from gateway.settlement.policy import BASIS_POINTS


@dataclass(frozen=True)
class FundSplit:
    total_fen: int
    pooled_fund_fen: int = 0
    current_year_account_fen: int = 0
    prior_years_account_fen: int = 0
    cash_fen: int = 0
    # Of the total, how much counted toward the yearly deductible (whoever paid it).
    deductible_counted_fen: int = 0

    @property
    def fund_pay_fen(self) -> int:
        """fund_pay_sumamt: everything the funds paid (today the pooled fund alone)."""
        return self.pooled_fund_fen

    @property
    def account_fen(self) -> int:
        return self.current_year_account_fen + self.prior_years_account_fen

    def __post_init__(self) -> None:
        # Spelled out rather than any() over a generator: the ledger's writer builds one split per settlement.
        pooled, current, prior, cash = (self.pooled_fund_fen, self.current_year_account_fen,
                                        self.prior_years_account_fen, self.cash_fen)
        if pooled < 0 or current < 0 or prior < 0 or cash < 0 or self.deductible_counted_fen < 0:
            raise ValueError(f"a negative part in {self}")
        if pooled + current + prior + cash != self.total_fen:
            raise ValueError(f"parts of {self} do not add up to the total")


def split_pharmacy(total_fen: int, balances: Balances, personal_accounts: bool) -> FundSplit:
    return pharmacy_split(total_fen, balances.current_year_fen, balances.prior_years_fen, personal_accounts)


def split_hospital(
    total_fen: int,
    balances: Balances,
    year_to_date: YearToDate,
    *,
    personal_accounts: bool,
    deductible_fen: int,
    pooled_cap_fen: int,
    ratio_bp: int,
) -> FundSplit:
    return hospital_split(total_fen, balances.current_year_fen, balances.prior_years_fen,
                          year_to_date.deductible_counted_fen, year_to_date.pooled_fund_paid_fen,
                          personal_accounts=personal_accounts, deductible_fen=deductible_fen,
                          pooled_cap_fen=pooled_cap_fen, ratio_bp=ratio_bp)


# The same two splits on plain numbers: the ledger's writer splits every settlement on the balances it locked,
# without building Balances and YearToDate for each.

def pharmacy_split(total_fen: int, current_year_fen: int, prior_years_fen: int, personal_accounts: bool) -> FundSplit:
    if not personal_accounts:
        return FundSplit(total_fen, cash_fen=total_fen)
    current = min(total_fen, current_year_fen)
    prior = min(total_fen - current, prior_years_fen)
    return FundSplit(total_fen, current_year_account_fen=current, prior_years_account_fen=prior,
                     cash_fen=total_fen - current - prior)


def hospital_split(
    total_fen: int,
    current_year_fen: int,
    prior_years_fen: int,
    deductible_counted_ytd_fen: int,
    pooled_fund_paid_ytd_fen: int,
    *,
    personal_accounts: bool,
    deductible_fen: int,
    pooled_cap_fen: int,
    ratio_bp: int,
) -> FundSplit:
    current_left = current_year_fen if personal_accounts else 0
    prior_left = prior_years_fen if personal_accounts else 0

    current = min(total_fen, current_left)
    remaining = total_fen - current

    deductible_left = max(0, deductible_fen - deductible_counted_ytd_fen)
    counted = min(remaining, deductible_left)
    remaining -= counted
    prior = min(counted, prior_left)
    cash = counted - prior

    cap_left = max(0, pooled_cap_fen - pooled_fund_paid_ytd_fen)
    # Rounded down: the fund never pays a fraction of a fen more than its ratio.
    pooled = min(remaining * ratio_bp // BASIS_POINTS, cap_left)
    rest = remaining - pooled
    prior_rest = min(rest, prior_left - prior)
    return FundSplit(
        total_fen,
        pooled_fund_fen=pooled,
        current_year_account_fen=current,
        prior_years_account_fen=prior + prior_rest,
        cash_fen=cash + rest - prior_rest,
        deductible_counted_fen=counted,
    )
