"""The facts settlement rules decide on. Plain values: no database, no reader, no clock.

The registry (gateway.serve.reads) and the card reader produce them; `gateway.settlement.rules`
turns them into a refusal or a decision.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date


class InsuranceType(enum.StrEnum):
    EMPLOYEE_ACTIVE = "employee_active"
    EMPLOYEE_RETIRED = "employee_retired"
    RESIDENT = "resident"


class CardKind(enum.StrEnum):
    SOCIAL_SECURITY = "social_security"
    OLD_MEDICAL_IC = "old_medical_ic"


class CardStatus(enum.StrEnum):
    ACTIVE = "active"
    LOST_REPORTED = "lost_reported"
    REPLACED = "replaced"
    CANCELLED = "cancelled"


class FilingKind(enum.StrEnum):
    TRANSFER = "transfer"     # transfer for treatment elsewhere (转外就医)
    RESIDENCE = "residence"   # residence elsewhere (异地居住)


class LookupProblem(enum.StrEnum):
    """Why a person look-up fails, one per reason the Ningbo guidance lists (DESIGN.md 3.1 item 9).

    `ID_MISTYPED` is never stored: it is what a number failing its GB 11643 check digit means.
    """

    ID_MISTYPED = "id_mistyped"
    NOT_COVERED = "not_covered"
    ID_MISMATCH = "id_mismatch"
    BANK_ACCOUNT_CHANGED = "bank_account_changed"
    ID_CHANGED = "id_changed"
    GOVERNMENT_STAFF = "government_staff"
    HMT_OR_FOREIGN = "hmt_or_foreign"
    MULTIPLE_ACCOUNTS = "multiple_accounts"
    DUPLICATE_ID = "duplicate_id"


class InstitutionKind(enum.StrEnum):
    HOSPITAL = "hospital"
    PHARMACY = "pharmacy"
    KIOSK = "kiosk"


class InstitutionLevel(enum.StrEnum):
    COMMUNITY = "community"
    SECONDARY = "secondary"
    TERTIARY = "tertiary"


class MedicalType(enum.IntEnum):
    """National med_type codes; the protocol's MedicalType values are the same numbers."""

    ORDINARY_OUTPATIENT = 11
    SPECIAL_DISEASE_OUTPATIENT = 14
    INPATIENT = 21
    PHARMACY_PURCHASE = 41


class Purpose(enum.StrEnum):
    SETTLE = "settle"              # PreSettle and Settle decide alike
    QUERY_BALANCE = "query_balance"
    READ_CARD = "read_card"


@dataclass(frozen=True)
class Filing:
    kind: FilingKind
    region_code: str          # where the care is filed for (a city or district code)
    valid_from: date
    valid_to: date | None     # None: open-ended

    def covers(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)


@dataclass(frozen=True)
class CardRecord:
    """The registry's record of a card."""

    card_number: str
    social_security_number: str
    kind: CardKind
    status: CardStatus
    issue_date: date
    expiry_date: date
    first_used_on: date | None = None


@dataclass(frozen=True)
class PersonRecord:
    social_security_number: str
    person_id: int            # the registry's opaque id of the person: what the ledger keys the person by
    name: str
    insurance_type: InsuranceType
    insured_region_code: str  # the current pooling region; may differ from the card's district
    filings: tuple[Filing, ...] = ()
    # True once any social security card of this person settled successfully: old IC cards are void.
    social_security_card_used: bool = False


@dataclass(frozen=True)
class RegistryFacts:
    """What the registry says about the card presented and its holder."""

    card: CardRecord | None                       # None: the card number is not registered
    person: PersonRecord | None                   # None: no person under the card's number
    lookup_problem: LookupProblem | None = None   # a known reason the person cannot be found


@dataclass(frozen=True)
class ChipFacts:
    """What the card's chip says (the parts the rules need)."""

    card_number: str
    social_security_number: str
    issuing_region_code: str
    expiry_date: date


@dataclass(frozen=True)
class Institution:
    code: str
    region_code: str
    kind: InstitutionKind
    level: InstitutionLevel | None
    cross_region_designated: bool


@dataclass(frozen=True)
class Balances:
    current_year_fen: int = 0
    prior_years_fen: int = 0


@dataclass(frozen=True)
class YearToDate:
    """The person's totals so far in the insurance year (from the ledger)."""

    deductible_counted_fen: int = 0
    pooled_fund_paid_fen: int = 0


@dataclass(frozen=True)
class SettlementRequest:
    purpose: Purpose
    on: date                                    # the settlement date: chooses the policy year
    medical_type: int = 0                       # raw from the wire; the rules check it
    total_fen: int = 0
    item_amounts_fen: tuple[int, ...] = ()      # FeeItem amounts, when the terminal sent items
    pin_supplied: bool = False                  # whether the terminal sent a PIN (never the PIN itself)


@dataclass(frozen=True)
class Facts:
    request: SettlementRequest
    chip: ChipFacts
    registry: RegistryFacts
    institution: Institution
    balances: Balances = field(default_factory=Balances)
    year_to_date: YearToDate = field(default_factory=YearToDate)
