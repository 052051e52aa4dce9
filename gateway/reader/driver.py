"""The social security card driver: the only code in the gateway that speaks the card's APDUs.

A whole card read is one script (SELECT, then every record by short file id) so that a reader at a
counter terminal costs one round trip; only a card that answers 61xx or 6Cxx costs follow-up rounds.
A PIN verification is one more script.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from twisted.internet.defer import Deferred, fail, inlineCallbacks

from gateway.reader import apdu
from gateway.reader.agency import derive_card_key, reset_mac
from gateway.reader.base import CardReader
from gateway.reader.card import CardData, validate_card
from gateway.reader.errors import AgencyKeyRefused, CardProblem, CardRemoved, CardUnreadable, PinLocked, PinWrong

# SW1 of an answer that asks for another exchange: 61xx (GET RESPONSE for xx bytes), 6Cxx (again with Le xx).
_FOLLOW_UP_SW1 = (0x61, 0x6C)
# A card that keeps asking for GET RESPONSE or another Le beyond this is broken.
MAX_FOLLOW_UP_ROUNDS = 3


@dataclass(frozen=True)
class RecordSpec:
    field: str
    sfi: int
    record: int
    tag: int
    length: int
    decode: Callable[[bytes], Any]
    # READ RECORD for this record, built once with the layout (not on every read).
    command: bytes = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", apdu.read_record_by_sfi(self.sfi, self.record, self.length + 2))


def _ascii(value: bytes) -> str:
    try:
        return value.rstrip(b"\x00\xff ").decode("ascii")
    except UnicodeDecodeError as exc:
        raise CardUnreadable("a text field is not ASCII", "卡内字段不是ASCII文本") from exc


def _hex(value: bytes) -> str:
    return value.hex().upper()


def _bcd_digits(value: bytes) -> str:
    digits = value.hex()
    if not digits.isdigit():
        raise CardUnreadable("a BCD field holds non-digits", "卡内BCD字段含非数字")
    return digits


def _bcd_date(value: bytes) -> date:
    digits = _bcd_digits(value)
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError as exc:
        raise CardUnreadable(f"{digits} is not a date", f"{digits}不是有效日期") from exc


def _gbk_name(value: bytes) -> str:
    try:
        return value.rstrip(b"\x00\xff \x20").decode("gbk").strip()
    except UnicodeDecodeError as exc:
        raise CardUnreadable("the name is not GBK text", "姓名不是GBK编码") from exc


def _sex(value: bytes) -> str:
    # Cards write the GB/T 2261 code as an ASCII digit; some write it as a binary number.
    byte = value[0]
    return chr(byte) if 0x30 <= byte <= 0x39 else str(byte)


def _ethnicity(value: bytes) -> str:
    return f"{value[0]:02d}"


EF05_RECORDS = (
    RecordSpec("card_identification_code", apdu.EF05_SFI, 1, 0x01, 16, _hex),
    RecordSpec("spec_version", apdu.EF05_SFI, 3, 0x03, 4, _ascii),
    RecordSpec("issue_date", apdu.EF05_SFI, 5, 0x05, 4, _bcd_date),
    RecordSpec("expiry_date", apdu.EF05_SFI, 6, 0x06, 4, _bcd_date),
    RecordSpec("card_number", apdu.EF05_SFI, 7, 0x07, 9, _ascii),
)
EF06_RECORDS = (
    RecordSpec("social_security_number", apdu.EF06_SFI, 1, 0x08, 18, _ascii),
    RecordSpec("name", apdu.EF06_SFI, 2, 0x09, 30, _gbk_name),
    RecordSpec("sex", apdu.EF06_SFI, 3, 0x0A, 1, _sex),
    RecordSpec("ethnicity", apdu.EF06_SFI, 4, 0x0B, 1, _ethnicity),
    RecordSpec("birthplace", apdu.EF06_SFI, 5, 0x0C, 3, _bcd_digits),
    RecordSpec("birth_date", apdu.EF06_SFI, 6, 0x0D, 4, _bcd_date),
)
RECORDS = EF05_RECORDS + EF06_RECORDS


# SELECT of the social security application, and the whole card read: built once for the card layout above.
SELECT = apdu.select_aid()
READ_SCRIPT = (SELECT, *(spec.command for spec in RECORDS))


def read_script() -> list[bytes]:
    return list(READ_SCRIPT)


@dataclass
class _Item:
    """One command being resolved across rounds (61xx: GET RESPONSE; 6Cxx: again with the right Le)."""

    command: bytes
    response: apdu.ResponseApdu
    get_responses: list[int] = field(default_factory=list)
    data: bytes = b""

    @property
    def needs_follow_up(self) -> bool:
        return self.response.sw1 in _FOLLOW_UP_SW1


# What a script's missing answer is taken as: 6F00, "no precise diagnosis".
NO_ANSWER = apdu.ResponseApdu(b"", 0x6F, 0x00)


def _parse(raw: bytes) -> apdu.ResponseApdu:
    try:
        return apdu.ResponseApdu.parse(raw)
    except apdu.ApduError as exc:
        raise CardUnreadable(str(exc), "卡片应答格式错误") from exc


class SocialSecurityCardDriver:
    def __init__(self, reader: CardReader, today: Callable[[], date] = date.today) -> None:
        self.reader = reader
        self._today = today

    def _transmit(self, commands: Sequence[bytes], *, stop_on_error: bool = False) -> Deferred[list[bytes]]:
        return self.reader.transmit(list(commands), stop_on_error=stop_on_error)

    @inlineCallbacks
    def _resolve(self, commands: Sequence[bytes]) -> Any:
        """Run `commands`, following 61xx and 6Cxx up to MAX_FOLLOW_UP_ROUNDS; final responses in order."""
        raw = yield self._transmit(commands)
        if len(raw) != len(commands):
            raise CardUnreadable(f"{len(raw)} responses to {len(commands)} commands", "读卡器应答数量不符")
        responses = [_parse(response) for response in raw]
        if not any(response.sw1 in _FOLLOW_UP_SW1 for response in responses):
            return responses  # the usual card: every answer final in one round
        items = [_Item(command, response) for command, response in zip(commands, responses, strict=True)]
        for _round in range(MAX_FOLLOW_UP_ROUNDS):
            pending = [item for item in items if item.needs_follow_up]
            if not pending:
                break
            script = [SELECT]
            plan: list[tuple[_Item, int]] = []
            for item in pending:
                if item.response.sw1 == 0x6C:
                    item.command = apdu.with_le(item.command, item.response.sw2)
                    item.get_responses.clear()
                    item.data = b""
                    script.append(item.command)
                    plan.append((item, 1))
                else:
                    item.get_responses.append(item.response.sw2)
                    script.append(item.command)
                    script.extend(apdu.get_response(length) for length in item.get_responses)
                    plan.append((item, 1 + len(item.get_responses)))
            raw = yield self._transmit(script)
            if len(raw) != len(script):
                raise CardUnreadable(f"{len(raw)} responses to {len(script)} commands", "读卡器应答数量不符")
            position = 1
            for item, count in plan:
                answers = [_parse(r) for r in raw[position : position + count]]
                position += count
                if count == 1:
                    item.response = answers[0]
                else:
                    # The command's own 61xx, then one GET RESPONSE each: the data is their concatenation.
                    item.data = b"".join(a.data for a in answers[1:])
                    last = answers[-1]
                    item.response = apdu.ResponseApdu(item.data, last.sw1, last.sw2)
        else:
            if any(item.needs_follow_up for item in items):
                raise CardUnreadable("the card keeps asking for more exchanges", "卡片应答异常")
        return [item.response for item in items]

    @inlineCallbacks
    def read(self) -> Any:
        """Read and validate EF05 and EF06. Fires with CardData; fails with a CardProblem."""
        responses: list[apdu.ResponseApdu] = yield self._resolve(READ_SCRIPT)
        select, records = responses[0], responses[1:]
        self._check_selected(select)
        values: dict[str, Any] = {}
        for spec, response in zip(RECORDS, records, strict=True):
            if not response.ok:
                raise CardUnreadable(f"record {spec.tag:02X} answered SW {response.sw:04X}",
                                     f"读取记录{spec.tag:02X}失败（{response.sw:04X}）")
            values[spec.field] = self._decode(spec, response.data)
        card = CardData(issuing_region_code=values["card_identification_code"][:6], **values)
        validate_card(card, self._today())
        return card

    @inlineCallbacks
    def read_identification(self) -> Any:
        """Only the card identification code (EF05 record 1), e.g. for an agency operation on any card."""
        spec = EF05_RECORDS[0]
        select, record = yield self._resolve([SELECT, spec.command])
        self._check_selected(select)
        if not record.ok:
            raise CardUnreadable(f"record 01 answered SW {record.sw:04X}", f"读取卡识别码失败（{record.sw:04X}）")
        identification: str = self._decode(spec, record.data)
        return identification

    @staticmethod
    def _check_selected(select: apdu.ResponseApdu) -> None:
        if select.ok:
            return
        if select.sw == apdu.SW_FILE_NOT_FOUND:
            raise CardUnreadable("no social security application on this card", "该卡不是社会保障卡")
        raise CardUnreadable(f"SELECT answered SW {select.sw:04X}", f"选择应用失败（{select.sw:04X}）")

    @staticmethod
    def _decode(spec: RecordSpec, data: bytes) -> Any:
        try:
            tag, value = apdu.parse_tlv(data)
        except apdu.ApduError as exc:
            raise CardUnreadable(str(exc), f"记录{spec.tag:02X}格式错误") from exc
        if tag != spec.tag:
            raise CardUnreadable(f"record {spec.record} of SFI {spec.sfi} carries tag {tag:02X}, expected "
                                 f"{spec.tag:02X}", "记录标签不符")
        if len(value) != spec.length:
            raise CardUnreadable(f"tag {spec.tag:02X} is {len(value)} bytes, expected {spec.length}",
                                 f"记录{spec.tag:02X}长度错误")
        return spec.decode(value)

    def has_pin_pad(self) -> Deferred[bool]:
        """Whether the reader verifies PINs typed on its own pad (then use `verify_pin_on_pad`)."""
        return self.reader.has_pin_pad()

    def verify_pin(self, pin: str, card_number: str | None = None) -> Deferred[None]:
        """Fires with None when the card accepts the PIN; fails with PinWrong(tries_left) or PinLocked.

        With `card_number`, the same script first reads the card number, so that a card swapped in the reader
        since it was read is noticed (CardRemoved) — still one round trip.
        """
        try:
            command = apdu.verify_pin(pin)
        except apdu.ApduError as exc:
            problem = CardProblem(str(exc), "密码须为6位数字", status=_bad_request())
            problem.__cause__ = exc
            return fail(problem)
        result: Deferred[None] = self._verify(command, card_number)
        return result

    def verify_pin_on_pad(self, card_number: str | None = None) -> Deferred[None]:
        """As `verify_pin`, with the PIN typed on the reader's pad (secure PIN entry): it never reaches the gateway.
        The pad's own refusals (nothing typed in time, cancelled) are PIN_REQUIRED."""
        result: Deferred[None] = self._verify(apdu.verify_pin_entry(), card_number)
        return result

    def _verify_script(self, before: list[bytes], verify: bytes | apdu.PinEntry) -> Deferred[list[bytes]]:
        if isinstance(verify, apdu.PinEntry):
            return self.reader.transmit_with_pin_entry(before, verify)
        return self._transmit([*before, verify], stop_on_error=True)

    @inlineCallbacks
    def _verify(self, verify: bytes | apdu.PinEntry, card_number: str | None) -> Any:
        identity = EF05_RECORDS[-1]
        before = [SELECT] if card_number is None else [SELECT, identity.command]
        raw = yield self._verify_script(before, verify)
        if card_number is not None:
            if len(raw) >= 2:
                record = _parse(raw[1])
                if record.ok:
                    if self._decode(identity, record.data) != card_number:
                        raise CardRemoved("another card is in the reader now: read the card again",
                                          "读卡器中已换卡，请重新读卡")
                else:  # a card that answers 61xx/6Cxx: ask again the long way
                    _select, again = yield self._resolve([SELECT, identity.command])
                    if not again.ok or self._decode(identity, again.data) != card_number:
                        raise CardRemoved("another card is in the reader now: read the card again",
                                          "读卡器中已换卡，请重新读卡")
                    if len(raw) < 3:
                        # 6Cxx stopped the script before VERIFY (61xx lets it run on): send it now, once.
                        alone = yield self._verify_script([apdu.select_aid()], verify)
                        self._check_pin_answer(alone)
                        return
            raw = raw[:1] + raw[2:]
        self._check_pin_answer(raw)

    @inlineCallbacks
    def change_pin(self, old_pin: str, new_pin: str) -> Any:
        try:
            command = apdu.change_pin(old_pin, new_pin)
        except apdu.ApduError as exc:
            raise CardProblem(str(exc), "密码须为6位数字", status=_bad_request()) from exc
        raw = yield self._transmit([apdu.select_aid(), command], stop_on_error=True)
        self._check_pin_answer(raw)

    @inlineCallbacks
    def reset_pin(self, master_key: bytes, card_identification_code: str, new_pin: str) -> Any:
        """The card agency's unblock: a fresh challenge, then RESET RETRY COUNTER under the agency key."""
        try:
            new_pin_bcd = apdu.pin_to_bcd(new_pin)
        except apdu.ApduError as exc:
            raise CardProblem(str(exc), "密码须为6位数字", status=_bad_request()) from exc
        raw = yield self._transmit([apdu.select_aid(), apdu.get_challenge()], stop_on_error=True)
        challenge = self._answer_after_select(raw, "GET CHALLENGE", "获取随机数")
        if not challenge.ok or len(challenge.data) != apdu.CHALLENGE_BYTES:
            raise CardUnreadable(f"GET CHALLENGE answered {challenge}", "获取随机数失败")
        card_key = derive_card_key(master_key, card_identification_code)
        mac = reset_mac(card_key, challenge.data, apdu.reset_retry_counter_header(), new_pin_bcd)
        raw = yield self._transmit([apdu.reset_retry_counter(new_pin, mac)])
        answer = _parse(raw[0]) if raw else NO_ANSWER
        if answer.sw == apdu.SW_SECURITY_NOT_SATISFIED:
            raise AgencyKeyRefused("the card refused the agency key", "卡片拒绝了经办机构密钥")
        if not answer.ok:
            raise CardUnreadable(f"RESET RETRY COUNTER answered SW {answer.sw:04X}", "重置密码失败")

    def _answer_after_select(self, raw: list[bytes], command_en: str, command_zh: str) -> apdu.ResponseApdu:
        """The answer to a script's second command; a card that refused the SELECT, or did not answer, says so."""
        if len(raw) < 2:
            self._check_selected(_parse(raw[0]) if raw else NO_ANSWER)
            raise CardUnreadable(f"no answer to {command_en}", f"卡片未应答{command_zh}")
        return _parse(raw[1])

    def _check_pin_answer(self, raw: list[bytes]) -> None:
        answer = self._answer_after_select(raw, "the PIN command", "密码校验")
        if answer.ok:
            return
        if answer.sw == apdu.SW_SECURITY_BLOCKED:
            raise PinLocked()
        if answer.sw == apdu.SW_PIN_ENTRY_TIMEOUT:
            raise CardProblem("no PIN was typed on the PIN pad in time", "未在规定时间内在密码键盘上输入密码",
                              status=_pin_required())
        if answer.sw == apdu.SW_PIN_ENTRY_CANCELLED:
            raise CardProblem("the PIN entry was cancelled on the PIN pad", "已在密码键盘上取消输入密码",
                              status=_pin_required())
        if answer.sw1 == 0x63 and answer.sw2 & 0xF0 == 0xC0:
            tries_left = answer.sw2 & 0x0F
            if tries_left == 0:
                raise PinLocked(just_now=True)
            raise PinWrong(tries_left)
        raise CardUnreadable(f"the PIN command answered SW {answer.sw:04X}", f"密码校验应答异常（{answer.sw:04X}）")


def _pin_required() -> int:
    from gateway.protocol.messages import pb

    return pb.STATUS_CODE_PIN_REQUIRED


def _bad_request() -> int:
    from gateway.protocol.messages import pb

    return pb.STATUS_CODE_BAD_REQUEST
