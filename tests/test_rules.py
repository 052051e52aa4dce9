"""The settlement rules as a table: one row per rule of the Ningbo guidance and per refusal code."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.protocol.messages import pb
from gateway.protocol.status import STATUS_TEXTS
from gateway.settlement.facts import (
    Balances,
    CardKind,
    CardStatus,
    Filing,
    FilingKind,
    InsuranceType,
    LookupProblem,
    MedicalType,
    Purpose,
    YearToDate,
)
from gateway.settlement.policy import PolicyBook, load_builtin_policies
from gateway.settlement.rules import (
    PROBLEM_STATUS,
    RULES,
    Admission,
    Decision,
    Refusal,
    RuleOrderError,
    admit,
    decide,
    decision,
)
from tests.rules_support import (
    COMMUNITY,
    HOSPITAL,
    KIOSK,
    NINGBO_FILING,
    PHARMACY,
    TODAY,
    UNDESIGNATED_HOSPITAL,
    facts,
)

POLICIES = load_builtin_policies()
ROOT = Path(__file__).resolve().parent.parent
HANGZHOU = {"insured_region_code": "330100"}
HANGZHOU_FILED = {"insured_region_code": "330100", "filings": (NINGBO_FILING,)}

# (case, facts, expected status, rule id, what the message must mention)
REFUSALS: list[tuple[str, Any, int, str]] = [
    ("medical type missing", facts(medical_type=0), pb.STATUS_CODE_BAD_REQUEST, "A1"),
    ("unknown medical type", facts(medical_type=99), pb.STATUS_CODE_MEDICAL_TYPE_NOT_ALLOWED, "A2"),
    ("inpatient at a pharmacy", facts(medical_type=MedicalType.INPATIENT, institution=PHARMACY),
     pb.STATUS_CODE_MEDICAL_TYPE_NOT_ALLOWED, "A2"),
    ("pharmacy purchase at a hospital", facts(medical_type=MedicalType.PHARMACY_PURCHASE),
     pb.STATUS_CODE_MEDICAL_TYPE_NOT_ALLOWED, "A2"),
    ("settling at a kiosk", facts(institution=KIOSK), pb.STATUS_CODE_MEDICAL_TYPE_NOT_ALLOWED, "A2"),
    ("zero amount", facts(total_fen=0), pb.STATUS_CODE_AMOUNT_OUT_OF_RANGE, "A3"),
    ("negative amount", facts(total_fen=-100), pb.STATUS_CODE_AMOUNT_OUT_OF_RANGE, "A3"),
    ("amount over the policy maximum", facts(total_fen=50_000_001), pb.STATUS_CODE_AMOUNT_OUT_OF_RANGE, "A3"),
    ("items not adding up", facts(total_fen=1000, items=(300, 600)), pb.STATUS_CODE_AMOUNT_OUT_OF_RANGE, "A3"),
    ("negative item", facts(total_fen=1000, items=(1200, -200)), pb.STATUS_CODE_AMOUNT_OUT_OF_RANGE, "A3"),
    ("ID check digit fails", facts(chip={"social_security_number": "330203199001011235"}),
     pb.STATUS_CODE_PERSON_ID_MISTYPED, "P1"),
    ("unregistered card", facts(registered=False), pb.STATUS_CODE_CARD_NOT_REGISTERED, "C1"),
    ("card of another person", facts(card={"social_security_number": "11010519491231002X"}),
     pb.STATUS_CODE_PERSON_ID_MISMATCH, "P3"),
    ("no such person", facts(person_known=False), pb.STATUS_CODE_PERSON_NOT_FOUND, "P4"),
    ("replaced card", facts(card={"status": CardStatus.REPLACED}), pb.STATUS_CODE_CARD_REPLACED, "C2"),
    ("reported lost", facts(card={"status": CardStatus.LOST_REPORTED}), pb.STATUS_CODE_CARD_LOST, "C3"),
    ("old IC card after the new card's first use",
     facts(card={"kind": CardKind.OLD_MEDICAL_IC}, person={"social_security_card_used": True}),
     pb.STATUS_CODE_OLD_MEDICAL_CARD_CANCELLED, "C4"),
    ("old IC card cancelled", facts(card={"kind": CardKind.OLD_MEDICAL_IC, "status": CardStatus.CANCELLED}),
     pb.STATUS_CODE_OLD_MEDICAL_CARD_CANCELLED, "C4"),
    ("cancelled social security card", facts(card={"status": CardStatus.CANCELLED}),
     pb.STATUS_CODE_CARD_NOT_REGISTERED, "C5"),
    ("expired in the registry", facts(card={"expiry_date": date(2026, 11, 23)}), pb.STATUS_CODE_CARD_EXPIRED, "C6"),
    ("expired on the chip", facts(chip={"expiry_date": date(2025, 1, 1)}), pb.STATUS_CODE_CARD_EXPIRED, "C6"),
    ("insured in Shanghai", facts(person={"insured_region_code": "310100"}), pb.STATUS_CODE_OUTSIDE_PROVINCE, "R1"),
    ("Hangzhou, no filing", facts(person=HANGZHOU, pin=True), pb.STATUS_CODE_FILING_REQUIRED, "R3"),
    ("Hangzhou, filing expired", facts(person={**HANGZHOU, "filings": (
        Filing(FilingKind.TRANSFER, "330200", date(2025, 1, 1), date(2026, 6, 30)),)}, pin=True),
     pb.STATUS_CODE_FILING_REQUIRED, "R3"),
    ("Hangzhou, filed for Wenzhou not Ningbo", facts(person={**HANGZHOU, "filings": (
        Filing(FilingKind.RESIDENCE, "330300", date(2025, 1, 1), None),)}, pin=True),
     pb.STATUS_CODE_FILING_REQUIRED, "R3"),
    ("Hangzhou, filing starts tomorrow", facts(person={**HANGZHOU, "filings": (
        Filing(FilingKind.RESIDENCE, "330200", date(2026, 11, 25), None),)}, pin=True),
     pb.STATUS_CODE_FILING_REQUIRED, "R3"),
    ("Hangzhou, filed, institution not designated", facts(person=HANGZHOU_FILED, institution=UNDESIGNATED_HOSPITAL,
                                                           pin=True), pb.STATUS_CODE_INSTITUTION_NOT_DESIGNATED, "R4"),
    ("Hangzhou, filed, special disease", facts(person=HANGZHOU_FILED, medical_type=14, pin=True),
     pb.STATUS_CODE_SPECIAL_DISEASE_NOT_SUPPORTED, "R5"),
    ("Hangzhou, filed, no PIN sent", facts(person=HANGZHOU_FILED), pb.STATUS_CODE_PIN_REQUIRED, "K1"),
    ("balance at a kiosk without PIN", facts(purpose=Purpose.QUERY_BALANCE, institution=KIOSK),
     pb.STATUS_CODE_PIN_REQUIRED, "K1"),
]
REFUSALS += [
    (f"look-up problem: {problem.value}", facts(lookup_problem=problem), status, "P2")
    for problem, status in [
        (LookupProblem.NOT_COVERED, pb.STATUS_CODE_PERSON_NOT_COVERED),
        (LookupProblem.ID_MISMATCH, pb.STATUS_CODE_PERSON_ID_MISMATCH),
        (LookupProblem.BANK_ACCOUNT_CHANGED, pb.STATUS_CODE_PERSON_BANK_ACCOUNT_CHANGED),
        (LookupProblem.ID_CHANGED, pb.STATUS_CODE_PERSON_ID_CHANGED),
        (LookupProblem.GOVERNMENT_STAFF, pb.STATUS_CODE_PERSON_GOVERNMENT_STAFF),
        (LookupProblem.HMT_OR_FOREIGN, pb.STATUS_CODE_PERSON_HMT_OR_FOREIGN),
        (LookupProblem.MULTIPLE_ACCOUNTS, pb.STATUS_CODE_PERSON_MULTIPLE_ACCOUNTS),
        (LookupProblem.DUPLICATE_ID, pb.STATUS_CODE_PERSON_DUPLICATE_ID),
        (LookupProblem.ID_MISTYPED, pb.STATUS_CODE_PERSON_ID_MISTYPED),
    ]
]


@pytest.mark.parametrize(("case", "given", "status", "rule"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals(case: str, given: Any, status: int, rule: str) -> None:
    outcome = decide(given, POLICIES)
    assert isinstance(outcome, Refusal), outcome
    assert (outcome.status, outcome.rule) == (status, rule), outcome
    # The rule table (docs/rules.md is checked against it) names the status its check refuses with; P2's
    # depends on the look-up problem.
    if rule != "P2":
        assert next(r for r in RULES if r.rule_id == rule).status == outcome.status
    # Every refusal carries the status's clerk text (the wire adds it) and a specific detail.
    assert STATUS_TEXTS[outcome.status].en and outcome.detail_en and outcome.detail_zh


ACCEPTED = [
    ("in Ningbo: no PIN", facts(), False, False),
    ("in Ningbo with a PIN sent anyway: still no PIN", facts(pin=True), False, False),
    ("retired Jiangdong code on the card, insured in Haishu", facts(chip={"issuing_region_code": "330204"}),
     False, False),
    ("insured under the retired Fenghua city code", facts(person={"insured_region_code": "330283"}), False, False),
    ("moved district: judged by the insured region", facts(person={"insured_region_code": "330212"},
                                                            chip={"issuing_region_code": "330203"}), False, False),
    ("city-level agency code", facts(person={"insured_region_code": "330299"}), False, False),
    ("Hangzhou, filed, designated, PIN sent", facts(person=HANGZHOU_FILED, pin=True), True, True),
    ("Hangzhou, transfer filing for a Ningbo district", facts(person={**HANGZHOU, "filings": (
        Filing(FilingKind.TRANSFER, "330212", date(2026, 1, 1), date(2026, 12, 31)),)}, pin=True), True, True),
    ("special disease in the home city", facts(medical_type=14), False, False),
    ("old IC card before the new card's first use", facts(card={"kind": CardKind.OLD_MEDICAL_IC}), False, False),
    ("pharmacy purchase", facts(medical_type=41, institution=PHARMACY), False, False),
    ("inpatient", facts(medical_type=21), False, False),
    ("balance at a counter: no PIN", facts(purpose=Purpose.QUERY_BALANCE), False, False),
    ("balance at a kiosk with the PIN", facts(purpose=Purpose.QUERY_BALANCE, institution=KIOSK, pin=True),
     True, False),
    ("items that add up", facts(total_fen=1000, items=(400, 600)), False, False),
    ("the registry's and the chip's expiry date is today: still valid",
     facts(card={"expiry_date": TODAY}, chip={"expiry_date": TODAY}), False, False),
]


@pytest.mark.parametrize(("case", "given", "pin", "cross"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_decisions(case: str, given: Any, pin: bool, cross: bool) -> None:
    outcome = decide(given, POLICIES)
    assert isinstance(outcome, Decision), outcome
    assert (outcome.pin_required, outcome.cross_region) == (pin, cross)
    if given.request.purpose is Purpose.SETTLE:
        assert outcome.split is not None and outcome.split.total_fen == given.request.total_fen
        assert outcome.policy_version == "NB-2026-illustrative-1"
    else:
        assert outcome.split is None


def test_a_social_security_cards_first_settlement_is_flagged() -> None:
    first = decide(facts(), POLICIES)
    later = decide(facts(card={"first_used_on": date(2026, 1, 5)}), POLICIES)
    old_ic = decide(facts(card={"kind": CardKind.OLD_MEDICAL_IC}), POLICIES)
    assert isinstance(first, Decision) and first.first_use_of_card
    assert isinstance(later, Decision) and not later.first_use_of_card
    assert isinstance(old_ic, Decision) and not old_ic.first_use_of_card


def test_the_policy_is_chosen_by_the_settlement_date() -> None:
    last_year = decide(facts(on=date(2025, 12, 31), card={"issue_date": date(2020, 1, 1)}), POLICIES)
    assert isinstance(last_year, Decision) and last_year.policy_version == "NB-2025-illustrative-1"
    until_2026 = PolicyBook([policy for policy in POLICIES.policies if policy.insurance_year <= 2026])
    no_policy = decide(facts(on=date(2027, 1, 2)), until_2026)
    assert isinstance(no_policy, Refusal) and no_policy.status == pb.STATUS_CODE_TEMPORARILY_UNAVAILABLE
    assert decide(facts(on=date(2027, 1, 2)), PolicyBook([])) == no_policy


def test_a_read_card_is_refused_only_for_card_and_person_problems() -> None:
    lost = decide(facts(purpose=Purpose.READ_CARD, card={"status": CardStatus.LOST_REPORTED}), POLICIES)
    assert isinstance(lost, Refusal) and lost.status == pb.STATUS_CODE_CARD_LOST
    unfiled = decide(facts(purpose=Purpose.READ_CARD, person=HANGZHOU), POLICIES)
    assert isinstance(unfiled, Decision) and unfiled.cross_region


def test_employees_residents_and_retirees_pay_by_their_scheme() -> None:
    active = decide(facts(total_fen=200_000, balances=Balances(0, 0)), POLICIES)
    retired = decide(facts(total_fen=200_000, balances=Balances(0, 0),
                           person={"insurance_type": InsuranceType.EMPLOYEE_RETIRED}), POLICIES)
    resident = decide(facts(total_fen=200_000, balances=Balances(80_000, 80_000),
                            person={"insurance_type": InsuranceType.RESIDENT}), POLICIES)
    assert isinstance(active, Decision) and isinstance(retired, Decision) and isinstance(resident, Decision)
    assert active.split and retired.split and resident.split
    # 2,000 yuan at a tertiary hospital, no accounts: 750 deductible in cash, 75% of 1,250 from the fund.
    assert (active.split.deductible_counted_fen, active.split.pooled_fund_fen) == (75_000, 93_750)
    assert (retired.split.deductible_counted_fen, retired.split.pooled_fund_fen) == (30_000, 137_700)
    assert resident.split.account_fen == 0  # residents have no personal accounts, whatever a balance says


_fen = st.integers(0, 3_000_000)
_balances = st.builds(Balances, _fen, _fen)
_year_to_date = st.builds(YearToDate, _fen, _fen)


@st.composite
def _any_facts(draw: st.DrawFn) -> Any:
    """Facts of every kind the rules meet: refused for each reason, admitted with and without a PIN, any
    balances and year-to-date totals."""
    day = draw(st.sampled_from([TODAY, date(2025, 12, 31), date(2027, 1, 2), date(2031, 1, 1)]))
    total = draw(st.one_of(st.integers(-100, 2_000_000), st.just(50_000_001)))
    items = draw(st.sampled_from([(), (total,), (total - 1, 1), (1, 2)]))
    return facts(
        purpose=draw(st.sampled_from(list(Purpose))),
        medical_type=draw(st.sampled_from([0, 11, 14, 21, 41, 99])),
        total_fen=total, items=items, pin=draw(st.booleans()), on=day,
        institution=draw(st.sampled_from([HOSPITAL, UNDESIGNATED_HOSPITAL, COMMUNITY, PHARMACY, KIOSK])),
        card={"kind": draw(st.sampled_from(list(CardKind))), "status": draw(st.sampled_from(list(CardStatus))),
              "first_used_on": draw(st.sampled_from([None, date(2026, 1, 5)])),
              "expiry_date": draw(st.sampled_from([date(2030, 1, 1), date(2026, 11, 23)]))},
        person={"insurance_type": draw(st.sampled_from(list(InsuranceType))),
                "insured_region_code": draw(st.sampled_from(["330203", "330212", "330100", "310100"])),
                "filings": draw(st.sampled_from([(), (NINGBO_FILING,)])),
                "social_security_card_used": draw(st.booleans())},
        registered=draw(st.sampled_from([True, True, True, False])),
        person_known=draw(st.sampled_from([True, True, True, False])),
        lookup_problem=draw(st.one_of(st.none(), st.none(), st.sampled_from(list(LookupProblem)))),
        balances=draw(_balances), year_to_date=draw(_year_to_date))


@st.composite
def _settlements(draw: st.DrawFn) -> Any:
    """Facts the rules admit for a settlement: every scheme, medical type, institution level and region that
    splits differently, any balances and year-to-date totals."""
    institution, medical_type = draw(st.sampled_from([(HOSPITAL, 11), (HOSPITAL, 14), (HOSPITAL, 21),
                                                      (COMMUNITY, 11), (UNDESIGNATED_HOSPITAL, 21),
                                                      (PHARMACY, 41)]))
    cross = draw(st.booleans()) and institution is not UNDESIGNATED_HOSPITAL and medical_type != 14
    return facts(
        medical_type=medical_type, total_fen=draw(st.integers(1, 2_000_000)), pin=cross,
        on=draw(st.sampled_from([TODAY, date(2025, 12, 31), date(2027, 1, 2)])), institution=institution,
        card={"kind": draw(st.sampled_from(list(CardKind))),
              "first_used_on": draw(st.sampled_from([None, date(2025, 1, 5)])),
              "issue_date": date(2020, 1, 1)},
        person={"insurance_type": draw(st.sampled_from(list(InsuranceType))),
                **(HANGZHOU_FILED if cross else {"insured_region_code": draw(st.sampled_from(["330203", "330212"]))})},
        balances=draw(_balances), year_to_date=draw(_year_to_date))


class _Unread:
    """Stands for balances and year-to-date totals that must not be read: reading any field fails."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a rule read {name} before the ledger locked it")


