"""The settlement rules: pure functions from facts and policy to a refusal or a decision.

`RULES` is the ordered table docs/rules.md documents (a test keeps the two in step): the first rule
that refuses decides the answer. Each refusal says, in Chinese and English, what the holder or the
clerk should do. No I/O here: the registry, the card and the ledger supply the facts, and the caller
acts on the decision (verifies the PIN on the card, records the split).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.identity import is_valid_id_number
from gateway.protocol.messages import pb
from gateway.regions import ZHEJIANG_PROVINCE_PREFIX, city_prefix, known_regions
from gateway.settlement.facts import (
    CardKind,
    CardRecord,
    CardStatus,
    Facts,
    InstitutionKind,
    InsuranceType,
    LookupProblem,
    MedicalType,
    PersonRecord,
    Purpose,
)
from gateway.settlement.policy import Policy, PolicyBook
from gateway.settlement.split import FundSplit, hospital_split, pharmacy_split


@dataclass(frozen=True)
class Refusal:
    rule: str
    status: int
    detail_en: str
    detail_zh: str


@dataclass(frozen=True)
class Admission:
    """What the rules decide before the balances: no rule refuses, whether the card's PIN is needed, and the
    policy a settlement is split under. No rule reads balances or year-to-date totals, so an admission holds for
    any; the split is then `decision(facts, admission)` on the balances the ledger locked."""

    pin_required: bool
    cross_region: bool
    policy: Policy | None = None          # the settlement date's policy (a settlement); None otherwise
    # A social security card's first successful settlement (see Decision.first_use_of_card).
    first_use_of_card: bool = False


@dataclass(frozen=True)
class Decision:
    pin_required: bool
    cross_region: bool
    split: FundSplit | None = None        # None for a balance query or a card read
    policy_version: str | None = None
    # A social security card's first successful settlement: the ledger marks it used and cancels the
    # holder's old medical IC cards in the same transaction.
    first_use_of_card: bool = False


Check = Callable[[Facts, "Policy | None"], Refusal | None]


@dataclass(frozen=True)
class Rule:
    rule_id: str
    title: str
    status: int
    purposes: frozenset[Purpose]
    check: Check


ALL = frozenset(Purpose)
SETTLE = frozenset({Purpose.SETTLE})


class RuleOrderError(RuntimeError):
    """A rule read a fact that an earlier rule should have refused the request for lacking: RULES is out of
    order, or a caller skipped decide(). A bug, never an answer to a terminal."""


def registered_card(facts: Facts) -> CardRecord:
    """The registry's record of the card, for the rules after C1 (which refuses an unregistered card)."""
    card = facts.registry.card
    if card is None:
        raise RuleOrderError(f"card {facts.chip.card_number} is not registered: rule C1 must refuse it first")
    return card


def insured_person(facts: Facts) -> PersonRecord:
    """The card holder's registry record, for the rules after P4 (which refuses a person not found)."""
    person = facts.registry.person
    if person is None:
        raise RuleOrderError(f"card {facts.chip.card_number} has no insured person: rule P4 must refuse it first")
    return person


def settling_policy(policy: Policy | None) -> Policy:
    """The policy in force, for the settling rules: decide() refuses a settlement without one (S0) first."""
    if policy is None:
        raise RuleOrderError("a settling rule ran without a policy: decide() must refuse with S0 first")
    return policy


def region_name(code: str) -> tuple[str, str]:
    regions = known_regions()
    region = regions.get(code) or regions.get(city_prefix(code) + "00")
    if region is None:
        return code, code
    return f"{region.name_zh}（{code}）", f"{region.name_en} ({code})"


def is_cross_region(facts: Facts) -> bool:
    person = insured_person(facts)
    return city_prefix(person.insured_region_code) != city_prefix(facts.institution.region_code)


# Request ----------------------------------------------------------------------------------------

KNOWN_MEDICAL_TYPES = {t.value for t in MedicalType}
ALLOWED_AT = {
    InstitutionKind.HOSPITAL: {MedicalType.ORDINARY_OUTPATIENT, MedicalType.SPECIAL_DISEASE_OUTPATIENT,
                               MedicalType.INPATIENT},
    InstitutionKind.PHARMACY: {MedicalType.PHARMACY_PURCHASE},
    InstitutionKind.KIOSK: set(),
}
KIND_ZH = {InstitutionKind.HOSPITAL: "医院", InstitutionKind.PHARMACY: "药店", InstitutionKind.KIOSK: "自助终端"}


