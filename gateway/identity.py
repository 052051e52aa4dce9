"""Who a holder is: resident ID numbers (GB 11643-1999) and social security card numbers, and how they are shown
where the whole number is not needed."""

from __future__ import annotations

import functools
import re

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK_CHARS = "10X98765432"
ID_NUMBER = re.compile(r"[0-9]{17}[0-9X]")
CARD_NUMBER = re.compile(r"[A-Z0-9]{9}")


def id_check_char(first17: str) -> str:
    """The check character of an ID number's first 17 digits: weighted sum mod 11 indexes 10X98765432."""
    total = sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS, strict=True))
    return ID_CHECK_CHARS[total % 11]


@functools.lru_cache(maxsize=65536)  # the same holders' numbers are checked on every request
def is_valid_id_number(number: str) -> bool:
    """GB 11643-1999: 17 digits and a check character (digit or X)."""
    if not ID_NUMBER.fullmatch(number):
        return False
    return id_check_char(number[:17]) == number[17]


def mask_id(number: str) -> str:
    """An ID number with its middle hidden: 330203********1236. Short values are hidden whole."""
    if len(number) <= 8:
        return "*" * len(number)
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


def mask_card(number: str) -> str:
    """A card number with all but its last four characters hidden: *****0019. Short values are hidden whole."""
    if len(number) <= 4:
        return "*" * len(number)
    return "*" * (len(number) - 4) + number[-4:]