@given(st.one_of(_any_facts(), _settlements()))
def test_deciding_once_is_the_rules_decision(locked: Any) -> None:
    """What the request path admits reads no balance and no year-to-date total (there it has none it could trust),
    and completed with the split on the balances the writer locked it is exactly the rules' decision on them — so
    the writer does not run the rules a second time while the card's state is the one they saw."""
    admitted = admit(replace(locked, balances=_Unread(), year_to_date=_Unread()), POLICIES)
    whole = decide(locked, POLICIES)
    if isinstance(admitted, Refusal):
        assert whole == admitted
        return
    assert isinstance(admitted, Admission) and isinstance(whole, Decision)
    completed = decision(locked, admitted)
    assert completed == whole
    assert (completed.split is not None) == (locked.request.purpose is Purpose.SETTLE)


NO_CARD = {"registered": False}
NO_PERSON = {"person_known": False}


@pytest.mark.parametrize(
    ("rule_id", "missing", "relied_on"),
    [
        ("P3", NO_CARD, "C1"), ("C2", NO_CARD, "C1"), ("C3", NO_CARD, "C1"), ("C4", NO_CARD, "C1"),
        ("C5", NO_CARD, "C1"), ("C6", NO_CARD, "C1"),
        ("C4", NO_PERSON, "P4"), ("R1", NO_PERSON, "P4"), ("R3", NO_PERSON, "P4"), ("R4", NO_PERSON, "P4"),
        ("R5", NO_PERSON, "P4"), ("K1", NO_PERSON, "P4"),
    ],
)
def test_a_rule_asked_before_the_rule_it_relies_on_fails_clearly(rule_id: str, missing: dict[str, bool],
                                                                 relied_on: str) -> None:
    # decide() never lets it happen (C1 and P4 refuse first); a reordered table must not pass unnoticed,
    # with or without `python -O`.
    rule = next(r for r in RULES if r.rule_id == rule_id)
    policy = POLICIES.for_date(TODAY)
    with pytest.raises(RuleOrderError, match=f"rule {relied_on} must refuse it first"):
        rule.check(facts(**missing), policy)


