"""Policy files: validated when loaded, with the file and key named; chosen by date."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from gateway.money import MAX_AMOUNT_FEN
from gateway.settlement.policy import (
    PolicyBook,
    PolicyError,
    load_builtin_policies,
    load_policy_directory,
    parse_policy,
)

BUILT_IN = Path(__file__).resolve().parent.parent / "gateway/settlement/policies/2026.toml"
GOOD = BUILT_IN.read_text(encoding="utf-8")


def test_the_built_in_years_load_and_are_marked_illustrative() -> None:
    book = load_builtin_policies()
    assert book.years == [2025, 2026, 2027]
    for policy in book.policies:
        assert policy.illustrative
        assert policy.employee.deductible_fen == 75_000 and policy.employee.retired_deductible_fen == 30_000
        assert policy.employee.pooled_cap_fen == 2_000_000
        active = policy.employee.outpatient[0]
        assert (active.community, active.secondary, active.tertiary) == (8_600, 8_000, 7_500)
    assert "ILLUSTRATIVE" in GOOD


def test_the_built_in_years_cover_every_day_through_2027_without_a_gap() -> None:
    # 2027-01-01 is a business day like any other: a gateway must not answer TEMPORARILY_UNAVAILABLE then.
    book = load_builtin_policies()
    day, last = date(2025, 1, 1), date(2027, 12, 31)
    while day <= last:
        assert book.for_date(day) is not None, f"no built-in policy covers {day}"
        day += timedelta(days=1)
    assert book.for_date(date(2027, 1, 1)).version == "NB-2027-illustrative-1"  # type: ignore[union-attr]


def test_a_policy_is_chosen_by_date() -> None:
    book = load_builtin_policies()
    assert book.for_date(date(2026, 1, 1)).insurance_year == 2026  # type: ignore[union-attr]
    assert book.for_date(date(2025, 12, 31)).insurance_year == 2025  # type: ignore[union-attr]
    assert book.for_date(date(2024, 6, 1)) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("deductible_fen = 75_000", "deductible_fen = 750.0"), "employee.deductible_fen must be a whole number"),
        (("deductible_fen = 75_000", "deductible_fen = -1"), "employee.deductible_fen must be between 0"),
        (("tertiary = 7_500", "tertiary = 17_500"), "employee.ratio_bp.outpatient.active.tertiary must be between"),
        (("pooled_cap_fen = 2_000_000 ", "# "), "employee.pooled_cap_fen is missing"),
        (("illustrative = true", "illustrative = true\nsurprise = 1"), "surprise is not a known key"),
        (("valid_to = 2026-12-31", "valid_to = 2027-03-31"), "must lie in insurance year 2026"),
        (("valid_from = 2026-01-01", "valid_from = 2026-12-31\nvalid_to_ = 1"), "valid_to_ is not a known key"),
        (("min_total_fen = 1 ", "min_total_fen = 60_000_000 "), "min_total_fen is above max_total_fen"),
        (("personal_accounts = true", "personal_accounts = 1"), "employee.personal_accounts must be true or false"),
        (("insurance_year = 2026", "insurance_year = 2026\n[oops"), "not valid TOML"),
    ],
)
def test_inconsistent_files_are_refused_naming_the_key(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    with pytest.raises(PolicyError) as refused:
        parse_policy(GOOD.replace(old, new, 1), "test.toml")
    assert message in str(refused.value) and "test.toml" in str(refused.value)


@pytest.mark.parametrize("key", ["max_total_fen", "deductible_fen", "retired_deductible_fen", "pooled_cap_fen"])
@pytest.mark.parametrize(("amount_fen", "accepted"), [(MAX_AMOUNT_FEN, True), (MAX_AMOUNT_FEN + 1, False)])
def test_policy_amounts_have_the_limit_of_every_amount_read_from_a_file(key: str, amount_fen: int,
                                                                        accepted: bool) -> None:
    # One limit for amounts (gateway.money), whether they come from a registry file, a statement or a policy.
    line = next(line for line in GOOD.splitlines() if line.startswith(f"{key} ="))
    text = GOOD.replace(line, f"{key} = {amount_fen}", 1)
    if accepted:
        parse_policy(text, "test.toml")
    else:
        with pytest.raises(PolicyError, match=rf"{key} must be between [01] and {MAX_AMOUNT_FEN} "):
            parse_policy(text, "test.toml")


def test_overlapping_years_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "b.toml").write_text(GOOD.replace("NB-2026-illustrative-1", "other"), encoding="utf-8")
    with pytest.raises(PolicyError, match="overlaps"):
        load_policy_directory(tmp_path)


def test_an_operator_directory_replaces_the_built_in_figures(tmp_path: Path) -> None:
    (tmp_path / "2026.toml").write_text(GOOD.replace("illustrative = true", "illustrative = false")
                                        .replace("deductible_fen = 75_000", "deductible_fen = 80_000"),
                                        encoding="utf-8")
    book = load_policy_directory(tmp_path)
    policy = book.for_date(date(2026, 5, 1))
    assert policy is not None and not policy.illustrative and policy.employee.deductible_fen == 80_000
    with pytest.raises(PolicyError, match="no policy files"):
        load_policy_directory(tmp_path / "empty-does-not-exist")


def _book_of(*years: tuple[str, str]) -> PolicyBook:
    """A book with one policy per (valid_from, valid_to), all with GOOD's figures."""
    policies = []
    for index, (first, last) in enumerate(years):
        text = (GOOD.replace("insurance_year = 2026", f"insurance_year = {first[:4]}")
                .replace("valid_from = 2026-01-01", f"valid_from = {first}")
                .replace("valid_to = 2026-12-31", f"valid_to = {last}")
                .replace("NB-2026-illustrative-1", f"v{index}"))
        policies.append(parse_policy(text, f"{index}.toml"))
    return PolicyBook(policies)


