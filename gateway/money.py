"""Money is an integer number of fen (0.01 yuan). Decimal strings are parsed exactly, never through float.

Registry files and operators write amounts in yuan ("1234.56"); the database, the ledger and the rules
only ever see fen.
"""

from __future__ import annotations

import re

FEN_PER_YUAN = 100
# The one limit on every amount read from outside — registry files, policy files, statements, payout files:
# 10,000,000,000,000 yuan (docs/registry.md). It is far beyond any bill, balance or day's total, and keeps
# amounts well inside the protocol's and the database's signed 64-bit integers: 9,000 amounts at the limit
# still add up without overflow.
MAX_AMOUNT_FEN = 10**15
# A yuan part with more digits than the limit has in fen is too large whatever it says: refused before int().
_MAX_YUAN_DIGITS = len(str(MAX_AMOUNT_FEN))
# Digits, then optionally a point and one or two digits. No sign, exponent, grouping or spaces.
YUAN = re.compile(r"(?P<yuan>[0-9]+)(?:\.(?P<fen>[0-9]{1,2}))?")


class AmountError(ValueError):
    """Text that is not an exact non-negative amount in yuan; the message says what is expected."""


def parse_yuan_to_fen(text: str) -> int:
    """'1234.56' -> 123456. Refuses anything that is not digits with at most two decimals."""
    match = YUAN.fullmatch(text)
    if match is None:
        raise AmountError(
            f"{text!r} is not an amount in yuan: digits with at most two decimals, e.g. 1234.56"
        )
    if len(match["yuan"]) > _MAX_YUAN_DIGITS:
        raise AmountError(f"{text!r} is more than {format_fen(MAX_AMOUNT_FEN)} yuan")
    fen = int(match["yuan"]) * FEN_PER_YUAN + int((match["fen"] or "0").ljust(2, "0"))
    if fen > MAX_AMOUNT_FEN:
        raise AmountError(f"{text!r} is more than {format_fen(MAX_AMOUNT_FEN)} yuan")
    return fen


def format_fen(fen: int) -> str:
    """123456 -> '1234.56'; -5 -> '-0.05'. Always two decimals, so parse_yuan_to_fen reads it back."""
    sign = "-" if fen < 0 else ""
    yuan, rest = divmod(abs(fen), FEN_PER_YUAN)
    return f"{sign}{yuan}.{rest:02d}"


def parse_signed_yuan_to_fen(text: str) -> int:
    """'-12.30' -> -1230: refunds in statements are negative. Otherwise as parse_yuan_to_fen."""
    if text.startswith("-"):
        return -parse_yuan_to_fen(text[1:])
    return parse_yuan_to_fen(text)