def test_a_settling_rule_without_a_policy_fails_clearly() -> None:
    amount = next(r for r in RULES if r.rule_id == "A3")
    with pytest.raises(RuleOrderError, match="S0"):
        amount.check(facts(), None)


def test_every_rule_is_documented_with_its_status_and_a_cited_sentence() -> None:
    text = (ROOT / "docs/rules.md").read_text(encoding="utf-8")
    for rule in RULES:
        row = re.search(rf"^\| {rule.rule_id} \|.*$", text, re.MULTILINE)
        assert row, f"rule {rule.rule_id} is not in docs/rules.md"
        if rule.rule_id == "P2":  # one status per look-up reason, tabled in section 3
            for status in PROBLEM_STATUS.values():
                assert pb.StatusCode.Name(status) in text  # type: ignore[arg-type]
            continue
        assert pb.StatusCode.Name(rule.status) in row.group(0), rule.rule_id  # type: ignore[arg-type]
    for code in ("PIN_WRONG", "PIN_LOCKED"):
        assert f"STATUS_CODE_{code}" in text


def test_every_quotation_in_the_rules_document_is_verbatim_from_the_guidance() -> None:
    guidance = (ROOT / "docs/sources/ningbo-social-security-card-guidance.txt").read_text(encoding="utf-8")
    quotes = re.findall("「(.*?)」", (ROOT / "docs/rules.md").read_text(encoding="utf-8"))
    assert len(quotes) >= 20
    for quote in quotes:
        assert quote.strip("()") in guidance or quote in guidance, quote