def medical_type_given(facts: Facts) -> Refusal | None:
    if facts.request.medical_type == 0:
        return Refusal("A1", pb.STATUS_CODE_BAD_REQUEST, "medical_type is missing", "缺少医疗类别")
    return None


def medical_type_allowed(facts: Facts) -> Refusal | None:
    medical_type = facts.request.medical_type
    kind = facts.institution.kind
    if medical_type not in KNOWN_MEDICAL_TYPES:
        return Refusal("A2", pb.STATUS_CODE_MEDICAL_TYPE_NOT_ALLOWED, f"unknown medical type {medical_type}",
                       f"未知医疗类别{medical_type}")
    if medical_type not in ALLOWED_AT[kind]:
        return Refusal("A2", pb.STATUS_CODE_MEDICAL_TYPE_NOT_ALLOWED,
                       f"a {kind} cannot settle medical type {medical_type}",
                       f"{KIND_ZH[kind]}不能结算医疗类别{medical_type}")
    return None


def amount_in_range(facts: Facts, policy: Policy | None) -> Refusal | None:
    policy = settling_policy(policy)
    total = facts.request.total_fen
    if not policy.min_total_fen <= total <= policy.max_total_fen:
        return Refusal("A3", pb.STATUS_CODE_AMOUNT_OUT_OF_RANGE,
                       f"total {total} fen is outside {policy.min_total_fen} to {policy.max_total_fen} fen",
                       f"总金额{total}分超出{policy.min_total_fen}至{policy.max_total_fen}分的范围")
    items = facts.request.item_amounts_fen
    if len(items) > policy.max_items:
        return Refusal("A3", pb.STATUS_CODE_AMOUNT_OUT_OF_RANGE, f"more than {policy.max_items} fee items",
                       f"费用明细超过{policy.max_items}条")
    if items and (any(a < 0 for a in items) or sum(items) != total):
        return Refusal("A3", pb.STATUS_CODE_AMOUNT_OUT_OF_RANGE,
                       f"the fee items add up to {sum(items)} fen, the total is {total} fen",
                       f"费用明细合计{sum(items)}分，与总金额{total}分不符")
    return None


# Card and person --------------------------------------------------------------------------------


def card_registered(facts: Facts) -> Refusal | None:
    if facts.registry.card is None:
        return Refusal("C1", pb.STATUS_CODE_CARD_NOT_REGISTERED, f"card {facts.chip.card_number} is not registered",
                       f"卡号{facts.chip.card_number}未登记")
    return None


PROBLEM_STATUS = {
    LookupProblem.ID_MISTYPED: pb.STATUS_CODE_PERSON_ID_MISTYPED,
    LookupProblem.NOT_COVERED: pb.STATUS_CODE_PERSON_NOT_COVERED,
    LookupProblem.ID_MISMATCH: pb.STATUS_CODE_PERSON_ID_MISMATCH,
    LookupProblem.BANK_ACCOUNT_CHANGED: pb.STATUS_CODE_PERSON_BANK_ACCOUNT_CHANGED,
    LookupProblem.ID_CHANGED: pb.STATUS_CODE_PERSON_ID_CHANGED,
    LookupProblem.GOVERNMENT_STAFF: pb.STATUS_CODE_PERSON_GOVERNMENT_STAFF,
    LookupProblem.HMT_OR_FOREIGN: pb.STATUS_CODE_PERSON_HMT_OR_FOREIGN,
    LookupProblem.MULTIPLE_ACCOUNTS: pb.STATUS_CODE_PERSON_MULTIPLE_ACCOUNTS,
    LookupProblem.DUPLICATE_ID: pb.STATUS_CODE_PERSON_DUPLICATE_ID,
}


def id_number_valid(facts: Facts) -> Refusal | None:
    if not is_valid_id_number(facts.chip.social_security_number):
        return Refusal("P1", pb.STATUS_CODE_PERSON_ID_MISTYPED, "the ID number fails its check digit",
                       "身份证号码校验位错误")
    return None


def known_lookup_problem(facts: Facts) -> Refusal | None:
    problem = facts.registry.lookup_problem
    if problem is None:
        return None
    return Refusal("P2", PROBLEM_STATUS[problem], problem.value.replace("_", " "), problem.value)


def card_matches_person(facts: Facts) -> Refusal | None:
    card = registered_card(facts)
    if card.social_security_number != facts.chip.social_security_number:
        return Refusal("P3", pb.STATUS_CODE_PERSON_ID_MISMATCH,
                       "the ID number on the card differs from the registry's for this card",
                       "卡内身份证号码与系统登记不一致")
    return None


