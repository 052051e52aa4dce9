"""Building facts for rule tests: a plain in-city settlement that each test changes in one way."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from gateway.settlement.facts import (
    Balances,
    CardKind,
    CardRecord,
    CardStatus,
    ChipFacts,
    Facts,
    Filing,
    FilingKind,
    Institution,
    InstitutionKind,
    InstitutionLevel,
    InsuranceType,
    MedicalType,
    PersonRecord,
    Purpose,
    RegistryFacts,
    SettlementRequest,
    YearToDate,
)

TODAY = date(2026, 11, 24)
SSN = "330203199001011236"
PERSON_ID = 3_000_000_000_000_000_001  # the registry's id of the person (gateway.registry.models.new_person_id)
CARD = "N00000001"

HOSPITAL = Institution("H33020300001", "330203", InstitutionKind.HOSPITAL, InstitutionLevel.TERTIARY, True)
UNDESIGNATED_HOSPITAL = Institution("H33021200002", "330212", InstitutionKind.HOSPITAL, InstitutionLevel.SECONDARY,
                                    False)
COMMUNITY = Institution("H33020500003", "330205", InstitutionKind.HOSPITAL, InstitutionLevel.COMMUNITY, True)
PHARMACY = Institution("P33020300004", "330203", InstitutionKind.PHARMACY, None, True)
KIOSK = Institution("K33020300006", "330203", InstitutionKind.KIOSK, None, True)
DEFAULT_BALANCES = Balances(50_000, 200_000)
NOTHING_YET = YearToDate()
NINGBO_FILING = Filing(FilingKind.RESIDENCE, "330200", date(2025, 1, 1), None)


def facts(
    *,
    purpose: Purpose = Purpose.SETTLE,
    medical_type: int = MedicalType.ORDINARY_OUTPATIENT,
    total_fen: int = 10_000,
    items: tuple[int, ...] = (),
    pin: bool = False,
    on: date = TODAY,
    institution: Institution = HOSPITAL,
    card: dict[str, Any] | None = None,
    person: dict[str, Any] | None = None,
    chip: dict[str, Any] | None = None,
    registered: bool = True,
    person_known: bool = True,
    lookup_problem: Any = None,
    balances: Balances = DEFAULT_BALANCES,
    year_to_date: YearToDate = NOTHING_YET,
) -> Facts:
    card_record = replace(CardRecord(CARD, SSN, CardKind.SOCIAL_SECURITY, CardStatus.ACTIVE, date(2020, 1, 1),
                                     date(2030, 1, 1)), **(card or {}))
    person_record = replace(PersonRecord(SSN, PERSON_ID, "张三", InsuranceType.EMPLOYEE_ACTIVE, "330203"),
                            **(person or {}))
    chip_facts = replace(ChipFacts(CARD, SSN, "330203", date(2030, 1, 1)), **(chip or {}))
    return Facts(
        request=SettlementRequest(purpose, on, medical_type, total_fen, items, pin),
        chip=chip_facts,
        registry=RegistryFacts(card_record if registered else None, person_record if person_known else None,
                               lookup_problem),
        institution=institution,
        balances=balances,
        year_to_date=year_to_date,
    )