@pytest.mark.parametrize(("years", "today", "covered_through", "days_remaining"), [
    # One year: the days left in it.
    ((("2026-01-01", "2026-12-31"),), date(2026, 12, 2), date(2026, 12, 31), 29),
    ((("2026-01-01", "2026-12-31"),), date(2026, 12, 31), date(2026, 12, 31), 0),
    # Two years back to back: the run goes on into the next.
    ((("2026-01-01", "2026-12-31"), ("2027-01-01", "2027-12-31")), date(2026, 12, 2), date(2027, 12, 31), 394),
    # A gap: the later year does not count for the days before it.
    ((("2026-01-01", "2026-12-31"), ("2027-01-02", "2027-12-31")), date(2026, 12, 2), date(2026, 12, 31), 29),
    # Today uncovered: nothing is settled.
    ((("2027-01-01", "2027-12-31"),), date(2026, 12, 2), None, -1),
    ((("2025-01-01", "2025-12-31"),), date(2026, 1, 1), None, -1),
])
def test_the_calendar_says_how_long_policies_still_cover(years: tuple[tuple[str, str], ...], today: date,
                                                         covered_through: date | None,
                                                         days_remaining: int) -> None:
    book = _book_of(*years)
    assert book.covered_through(today) == covered_through
    assert book.days_remaining(today) == days_remaining


@pytest.mark.parametrize(("years", "today", "days", "gaps"), [
    ((("2026-01-01", "2026-12-31"), ("2027-01-01", "2027-12-31")), date(2026, 12, 2), 30, []),
    ((("2026-01-01", "2026-12-31"),), date(2026, 12, 2), 30, [(date(2027, 1, 1), date(2027, 1, 1))]),
    ((("2026-01-01", "2026-12-31"),), date(2026, 12, 2), 60, [(date(2027, 1, 1), date(2027, 1, 31))]),
    ((("2026-01-01", "2026-12-31"), ("2027-01-10", "2027-12-31")), date(2026, 12, 20), 30,
     [(date(2027, 1, 1), date(2027, 1, 9))]),
    ((("2027-01-01", "2027-12-31"),), date(2026, 12, 30), 5, [(date(2026, 12, 30), date(2026, 12, 31))]),
])
def test_the_calendar_lists_the_uncovered_days_ahead(years: tuple[tuple[str, str], ...], today: date, days: int,
                                                     gaps: list[tuple[date, date]]) -> None:
    assert _book_of(*years).gaps(today, days) == gaps


def test_the_built_in_years_cover_the_next_thirty_days_of_2026() -> None:
    book = load_builtin_policies()
    assert book.gaps(date(2026, 12, 2), 30) == []
    assert book.covered_through(date(2026, 12, 2)) == date(2027, 12, 31)
