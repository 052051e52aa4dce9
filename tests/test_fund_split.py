"""Properties of the fund split that must hold for every amount, balance and year-to-date total."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from gateway.settlement.facts import Balances, YearToDate
from gateway.settlement.split import FundSplit, split_hospital, split_pharmacy

amounts = st.integers(min_value=0, max_value=50_000_000)
balances = st.builds(Balances, st.integers(0, 5_000_000), st.integers(0, 5_000_000))


@dataclass(frozen=True)
class Scheme:
    personal_accounts: bool
    deductible_fen: int
    pooled_cap_fen: int
    ratio_bp: int


schemes = st.builds(Scheme, st.booleans(), st.integers(0, 200_000), st.integers(0, 5_000_000),
                    st.integers(0, 10_000))


@st.composite
def year_to_date(draw: st.DrawFn, scheme: Scheme) -> YearToDate:
    return YearToDate(draw(st.integers(0, scheme.deductible_fen)), draw(st.integers(0, scheme.pooled_cap_fen)))


def hospital(total: int, bal: Balances, ytd: YearToDate, scheme: Scheme) -> FundSplit:
    return split_hospital(total, bal, ytd, personal_accounts=scheme.personal_accounts,
                          deductible_fen=scheme.deductible_fen, pooled_cap_fen=scheme.pooled_cap_fen,
                          ratio_bp=scheme.ratio_bp)


def after(bal: Balances, ytd: YearToDate, split: FundSplit) -> tuple[Balances, YearToDate]:
    return (Balances(bal.current_year_fen - split.current_year_account_fen,
                     bal.prior_years_fen - split.prior_years_account_fen),
            YearToDate(ytd.deductible_counted_fen + split.deductible_counted_fen,
                       ytd.pooled_fund_paid_fen + split.pooled_fund_fen))


@given(st.data(), amounts, balances, schemes)
def test_hospital_split_invariants(data: st.DataObject, total: int, bal: Balances, scheme: Scheme) -> None:
    ytd = data.draw(year_to_date(scheme))
    split = hospital(total, bal, ytd, scheme)  # FundSplit itself refuses negative parts or a wrong sum
    assert split.current_year_account_fen <= bal.current_year_fen
    assert split.prior_years_account_fen <= bal.prior_years_fen
    assert ytd.pooled_fund_paid_fen + split.pooled_fund_fen <= scheme.pooled_cap_fen
    assert ytd.deductible_counted_fen + split.deductible_counted_fen <= scheme.deductible_fen
    assert split.pooled_fund_fen * 10_000 <= (total - split.current_year_account_fen) * scheme.ratio_bp
    if not scheme.personal_accounts:
        assert split.account_fen == 0


@given(st.data(), amounts, amounts, balances, schemes)
def test_the_pooled_share_never_falls_when_the_amount_grows(
    data: st.DataObject, a: int, b: int, bal: Balances, scheme: Scheme
) -> None:
    ytd = data.draw(year_to_date(scheme))
    low, high = sorted((a, b))
    assert hospital(low, bal, ytd, scheme).pooled_fund_fen <= hospital(high, bal, ytd, scheme).pooled_fund_fen


@given(st.data(), amounts, amounts, balances, schemes)
def test_two_steps_differ_from_one_only_as_deductible_and_cap_say(
    data: st.DataObject, a: int, b: int, bal: Balances, scheme: Scheme
) -> None:
    ytd = data.draw(year_to_date(scheme))
    once = hospital(a + b, bal, ytd, scheme)
    first = hospital(a, bal, ytd, scheme)
    bal2, ytd2 = after(bal, ytd, first)
    second = hospital(b, bal2, ytd2, scheme)
    # The same money reaches the current-year account and the deductible either way ...
    assert first.current_year_account_fen + second.current_year_account_fen == once.current_year_account_fen
    assert first.deductible_counted_fen + second.deductible_counted_fen == once.deductible_counted_fen
    # ... and the pooled fund pays the same, but for rounding each step down to whole fen.
    pooled_twice = first.pooled_fund_fen + second.pooled_fund_fen
    assert once.pooled_fund_fen - 1 <= pooled_twice <= once.pooled_fund_fen
    # What the fund does not pay, the person does, from accounts or cash.
    person_twice = first.account_fen + first.cash_fen + second.account_fen + second.cash_fen
    assert person_twice == once.account_fen + once.cash_fen + (once.pooled_fund_fen - pooled_twice)


@given(amounts, balances, st.booleans())
def test_pharmacy_pays_current_then_prior_then_cash(total: int, bal: Balances, accounts: bool) -> None:
    split = split_pharmacy(total, bal, accounts)
    assert split.pooled_fund_fen == 0 and split.deductible_counted_fen == 0
    if not accounts:
        assert split.cash_fen == total
        return
    assert split.current_year_account_fen == min(total, bal.current_year_fen)
    if split.prior_years_account_fen:
        assert split.current_year_account_fen == bal.current_year_fen
    if split.cash_fen:
        assert split.account_fen == bal.current_year_fen + bal.prior_years_fen


def test_a_worked_example() -> None:
    """3,000 yuan at a tertiary hospital: 200 from the current-year account, 750 deductible (500 from the
    prior-years account, 250 cash), 75% of the 2,050 above it from the fund, the rest from cash."""
    split = split_hospital(300_000, Balances(20_000, 50_000), YearToDate(), personal_accounts=True,
                           deductible_fen=75_000, pooled_cap_fen=2_000_000, ratio_bp=7_500)
    assert split == FundSplit(300_000, pooled_fund_fen=153_750, current_year_account_fen=20_000,
                              prior_years_account_fen=50_000, cash_fen=76_250, deductible_counted_fen=75_000)


def test_the_cap_stops_the_fund() -> None:
    split = split_hospital(1_000_000, Balances(), YearToDate(75_000, 1_990_000), personal_accounts=True,
                           deductible_fen=75_000, pooled_cap_fen=2_000_000, ratio_bp=7_500)
    assert split.pooled_fund_fen == 10_000 and split.cash_fen == 990_000
