"""A deterministic population of insured persons and their cards, for tests, the demo registry and load.

The same seed always gives the same people and cards, so the demo registry (written by the gateway)
and the virtual cards (held by simulated terminals or presented on vpcd) agree without sharing files.
Every holder carries a `case` naming the situation it exists to exercise.
"""

from __future__ import annotations

import enum
import hashlib
import random
from dataclasses import dataclass
from datetime import date

from gateway.identity import id_check_char
from gateway.reader.agency import DEMO_AGENCY_MASTER_KEY, derive_card_key
from gateway.settlement.facts import CardKind, CardStatus, InsuranceType

DEFAULT_SEED = 2026
DEFAULT_PERSONS = 200
INITIAL_PIN = "000000"
PIN_TRIES = 6
SPEC_VERSION = "3.00"
OLD_IC_SPEC_VERSION = "1.00"
# The day the demo population is "as of": expiry dates are placed around it.
REFERENCE_DAY = date(2026, 11, 24)


class Case(enum.StrEnum):
    NINGBO = "ningbo"                            # in-city, no PIN
    NINGBO_RETIRED_DISTRICT = "ningbo_retired_district"  # card carries 330204 or 330283
    NINGBO_REGION_CHANGED = "ningbo_region_changed"  # moved district: insured region differs from the card
    NINGBO_RETIRED_EMPLOYEE = "ningbo_retired_employee"
    NINGBO_RESIDENT = "ningbo_resident"
    ZHEJIANG_FILED = "zhejiang_filed"            # another Zhejiang city, filed for care in Ningbo: PIN
    ZHEJIANG_UNFILED = "zhejiang_unfiled"        # another Zhejiang city, no filing
    ZHEJIANG_PIN_CHANGED = "zhejiang_pin_changed"  # filed, PIN no longer the initial one
    OUTSIDE_PROVINCE = "outside_province"
    EXPIRED = "expired"
    LOST = "lost"
    REPLACED = "replaced"                        # an old replaced card and the active replacement
    PIN_LOCKED = "pin_locked"                    # filed, six wrong PINs already
    OLD_IC_HOLDER = "old_ic_holder"              # old medical IC card plus a new social security card


# The first holder is the plain in-city case: `simulators.virtual_card` presents it by default.
CASE_CYCLE: tuple[Case, ...] = (
    Case.NINGBO, Case.ZHEJIANG_FILED, Case.NINGBO, Case.NINGBO_RETIRED_EMPLOYEE, Case.ZHEJIANG_UNFILED,
    Case.NINGBO_RETIRED_DISTRICT, Case.NINGBO, Case.OUTSIDE_PROVINCE, Case.NINGBO_REGION_CHANGED, Case.EXPIRED,
    Case.NINGBO_RESIDENT, Case.LOST, Case.ZHEJIANG_PIN_CHANGED, Case.REPLACED, Case.NINGBO, Case.PIN_LOCKED,
    Case.OLD_IC_HOLDER, Case.ZHEJIANG_FILED, Case.NINGBO,
)

NINGBO_DISTRICTS = ("330203", "330205", "330206", "330211", "330212", "330213", "330225", "330226", "330281",
                    "330282")
NINGBO_RETIRED_DISTRICTS = ("330204", "330283")
OTHER_ZHEJIANG_CITIES = ("330100", "330300", "330400", "330500", "330600", "330700", "330800", "330900",
                         "331000", "331100")
OUTSIDE_REGIONS = ("310100", "320100", "110100", "440300", "340100")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢傅钟"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉萍红娥玲芬燕彬鹏辉建国晓东海波宁浩然子涵雨欣一诺梓轩思远嘉怡"


@dataclass(frozen=True)
class DemoPerson:
    social_security_number: str
    name: str
    sex: str  # "1" male, "2" female
    ethnicity: str  # two digits, GB 3304
    birthplace: str
    birth_date: date
    insurance_type: InsuranceType
    insured_region_code: str


@dataclass(frozen=True)
class DemoCard:
    card_number: str
    card_identification_code: str
    kind: CardKind
    status: CardStatus
    issue_date: date
    expiry_date: date
    spec_version: str
    pin: str
    pin_tries_left: int
    # The key RESET RETRY COUNTER must be MACed with (diversified from the demo agency key).
    agency_card_key: bytes

    @property
    def issuing_region_code(self) -> str:
        return self.card_identification_code[:6]


@dataclass(frozen=True)
class DemoHolder:
    index: int
    case: Case
    person: DemoPerson
    cards: tuple[DemoCard, ...]

    @property
    def card(self) -> DemoCard:
        """The card the holder presents: the newest one."""
        return self.cards[-1]


def demo_population(persons: int = DEFAULT_PERSONS, seed: int = DEFAULT_SEED) -> list[DemoHolder]:
    return [make_holder(i, seed) for i in range(persons)]