def person_found(facts: Facts) -> Refusal | None:
    if facts.registry.person is None:
        return Refusal("P4", pb.STATUS_CODE_PERSON_NOT_FOUND, "no insured person under this ID number",
                       "查无此参保人员")
    return None


def card_not_replaced(facts: Facts) -> Refusal | None:
    card = registered_card(facts)
    if card.status is CardStatus.REPLACED:
        return Refusal("C2", pb.STATUS_CODE_CARD_REPLACED, f"card {card.card_number} was replaced",
                       f"卡号{card.card_number}已补换")
    return None


def card_not_lost(facts: Facts) -> Refusal | None:
    card = registered_card(facts)
    if card.status is CardStatus.LOST_REPORTED:
        return Refusal("C3", pb.STATUS_CODE_CARD_LOST, f"card {card.card_number} is reported lost",
                       f"卡号{card.card_number}已挂失")
    return None


def old_card_still_valid(facts: Facts) -> Refusal | None:
    card, person = registered_card(facts), insured_person(facts)
    if card.kind is not CardKind.OLD_MEDICAL_IC:
        return None
    if card.status is CardStatus.CANCELLED or person.social_security_card_used:
        return Refusal("C4", pb.STATUS_CODE_OLD_MEDICAL_CARD_CANCELLED,
                       "the holder's social security card has been used, so this old card is void",
                       "持卡人已启用社会保障卡，原医保卡已自动注销")
    return None


def card_not_cancelled(facts: Facts) -> Refusal | None:
    card = registered_card(facts)
    if card.status is CardStatus.CANCELLED:
        return Refusal("C5", pb.STATUS_CODE_CARD_NOT_REGISTERED, f"card {card.card_number} is cancelled",
                       f"卡号{card.card_number}已注销")
    return None


def card_not_expired(facts: Facts) -> Refusal | None:
    card = registered_card(facts)
    expiry = min(card.expiry_date, facts.chip.expiry_date)
    if expiry < facts.request.on:
        return Refusal("C6", pb.STATUS_CODE_CARD_EXPIRED, f"expired on {expiry:%Y-%m-%d}",
                       f"有效期至{expiry:%Y-%m-%d}")
    return None


# Where the person is insured --------------------------------------------------------------------


def insured_in_province(facts: Facts) -> Refusal | None:
    person = insured_person(facts)
    if not person.insured_region_code.startswith(ZHEJIANG_PROVINCE_PREFIX):
        return Refusal("R1", pb.STATUS_CODE_OUTSIDE_PROVINCE,
                       f"insured in {person.insured_region_code}, outside Zhejiang",
                       f"参保地{person.insured_region_code}不在浙江省内")
    return None


def has_filing_here(facts: Facts) -> bool:
    """The holder has a filing, valid on the request's day, for care in the institution's city."""
    person = insured_person(facts)
    city = city_prefix(facts.institution.region_code)
    return any(f.covers(facts.request.on) and city_prefix(f.region_code) == city for f in person.filings)


def filed_for_care_here(facts: Facts) -> Refusal | None:
    if not is_cross_region(facts):
        return None
    person = insured_person(facts)
    if has_filing_here(facts):
        return None
    city = city_prefix(facts.institution.region_code)
    home_zh, home_en = region_name(person.insured_region_code)
    here_zh, here_en = region_name(city + "00")
    return Refusal("R3", pb.STATUS_CODE_FILING_REQUIRED,
                   f"insured in {home_en}, with no filing valid on {facts.request.on:%Y-%m-%d} for care in {here_en}",
                   f"参保地{home_zh}，{facts.request.on:%Y-%m-%d}无有效的{here_zh}异地就医备案")


def institution_designated(facts: Facts) -> Refusal | None:
    if is_cross_region(facts) and not facts.institution.cross_region_designated:
        return Refusal("R4", pb.STATUS_CODE_INSTITUTION_NOT_DESIGNATED,
                       f"{facts.institution.code} is not designated for cross-region settlement",
                       f"{facts.institution.code}不是异地就医定点结算机构")
    return None


def no_special_disease_elsewhere(facts: Facts) -> Refusal | None:
    if is_cross_region(facts) and facts.request.medical_type == MedicalType.SPECIAL_DISEASE_OUTPATIENT:
        return Refusal("R5", pb.STATUS_CODE_SPECIAL_DISEASE_NOT_SUPPORTED,
                       "special-disease outpatient care cannot be settled outside the home city",
                       "特殊病种不支持省内异地就医结算")
    return None


