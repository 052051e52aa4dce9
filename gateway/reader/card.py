"""The social security card as read from its chip, and the checks that make it trustworthy."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import date

from gateway.identity import CARD_NUMBER, is_valid_id_number
from gateway.reader.errors import CardExpired, CardUnreadable
from gateway.regions import NINGBO_CITY_PREFIX, ZHEJIANG_PROVINCE_PREFIX, city_prefix, is_known_region, known_regions

CARD_ID_MIDDLE = "D156000005"
CARD_IDENTIFICATION_CODE = re.compile(rf"[0-9]{{6}}{CARD_ID_MIDDLE}[0-9A-F]{{16}}")
IDENTIFICATION_CODE_FORM = f"the issuing region, {CARD_ID_MIDDLE} and 16 hex digits"
# GB/T 2260 province-level prefixes (mainland), then Taiwan, Hong Kong, Macao.
PROVINCE_PREFIXES = frozenset((
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41", "42",
    "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71", "81", "82",
))
SEXES = {"0": "unknown", "1": "male", "2": "female", "9": "unspecified"}


def region_is_acceptable(code: str) -> bool:
    """A region code a card may carry.

    Ningbo's codes must be exactly known (the retired 330204 and 330283 included); another Zhejiang
    code must belong to a known city; other provinces' codes are accepted by their province prefix,
    so that the rules, not the reader, refuse them.
    """
    if not re.fullmatch(r"[0-9]{6}", code):
        return False
    if code.startswith(NINGBO_CITY_PREFIX):
        return is_known_region(code)
    if code.startswith(ZHEJIANG_PROVINCE_PREFIX):
        return is_known_region(code) or city_prefix(code) + "00" in known_regions()
    return code[:2] in PROVINCE_PREFIXES


def is_identification_code(code: str) -> bool:
    """EF05 tag 01 as the registry and the agency accept it: the form, and an issuing region that can be."""
    return CARD_IDENTIFICATION_CODE.fullmatch(code) is not None and region_is_acceptable(code[:6])


@dataclass(frozen=True)
class CardData:
    card_number: str
    card_identification_code: str
    issuing_region_code: str
    spec_version: str
    issue_date: date
    expiry_date: date
    social_security_number: str
    name: str
    sex: str
    ethnicity: str
    birthplace: str
    birth_date: date

    def as_dict(self) -> dict[str, str]:
        # Field by field: dataclasses.asdict deep-copies, and this runs for every card read.
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {k: v.strftime("%Y%m%d") if isinstance(v, date) else v for k, v in values}


def validate_card(card: CardData, today: date) -> None:
    """Raise a CardProblem when what the chip says cannot be trusted or the card has expired."""
    code = card.card_identification_code
    if not CARD_IDENTIFICATION_CODE.fullmatch(code):
        raise CardUnreadable("card identification code is malformed", "卡识别码格式错误")
    if not region_is_acceptable(card.issuing_region_code):
        raise CardUnreadable(f"unknown issuing region {card.issuing_region_code}",
                             f"发卡地区代码{card.issuing_region_code}无效")
    if not CARD_NUMBER.fullmatch(card.card_number):
        raise CardUnreadable("card number is malformed", "卡号格式错误")
    if not is_valid_id_number(card.social_security_number):
        raise CardUnreadable("the social security number on the card fails its check digit",
                             "卡内社会保障号码校验位错误")
    if card.social_security_number[6:14] != card.birth_date.strftime("%Y%m%d"):
        raise CardUnreadable("birth date differs from the social security number", "出生日期与社会保障号码不符")
    if not card.name:
        raise CardUnreadable("the card holds no name", "卡内无姓名")
    if card.sex not in SEXES:
        raise CardUnreadable(f"unknown sex code {card.sex!r}", "性别代码无效")
    if card.issue_date > card.expiry_date:
        raise CardUnreadable("issue date is after expiry date", "发卡日期晚于有效期")
    if card.issue_date > today or card.birth_date > today:
        raise CardUnreadable("a date on the card lies in the future", "卡内日期晚于今天")
    if card.expiry_date < today:
        raise CardExpired(f"expired on {card.expiry_date:%Y-%m-%d}", f"有效期至{card.expiry_date:%Y-%m-%d}")
