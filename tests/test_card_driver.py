"""The card driver against virtual cards and deliberately broken ones: every status-word path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from gateway.demo.card import Quirks, VirtualCard, card_from_population
from gateway.demo.population import demo_population
from gateway.identity import is_valid_id_number
from gateway.protocol.messages import pb
from gateway.reader import apdu
from gateway.reader.agency import DEMO_AGENCY_MASTER_KEY
from gateway.reader.card import CardData, region_is_acceptable
from gateway.reader.driver import EF05_RECORDS, RECORDS, SocialSecurityCardDriver, read_script
from gateway.reader.errors import CardProblem, PinLocked, PinWrong
from gateway.reader.virtual import VirtualReader

TODAY = date(2026, 11, 24)


def result_of(deferred: Deferred[Any]) -> Any:
    """The result of an already-fired Deferred (virtual readers answer synchronously)."""
    out: list[Any] = []
    deferred.addBoth(out.append)
    assert out, "the Deferred did not fire"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def driver_for(card: Any) -> SocialSecurityCardDriver:
    return SocialSecurityCardDriver(VirtualReader("test", card), today=lambda: TODAY)


def read(card: Any) -> CardData:
    return result_of(driver_for(card).read())  # type: ignore[no-any-return]


def problem_of(deferred: Deferred[Any]) -> CardProblem:
    with pytest.raises(CardProblem) as raised:
        result_of(deferred)
    return raised.value


@pytest.mark.parametrize("quirks", [Quirks(), Quirks(select_answers_61=True), Quirks(records_via_61=True),
                                    Quirks(select_answers_61=True, records_via_61=True)],
                         ids=["9000", "select-61xx", "records-61xx", "both-61xx"])
def test_every_answering_style_reads_the_same_card(quirks: Quirks) -> None:
    card = read(card_from_population(quirks=quirks))
    assert card == read(card_from_population())
    assert card.card_number == "N00000001"
    assert card.name == "张玲"  # GBK, padding stripped
    assert card.issuing_region_code == card.card_identification_code[:6] == "330213"
    assert card.spec_version == "3.00"
    assert card.birth_date == date(1964, 12, 5)


def test_a_card_that_answers_9000_costs_one_script() -> None:
    scripts: list[int] = []
    virtual = card_from_population()

    class Counting(VirtualReader):
        def transmit(self, commands: Sequence[bytes], *, stop_on_error: bool = False) -> Deferred[list[bytes]]:
            scripts.append(len(commands))
            return super().transmit(commands, stop_on_error=stop_on_error)

    result_of(SocialSecurityCardDriver(Counting("c", virtual), today=lambda: TODAY).read())
    assert scripts == [len(read_script())]


class ScriptedCard:
    """A card whose answer to each command is decided by the test; the rest come from a real virtual card."""

    def __init__(self, override: Callable[[bytes, bytes], bytes | None], base: VirtualCard | None = None) -> None:
        self.base = base or card_from_population()
        self.override = override
        self.atr = self.base.atr

    def power_on(self) -> bytes:
        return self.base.power_on()

    def transmit(self, command: bytes) -> bytes:
        real = self.base.transmit(command)
        replaced = self.override(command, real)
        return real if replaced is None else replaced


NAME_COMMAND = RECORDS[6].command  # EF06 record 2, the name
EXPIRY_COMMAND = RECORDS[3].command


def answer(to: bytes, with_: bytes) -> Callable[[bytes, bytes], bytes | None]:
    return lambda command, real: with_ if command == to else None


MALFORMED = [
    ("not a social security card", answer(apdu.select_aid(), b"\x6a\x82"), "no social security application"),
    ("select refused oddly", answer(apdu.select_aid(), b"\x69\x99"), "SELECT answered SW 6999"),
    ("no status word", answer(NAME_COMMAND, b"\x90"), "no status word"),
    ("empty answer", answer(NAME_COMMAND, b""), "no status word"),
    ("unknown status word", answer(NAME_COMMAND, b"\x6f\x00"), "answered SW 6F00"),
    ("record missing", answer(NAME_COMMAND, b"\x6a\x83"), "answered SW 6A83"),
    ("TLV shorter than declared", answer(NAME_COMMAND, b"\x09\x1e\xd5\xc5\x90\x00"), "declares 30 bytes"),
    ("wrong tag", answer(NAME_COMMAND, apdu.encode_tlv(0x0A, b"1" * 30) + b"\x90\x00"), "carries tag 0A"),
    ("wrong length", answer(NAME_COMMAND, apdu.encode_tlv(0x09, b"x" * 12) + b"\x90\x00"), "is 12 bytes"),
    ("not a date", answer(EXPIRY_COMMAND, apdu.encode_tlv(0x06, bytes.fromhex("20261399")) + b"\x90\x00"),
     "not a date"),
    ("BCD with letters", answer(EXPIRY_COMMAND, apdu.encode_tlv(0x06, bytes.fromhex("2026AB01")) + b"\x90\x00"),
     "non-digits"),
    ("endless 6Cxx", lambda c, real: b"\x6c\x10" if c[1] == 0xB2 and c[3] == 0x34 and c[2] == 2 else None,
     "keeps asking"),
    ("bad name encoding", answer(NAME_COMMAND, apdu.encode_tlv(0x09, b"\xff\xfe" + b"\x81" * 28) + b"\x90\x00"),
     "not GBK"),
]


@pytest.mark.parametrize(("case", "override", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_card_answers_are_unreadable_with_a_clear_reason(
    case: str, override: Callable[[bytes, bytes], bytes | None], message: str
) -> None:
    problem = problem_of(driver_for(ScriptedCard(override)).read())
    assert problem.status == pb.STATUS_CODE_CARD_UNREADABLE
    assert message in problem.detail_en
    assert problem.detail_zh


def test_a_wrong_le_is_corrected_with_6cxx() -> None:
    # The card wants Le 0x20 for the name; we ask with 0x10 first and must follow its 6C20.
    virtual = card_from_population()
    asked: list[bytes] = []

    class ShortLe:
        atr = virtual.atr

        def power_on(self) -> bytes:
            return virtual.power_on()

        def transmit(self, command: bytes) -> bytes:
            asked.append(command)
            return virtual.transmit(command)

    driver = driver_for(ShortLe())
    responses = result_of(driver._resolve([apdu.select_aid(), apdu.read_record_by_sfi(6, 2, 0x10)]))
    assert responses[1].ok and apdu.parse_tlv(responses[1].data)[0] == 0x09
    assert apdu.read_record_by_sfi(6, 2, 0x20) in asked


def holder_card(case: str) -> VirtualCard:
    for holder in demo_population():
        if holder.case == case:
            return VirtualCard(holder)
    raise LookupError(case)


def test_the_population_cards_read_and_validate() -> None:
    for holder in demo_population(60):
        for demo_card in holder.cards:
            virtual = VirtualCard(holder, demo_card)
            if demo_card.expiry_date < TODAY:
                assert problem_of(driver_for(virtual).read()).status == pb.STATUS_CODE_CARD_EXPIRED
                continue
            card = read(virtual)
            assert card.card_number == demo_card.card_number
            assert card.social_security_number == holder.person.social_security_number
            assert card.name == holder.person.name


def test_an_expired_card_is_refused_as_expired() -> None:
    problem = problem_of(driver_for(holder_card("expired")).read())
    assert problem.status == pb.STATUS_CODE_CARD_EXPIRED
    assert "expired on" in problem.detail_en


def test_retired_ningbo_codes_and_other_provinces_are_readable() -> None:
    assert read(holder_card("ningbo_retired_district")).issuing_region_code in ("330204", "330283")
    assert not read(holder_card("outside_province")).issuing_region_code.startswith("33")


@pytest.mark.parametrize(("code", "ok"), [("330204", True), ("330283", True), ("330203", True), ("330299", True),
                                          ("330298", False), ("330106", True), ("339900", False),
                                          ("310100", True), ("990100", False), ("33020", False)])
def test_region_codes_on_cards(code: str, ok: bool) -> None:
    assert region_is_acceptable(code) is ok


@pytest.mark.parametrize(("number", "ok"), [("11010519491231002X", True), ("440524188001010014", True),
                                            ("330203199001011236", True), ("110105194912310021", False),
                                            ("11010519491231002x", False), ("1101051949123100", False)])
def test_resident_id_check_digit(number: str, ok: bool) -> None:
    assert is_valid_id_number(number) is ok


def test_a_social_security_number_failing_its_check_digit_is_unreadable() -> None:
    bad = apdu.encode_tlv(0x08, b"330213196412052809") + b"\x90\x00"
    problem = problem_of(driver_for(ScriptedCard(answer(RECORDS[5].command, bad))).read())
    assert "check digit" in problem.detail_en


# PIN --------------------------------------------------------------------------------------------


def test_verify_accepts_the_initial_pin() -> None:
    assert result_of(driver_for(card_from_population()).verify_pin("000000")) is None


def test_six_wrong_pins_lock_the_card_and_the_right_one_no_longer_helps() -> None:
    virtual = card_from_population()
    driver = driver_for(virtual)
    tries = []
    for _ in range(5):
        problem = problem_of(driver.verify_pin("123456"))
        assert isinstance(problem, PinWrong) and problem.status == pb.STATUS_CODE_PIN_WRONG
        tries.append(problem.tries_left)
    assert tries == [5, 4, 3, 2, 1]
    assert isinstance(problem_of(driver.verify_pin("123456")), PinLocked)  # the sixth: 63C0
    locked = problem_of(driver.verify_pin("000000"))  # 6983 from now on
    assert isinstance(locked, PinLocked) and locked.status == pb.STATUS_CODE_PIN_LOCKED


def test_a_right_pin_resets_the_try_counter() -> None:
    driver = driver_for(card_from_population())
    problem_of(driver.verify_pin("123456"))
    result_of(driver.verify_pin("000000"))
    assert problem_of(driver.verify_pin("123456")).tries_left == 5  # type: ignore[attr-defined]


def test_the_try_counter_survives_a_power_cycle() -> None:
    virtual = card_from_population()
    driver = driver_for(virtual)
    problem_of(driver.verify_pin("123456"))
    virtual.power_on()
    assert problem_of(driver.verify_pin("123456")).tries_left == 4  # type: ignore[attr-defined]


def test_a_locked_population_card_is_locked() -> None:
    assert isinstance(problem_of(driver_for(holder_card("pin_locked")).verify_pin("000000")), PinLocked)


def test_change_pin() -> None:
    driver = driver_for(card_from_population())
    result_of(driver.change_pin("000000", "852963"))
    assert isinstance(problem_of(driver.verify_pin("000000")), PinWrong)
    result_of(driver.verify_pin("852963"))
    assert isinstance(problem_of(driver.change_pin("000000", "111111")), PinWrong)


@pytest.mark.parametrize("pin", ["", "12345", "1234567", "12a456", "１２３４５６"])
def test_a_malformed_pin_is_a_bad_request_and_never_repeated(pin: str) -> None:
    problem = problem_of(driver_for(card_from_population()).verify_pin(pin))
    assert problem.status == pb.STATUS_CODE_BAD_REQUEST
    if pin:
        assert pin not in problem.detail_en + problem.detail_zh


def test_the_agency_resets_a_locked_pin_with_its_key() -> None:
    virtual = holder_card("pin_locked")
    driver = driver_for(virtual)
    identification = result_of(driver.read_identification())
    result_of(driver.reset_pin(DEMO_AGENCY_MASTER_KEY, identification, "000000"))
    result_of(driver.verify_pin("000000"))
    assert virtual.state.tries_left == 6


def test_a_wrong_agency_key_is_refused_and_changes_nothing() -> None:
    virtual = holder_card("pin_locked")
    driver = driver_for(virtual)
    identification = result_of(driver.read_identification())
    problem = problem_of(driver.reset_pin(b"\x01" * 16, identification, "000000"))
    assert "agency key" in problem.detail_en
    assert virtual.state.tries_left == 0


def test_a_reset_cannot_be_replayed() -> None:
    virtual = holder_card("pin_locked")
    commands: list[bytes] = []

    class Recording(VirtualReader):
        def transmit(self, cmds: Sequence[bytes], *, stop_on_error: bool = False) -> Deferred[list[bytes]]:
            commands.extend(cmds)
            return super().transmit(cmds, stop_on_error=stop_on_error)

    driver = SocialSecurityCardDriver(Recording("r", virtual), today=lambda: TODAY)
    identification = result_of(driver.read_identification())
    result_of(driver.reset_pin(DEMO_AGENCY_MASTER_KEY, identification, "000000"))
    recorded_reset = commands[-1]
    assert recorded_reset[1] == 0x2C
    virtual.state.tries_left = 0
    virtual.transmit(apdu.get_challenge())  # a fresh challenge: the old MAC no longer fits
    assert virtual.transmit(recorded_reset) == b"\x69\x82"


def test_no_card_in_the_reader() -> None:
    problem = problem_of(SocialSecurityCardDriver(VirtualReader("empty")).read())
    assert problem.status == pb.STATUS_CODE_CARD_NOT_PRESENT


def test_a_reader_returning_fewer_responses_than_commands_is_unreadable() -> None:
    class Short:
        name = "short"

        def transmit(self, commands: Sequence[bytes], *, stop_on_error: bool = False) -> Deferred[list[bytes]]:
            return succeed([b"\x90\x00"])

    problem = problem_of(SocialSecurityCardDriver(Short(), today=lambda: TODAY).read())  # type: ignore[arg-type]
    assert "1 responses to 12 commands" in problem.detail_en


def _identity_with_wrong_length() -> ScriptedCard:
    """A card answering 6Cxx ("ask again with Le = xx") to every other read of the card-number record."""
    asked = [0]

    def override(command: bytes, real: bytes) -> bytes | None:
        if command != EF05_RECORDS[-1].command:
            return None
        asked[0] += 1
        return bytes([0x6C, len(real) - 2]) if asked[0] % 2 else None

    return ScriptedCard(override)


@pytest.mark.parametrize("card", [lambda: card_from_population(quirks=Quirks(records_via_61=True)),
                                  _identity_with_wrong_length], ids=["61xx", "6Cxx"])
def test_a_card_that_answers_the_long_way_has_its_identity_checked_and_its_pin_verified_once(
        card: Callable[[], Any]) -> None:
    virtual = card()
    card_number = read(virtual).card_number
    driver = driver_for(virtual)
    assert result_of(driver.verify_pin("000000", card_number)) is None
    wrong = problem_of(driver.verify_pin("123456", card_number))
    assert isinstance(wrong, PinWrong) and wrong.tries_left == 5


def test_a_reset_the_card_answers_short_is_a_card_problem() -> None:
    class OneAnswer(VirtualReader):
        def transmit(self, cmds: Sequence[bytes], *, stop_on_error: bool = False) -> Deferred[list[bytes]]:
            return succeed([b"\x90\x00"])  # the SELECT's answer and nothing more

    driver = SocialSecurityCardDriver(OneAnswer("r", card_from_population()), today=lambda: TODAY)
    problem = problem_of(driver.reset_pin(DEMO_AGENCY_MASTER_KEY, "330200D156000005FDA369D682A804C0", "000000"))
    assert "GET CHALLENGE" in problem.detail_en


def test_a_malformed_new_pin_for_a_reset_is_a_bad_request() -> None:
    problem = problem_of(driver_for(holder_card("pin_locked")).reset_pin(DEMO_AGENCY_MASTER_KEY, "x", "12a456"))
    assert problem.status == pb.STATUS_CODE_BAD_REQUEST and "12a456" not in problem.detail_en


# The record encodings docs/protocol.md 4.14 gives a card emulator ----------------------------------------

SEX_COMMAND, ETHNICITY_COMMAND = RECORDS[7].command, RECORDS[8].command


def record(tag: int, value: bytes) -> bytes:
    return apdu.encode_tlv(tag, value) + b"\x90\x00"


@pytest.mark.parametrize(
    ("command", "answer_", "field", "expected"),
    [
        (ETHNICITY_COMMAND, record(0x0B, b"\x01"), "ethnicity", "01"),
        (ETHNICITY_COMMAND, record(0x0B, b"\x0b"), "ethnicity", "11"),   # binary, not BCD
        (SEX_COMMAND, record(0x0A, b"2"), "sex", "2"),                   # the ASCII digit
        (SEX_COMMAND, record(0x0A, b"\x02"), "sex", "2"),                # or a binary number
        (NAME_COMMAND, record(0x09, "张玲".encode("gbk").ljust(30, b"\x00")), "name", "张玲"),
        (NAME_COMMAND, record(0x09, "张玲".encode("gbk").ljust(30, b"\xff")), "name", "张玲"),
        (NAME_COMMAND, record(0x09, "张玲".encode("gbk").ljust(30, b" ")), "name", "张玲"),
    ],
)
def test_record_encodings(command: bytes, answer_: bytes, field: str, expected: object) -> None:
    assert getattr(read(ScriptedCard(answer(command, answer_))), field) == expected


def test_a_card_is_valid_on_its_expiry_date_and_expired_the_day_after() -> None:
    yesterday = TODAY.replace(day=TODAY.day - 1)
    expired = ScriptedCard(answer(EXPIRY_COMMAND, record(0x06, bytes.fromhex(f"{yesterday:%Y%m%d}"))))
    assert problem_of(driver_for(expired).read()).status == pb.STATUS_CODE_CARD_EXPIRED
    last_day = ScriptedCard(answer(EXPIRY_COMMAND, record(0x06, bytes.fromhex(f"{TODAY:%Y%m%d}"))))
    assert read(last_day).expiry_date == TODAY
