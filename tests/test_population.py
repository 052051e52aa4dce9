"""The deterministic demo population the registry, the virtual cards and the simulator share."""

from __future__ import annotations

from collections import Counter

from gateway.demo.population import INITIAL_PIN, Case, demo_population, make_holder
from gateway.identity import is_valid_id_number
from gateway.reader.card import region_is_acceptable
from gateway.settlement.facts import CardKind, CardStatus


def test_the_same_seed_gives_the_same_people_and_cards() -> None:
    assert demo_population(50) == demo_population(50)
    assert demo_population(50, seed=1) != demo_population(50)
    assert make_holder(37) == demo_population(40)[37]


def test_the_first_card_is_an_in_city_card_with_the_initial_pin() -> None:
    first = demo_population(1)[0]
    assert first.case is Case.NINGBO
    assert first.card.pin == INITIAL_PIN and first.card.pin_tries_left == 6
    assert first.card.issuing_region_code.startswith("3302")


def test_every_case_is_present_in_the_default_population() -> None:
    cases = Counter(h.case for h in demo_population())
    assert set(cases) == set(Case)


def test_people_and_cards_are_well_formed() -> None:
    population = demo_population()
    numbers = [c.card_number for h in population for c in h.cards]
    assert len(numbers) == len(set(numbers))
    ids = [h.person.social_security_number for h in population]
    assert len(ids) == len(set(ids))
    for holder in population:
        person = holder.person
        assert is_valid_id_number(person.social_security_number)
        assert person.social_security_number[6:14] == f"{person.birth_date:%Y%m%d}"
        assert (int(person.social_security_number[16]) % 2 == 1) == (person.sex == "1")
        assert len(person.name.encode("gbk")) <= 30
        for card in holder.cards:
            assert len(card.card_number) == 9
            assert region_is_acceptable(card.issuing_region_code)
            assert card.issue_date < card.expiry_date


def test_edge_cases_look_like_what_they_are_named() -> None:
    for holder in demo_population():
        statuses = [c.status for c in holder.cards]
        if holder.case is Case.REPLACED:
            assert statuses == [CardStatus.REPLACED, CardStatus.ACTIVE]
        if holder.case is Case.LOST:
            assert statuses == [CardStatus.LOST_REPORTED]
        if holder.case is Case.PIN_LOCKED:
            assert holder.card.pin_tries_left == 0
        if holder.case is Case.OLD_IC_HOLDER:
            assert [c.kind for c in holder.cards] == [CardKind.OLD_MEDICAL_IC, CardKind.SOCIAL_SECURITY]
        if holder.case is Case.NINGBO_RETIRED_DISTRICT:
            assert holder.card.issuing_region_code in ("330204", "330283")
            assert holder.person.insured_region_code != holder.card.issuing_region_code
        if holder.case is Case.NINGBO_REGION_CHANGED:
            assert holder.person.insured_region_code != holder.card.issuing_region_code
        if holder.case is Case.OUTSIDE_PROVINCE:
            assert not holder.card.issuing_region_code.startswith("33")
        if holder.case in (Case.ZHEJIANG_FILED, Case.ZHEJIANG_UNFILED):
            assert holder.card.issuing_region_code.startswith("33")
            assert not holder.card.issuing_region_code.startswith("3302")