def settlement_needs_pin(facts: Facts) -> bool:
    """Whether settling this person here needs the card's PIN (what ReadCard tells the terminal)."""
    return is_cross_region(facts)


def pin_required(facts: Facts) -> bool:
    if facts.request.purpose is Purpose.SETTLE:
        return is_cross_region(facts)
    if facts.request.purpose is Purpose.QUERY_BALANCE:
        return facts.institution.kind is InstitutionKind.KIOSK or is_cross_region(facts)
    return False


def pin_supplied_where_required(facts: Facts) -> Refusal | None:
    if pin_required(facts) and not facts.request.pin_supplied:
        where = ("at a self-service kiosk" if facts.institution.kind is InstitutionKind.KIOSK
                 else "outside the holder's home city")
        where_zh = "自助终端查询" if facts.institution.kind is InstitutionKind.KIOSK else "异地结算"
        return Refusal("K1", pb.STATUS_CODE_PIN_REQUIRED, f"the card's PIN is needed {where}",
                       f"{where_zh}需输入社保卡密码")
    return None


def facts_only(check: Callable[[Facts], Refusal | None]) -> Check:
    return lambda facts, _policy: check(facts)


RULES: tuple[Rule, ...] = (
    Rule("A1", "the medical type is given", pb.STATUS_CODE_BAD_REQUEST, SETTLE, facts_only(medical_type_given)),
    Rule("A2", "the medical type is known and allowed at this kind of institution",
         pb.STATUS_CODE_MEDICAL_TYPE_NOT_ALLOWED, SETTLE, facts_only(medical_type_allowed)),
    Rule("A3", "the amount is within the policy's range and the fee items add up",
         pb.STATUS_CODE_AMOUNT_OUT_OF_RANGE, SETTLE, amount_in_range),
    Rule("P1", "the ID number passes its check digit", pb.STATUS_CODE_PERSON_ID_MISTYPED, ALL,
         facts_only(id_number_valid)),
    Rule("P2", "the ID number has no known look-up problem", pb.STATUS_CODE_PERSON_NOT_FOUND, ALL,
         facts_only(known_lookup_problem)),
    Rule("C1", "the card is registered", pb.STATUS_CODE_CARD_NOT_REGISTERED, ALL, facts_only(card_registered)),
    Rule("P3", "the card's ID number is the registry's", pb.STATUS_CODE_PERSON_ID_MISMATCH, ALL,
         facts_only(card_matches_person)),
    Rule("P4", "the person is insured", pb.STATUS_CODE_PERSON_NOT_FOUND, ALL, facts_only(person_found)),
    Rule("C2", "the card was not replaced", pb.STATUS_CODE_CARD_REPLACED, ALL, facts_only(card_not_replaced)),
    Rule("C3", "the card is not reported lost", pb.STATUS_CODE_CARD_LOST, ALL, facts_only(card_not_lost)),
    Rule("C4", "an old medical IC card is void once the new card was used",
         pb.STATUS_CODE_OLD_MEDICAL_CARD_CANCELLED, ALL, facts_only(old_card_still_valid)),
    Rule("C5", "the card is not cancelled", pb.STATUS_CODE_CARD_NOT_REGISTERED, ALL, facts_only(card_not_cancelled)),
    Rule("C6", "the card has not expired", pb.STATUS_CODE_CARD_EXPIRED, ALL, facts_only(card_not_expired)),
    Rule("R1", "the person is insured in Zhejiang", pb.STATUS_CODE_OUTSIDE_PROVINCE, ALL,
         facts_only(insured_in_province)),
    Rule("R3", "outside the home city: a valid filing for care here", pb.STATUS_CODE_FILING_REQUIRED, SETTLE,
         facts_only(filed_for_care_here)),
    Rule("R4", "outside the home city: a designated institution", pb.STATUS_CODE_INSTITUTION_NOT_DESIGNATED,
         SETTLE, facts_only(institution_designated)),
    Rule("R5", "outside the home city: no special disease", pb.STATUS_CODE_SPECIAL_DISEASE_NOT_SUPPORTED, SETTLE,
         facts_only(no_special_disease_elsewhere)),
    Rule("K1", "the PIN where one is needed", pb.STATUS_CODE_PIN_REQUIRED,
         frozenset({Purpose.SETTLE, Purpose.QUERY_BALANCE}), facts_only(pin_supplied_where_required)),
)