def make_holder(index: int, seed: int = DEFAULT_SEED) -> DemoHolder:
    rng = random.Random(f"{seed}:{index}")
    case = CASE_CYCLE[index % len(CASE_CYCLE)]
    card_region, insured_region = _regions(case, rng)
    insurance_type = {
        Case.NINGBO_RETIRED_EMPLOYEE: InsuranceType.EMPLOYEE_RETIRED,
        Case.NINGBO_RESIDENT: InsuranceType.RESIDENT,
    }.get(case, InsuranceType.EMPLOYEE_ACTIVE)
    retired = insurance_type is InsuranceType.EMPLOYEE_RETIRED
    birth_date = date(rng.randint(1944, 1960) if retired else rng.randint(1962, 2004), rng.randint(1, 12),
                      rng.randint(1, 28))
    sex = "1" if rng.random() < 0.5 else "2"
    birthplace = card_region if rng.random() < 0.7 else rng.choice(NINGBO_DISTRICTS + OTHER_ZHEJIANG_CITIES)
    sequence = rng.randint(0, 499) * 2 + (1 if sex == "1" else 0)  # odd for men (GB 11643)
    person = DemoPerson(
        social_security_number=make_id_number(birthplace, birth_date, sequence),
        name=rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2))),
        sex=sex,
        ethnicity="01" if rng.random() < 0.9 else f"{rng.randint(2, 56):02d}",
        birthplace=birthplace,
        birth_date=birth_date,
        insurance_type=insurance_type,
        insured_region_code=insured_region,
    )
    return DemoHolder(index, case, person, _cards(index, seed, case, card_region, rng))


def make_id_number(region: str, birth: date, sequence: int) -> str:
    first17 = f"{region}{birth:%Y%m%d}{sequence % 1000:03d}"
    return first17 + id_check_char(first17)


def _regions(case: Case, rng: random.Random) -> tuple[str, str]:
    """(the region in the card, the person's current insured region)."""
    if case is Case.NINGBO_RETIRED_DISTRICT:
        code = rng.choice(NINGBO_RETIRED_DISTRICTS)
        return code, {"330204": "330203", "330283": "330213"}[code]
    if case is Case.NINGBO_REGION_CHANGED:
        card, insured = rng.sample(NINGBO_DISTRICTS, 2)
        return card, insured
    if case in (Case.ZHEJIANG_FILED, Case.ZHEJIANG_UNFILED, Case.ZHEJIANG_PIN_CHANGED, Case.PIN_LOCKED):
        city = rng.choice(OTHER_ZHEJIANG_CITIES)
        return city, city
    if case is Case.OUTSIDE_PROVINCE:
        code = rng.choice(OUTSIDE_REGIONS)
        return code, code
    code = rng.choice(NINGBO_DISTRICTS)
    return code, code


def _card(index: int, seed: int, serial: int, kind: CardKind, status: CardStatus, region: str, issue: date,
          expiry: date, pin: str = INITIAL_PIN, tries: int = PIN_TRIES) -> DemoCard:
    digest = hashlib.sha256(f"{seed}:{index}:{serial}".encode()).hexdigest().upper()
    prefix = "M" if kind is CardKind.OLD_MEDICAL_IC else ("N" if region.startswith("3302") else
                                                             "Z" if region.startswith("33") else "W")
    card_number = f"{prefix}{index:06d}{serial:02d}"
    identification = f"{region}D156000005{digest[:16]}"
    return DemoCard(
        card_number=card_number,
        card_identification_code=identification,
        kind=kind,
        status=status,
        issue_date=issue,
        expiry_date=expiry,
        spec_version=OLD_IC_SPEC_VERSION if kind is CardKind.OLD_MEDICAL_IC else SPEC_VERSION,
        pin=pin,
        pin_tries_left=tries,
        agency_card_key=derive_card_key(DEMO_AGENCY_MASTER_KEY, identification),
    )


def _cards(index: int, seed: int, case: Case, region: str, rng: random.Random) -> tuple[DemoCard, ...]:
    issue = date(rng.randint(2017, 2024), rng.randint(1, 12), rng.randint(1, 28))
    expiry = issue.replace(year=issue.year + 10)
    active, ssc = CardStatus.ACTIVE, CardKind.SOCIAL_SECURITY
    if case is Case.EXPIRED:
        issue = date(2010, rng.randint(1, 12), rng.randint(1, 28))
        expiry = issue.replace(year=2020)
        return (_card(index, seed, 1, ssc, active, region, issue, expiry),)
    if case is Case.LOST:
        return (_card(index, seed, 1, ssc, CardStatus.LOST_REPORTED, region, issue, expiry),)
    if case is Case.REPLACED:
        old = _card(index, seed, 1, ssc, CardStatus.REPLACED, region, issue, expiry)
        new_issue = date(2025, rng.randint(1, 12), rng.randint(1, 28))
        return old, _card(index, seed, 2, ssc, active, region, new_issue, new_issue.replace(year=2035))
    if case is Case.PIN_LOCKED:
        return (_card(index, seed, 1, ssc, active, region, issue, expiry, tries=0),)
    if case is Case.ZHEJIANG_PIN_CHANGED:
        pin = f"{rng.randint(0, 999_999):06d}"
        pin = pin if pin != INITIAL_PIN else "135790"
        return (_card(index, seed, 1, ssc, active, region, issue, expiry, pin=pin),)
    if case is Case.OLD_IC_HOLDER:
        old_issue = date(2008, rng.randint(1, 12), rng.randint(1, 28))
        old = _card(index, seed, 1, CardKind.OLD_MEDICAL_IC, active, region, old_issue, date(2099, 12, 31))
        return old, _card(index, seed, 2, ssc, active, region, issue, expiry)
    return (_card(index, seed, 1, ssc, active, region, issue, expiry),)
