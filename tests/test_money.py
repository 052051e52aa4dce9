"""Money: decimal yuan strings to integer fen exactly, and back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.money import MAX_AMOUNT_FEN, AmountError, format_fen, parse_yuan_to_fen


@pytest.mark.parametrize(
    ("text", "fen"),
    [("0", 0), ("0.00", 0), ("1234.56", 123456), ("12", 1200), ("0.5", 50), ("0.05", 5), ("007.10", 710),
     ("10000000000000", MAX_AMOUNT_FEN)],
)
def test_amounts_in_yuan_are_parsed_exactly(text: str, fen: int) -> None:
    assert parse_yuan_to_fen(text) == fen


@pytest.mark.parametrize(
    "text",
    ["1.234", "1e3", "", "abc", "-1", "+1", " 1", "1 ", "1.", ".5", "1,000.00", "1_000", "１２", "1.2.3", "0x10",
     "1234.56\n", "NaN", "inf", "10000000000000.01", "9" * 40],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(AmountError):
        parse_yuan_to_fen(text)


def test_a_refusal_says_what_is_expected() -> None:
    with pytest.raises(AmountError, match="at most two decimals"):
        parse_yuan_to_fen("1.234")


@pytest.mark.parametrize(("fen", "text"), [(0, "0.00"), (5, "0.05"), (50, "0.50"), (123456, "1234.56"),
                                           (-5, "-0.05"), (-123456, "-1234.56")])
def test_fen_are_formatted_with_two_decimals(fen: int, text: str) -> None:
    assert format_fen(fen) == text


@given(st.integers(min_value=0, max_value=10**15))
def test_formatting_then_parsing_gives_the_same_fen(fen: int) -> None:
    assert parse_yuan_to_fen(format_fen(fen)) == fen


@given(st.integers(min_value=0, max_value=10**13 - 1), st.integers(min_value=0, max_value=99))
def test_parsing_then_formatting_gives_the_canonical_text(yuan: int, fen: int) -> None:
    assert format_fen(parse_yuan_to_fen(f"{yuan}.{fen:02d}")) == f"{yuan}.{fen:02d}"