def admit(facts: Facts, policies: PolicyBook) -> Refusal | Admission:
    """The first refusing rule's refusal, or the admission: everything decide() decides but the split, which is
    the only part that reads balances and year-to-date totals."""
    purpose = facts.request.purpose
    policy = policies.for_date(facts.request.on) if purpose is Purpose.SETTLE else None
    if purpose is Purpose.SETTLE and policy is None:
        return Refusal("S0", pb.STATUS_CODE_TEMPORARILY_UNAVAILABLE,
                       f"no settlement policy covers {facts.request.on:%Y-%m-%d}; the operator must install it",
                       f"未配置{facts.request.on:%Y-%m-%d}适用的医保政策，请联系系统管理员")
    for rule in RULES:
        if purpose not in rule.purposes:
            continue
        refusal = rule.check(facts, policy)
        if refusal is not None:
            return refusal
    if policy is None:
        return Admission(pin_required=pin_required(facts), cross_region=is_cross_region(facts))
    card = registered_card(facts)
    return Admission(pin_required=pin_required(facts), cross_region=is_cross_region(facts), policy=policy,
                     first_use_of_card=card.kind is CardKind.SOCIAL_SECURITY and card.first_used_on is None)


def decision(facts: Facts, admitted: Admission) -> Decision:
    """The decision on `facts`' balances and year-to-date totals, for facts that `admitted` was decided on
    (whatever their balances): with a policy, the split."""
    policy = admitted.policy
    if policy is None:
        return Decision(pin_required=admitted.pin_required, cross_region=admitted.cross_region)
    return Decision(pin_required=admitted.pin_required, cross_region=admitted.cross_region,
                    split=fund_split(facts, policy), policy_version=policy.version,
                    first_use_of_card=admitted.first_use_of_card)


def decide(facts: Facts, policies: PolicyBook) -> Refusal | Decision:
    """The first refusing rule's refusal, or the decision: PIN needed or not, and the split."""
    admitted = admit(facts, policies)
    return admitted if isinstance(admitted, Refusal) else decision(facts, admitted)


@dataclass(frozen=True)
class SplitTerms:
    """What a settlement's split goes by besides its total, the balances and the year-to-date totals: the same for
    every settlement under one policy, insurance type, medical type and institution level."""

    pharmacy: bool            # a pharmacy purchase: the personal accounts, then cash; no fund
    personal_accounts: bool   # the scheme has personal accounts (residents' has none)
    deductible_fen: int
    pooled_cap_fen: int
    ratio_bp: int             # the pooled fund's share above the deductible, basis points


def split_terms(facts: Facts, policy: Policy) -> SplitTerms:
    person = insured_person(facts)
    scheme = policy.scheme_for(person.insurance_type)
    retired = person.insurance_type is InsuranceType.EMPLOYEE_RETIRED
    deductible_fen, pooled_cap_fen = policy.limits_for(person.insurance_type)
    medical_type = facts.request.medical_type
    return SplitTerms(pharmacy=medical_type == MedicalType.PHARMACY_PURCHASE,
                      personal_accounts=scheme.personal_accounts, deductible_fen=deductible_fen,
                      pooled_cap_fen=pooled_cap_fen,
                      ratio_bp=scheme.ratios(medical_type, retired).for_level(facts.institution.level))


def split_on(terms: SplitTerms, total_fen: int, current_year_fen: int, prior_years_fen: int,
             deductible_counted_ytd_fen: int, pooled_fund_paid_ytd_fen: int) -> FundSplit:
    """The split of `total_fen` under `terms` on these balances and year-to-date totals: what `fund_split` gives
    for facts holding them. The ledger's writer splits so, the terms computed once per batch."""
    if terms.pharmacy:
        return pharmacy_split(total_fen, current_year_fen, prior_years_fen, terms.personal_accounts)
    return hospital_split(total_fen, current_year_fen, prior_years_fen, deductible_counted_ytd_fen,
                          pooled_fund_paid_ytd_fen, personal_accounts=terms.personal_accounts,
                          deductible_fen=terms.deductible_fen, pooled_cap_fen=terms.pooled_cap_fen,
                          ratio_bp=terms.ratio_bp)


def fund_split(facts: Facts, policy: Policy) -> FundSplit:
    balances, year_to_date = facts.balances, facts.year_to_date
    return split_on(split_terms(facts, policy), facts.request.total_fen, balances.current_year_fen,
                    balances.prior_years_fen, year_to_date.deductible_counted_fen, year_to_date.pooled_fund_paid_fen)
