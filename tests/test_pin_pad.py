"""Secure PIN entry: with a PIN pad at the terminal's reader the PIN never leaves the counter.

Over a real socket to a running gateway, every byte both ways is kept and searched for the PIN's digits and its
BCD form; the card counts tries as ever. The gateway's own PC/SC readers: feature discovery and the fallback
against the real pcscd + vpcd stack, the pad path with SCardControl mocked (vpcd's reader has no pad).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from gateway.demo.card import VirtualCard, card_from_population
from gateway.protocol.messages import pb
from gateway.reader import apdu
from gateway.reader.driver import SocialSecurityCardDriver
from gateway.reader.errors import PinLocked, PinWrong, ReaderUnavailable
from gateway.reader.pcsc import PcscReader, pin_verify_structure
from tests.test_end_to_end import RunningGateway
from tests.wire import WireClient, request, sign_in

OK = pb.STATUS_CODE_OK
RELAY_TERMINAL = "H33020300001-01"  # designated for cross-region settlement; its reader is the terminal's own
CROSS_CITY_CARD = "Z00000101"  # another Zhejiang city, filed for care here: the rules want the PIN
HOLDERS_PIN = "739154"  # changed from 000000, so that its digits and BCD cannot occur by chance


class CapturingClient(WireClient):
    """A terminal that keeps every byte it sends and receives, and plays its own reader and pad."""

    def __init__(self, host: str, port: int, card: VirtualCard) -> None:
        super().__init__(host, port)
        self.wire = bytearray()
        self.card = card
        self.typed_pin = ""
        self.scripts: list[pb.ApduScript] = []

    def send_raw(self, data: bytes) -> None:
        self.wire += data
        super().send_raw(data)

    def send(self, req: pb.Request) -> None:
        if not req.HasField("send_time"):
            req.send_time.GetCurrentTime()
        self.send_raw(len(req.SerializeToString()).to_bytes(4, "big") + req.SerializeToString())

    def _read_exactly(self, count: int) -> bytes:
        data = super()._read_exactly(count)
        self.wire += data
        return data

    def exchange(self, req: pb.Request) -> pb.Response:
        """Send `req`, answer every ApduScript with the card (the pad types `typed_pin`), return the final answer."""
        self.send(req)
        while True:
            response = self.receive()
            if not response.interim:
                return response
            script = response.apdu_script
            self.scripts.append(script)
            answers = []
            for command in script.commands:
                answers.append(self.card.transmit(command))
                if script.stop_on_error and not (answers[-1][-2:] == b"\x90\x00" or answers[-1][-2] == 0x61):
                    break
            else:
                if script.HasField("pin_entry"):
                    entry = apdu.PinEntry(script.pin_entry.template, script.pin_entry.pin_offset,
                                          script.pin_entry.max_digits)
                    answers.append(self.card.verify_on_pad(entry, self.typed_pin))
            self.send(request("apdu_result", f"{req.message_id}-ar{len(self.scripts)}",
                              terminal_id=RELAY_TERMINAL, script_id=script.script_id, responses=answers))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    running = RunningGateway(tmp_path_factory.mktemp("pin-pad"))
    yield running
    running.stop()


def counter(gateway: RunningGateway, *, pin_pad: bool) -> CapturingClient:
    card = card_from_population(CROSS_CITY_CARD)
    card.state.pin = HOLDERS_PIN
    card.power_on()
    client = CapturingClient("127.0.0.1", gateway.port, card)
    signing_in = sign_in(terminal_id=RELAY_TERMINAL)
    signing_in.sign_in.pin_pad = pin_pad
    signed = client.exchange(signing_in)
    assert signed.status == OK and signed.sign_in.pin_pad is pin_pad
    read = client.exchange(request("read_card", "read", RELAY_TERMINAL))
    assert read.status == OK, read.message_en
    assert read.read_card.insured.pin_required
    return client


def settle(client: CapturingClient, message_id: str, pin: str = "") -> pb.Response:
    fields: dict[str, Any] = {"medical_type": pb.MEDICAL_TYPE_ORDINARY_OUTPATIENT, "total_fen": 12_345}
    if pin:
        fields["pin"] = pin
    return client.exchange(request("settle", message_id, RELAY_TERMINAL, **fields))


def verify_commands(client: CapturingClient) -> list[bytes]:
    return [bytes(c) for s in client.scripts for c in s.commands if bytes(c)[:2] == b"\x00\x20"]


def test_a_cross_city_settlement_by_pin_pad_puts_no_pin_in_any_frame(gateway: RunningGateway) -> None:
    client = counter(gateway, pin_pad=True)
    client.typed_pin = HOLDERS_PIN
    settled = settle(client, "pad-settle")
    assert settled.status == OK, settled.message_en
    assert settled.settle.split.total_fen == 12_345
    assert [s.HasField("pin_entry") for s in client.scripts] == [False, True]  # the read, then the PIN's step
    assert client.scripts[1].pin_entry.template == bytes.fromhex("0020000003000000")
    assert verify_commands(client) == []  # no VERIFY of the gateway's making: the pad built it
    wire = bytes(client.wire)
    assert len(wire) > 500
    for form in (HOLDERS_PIN.encode(), HOLDERS_PIN.encode("utf-16-le"), bytes.fromhex(HOLDERS_PIN)):
        assert form not in wire
    client.close()


def test_wrong_pins_by_pad_count_down_then_lock_the_card(gateway: RunningGateway) -> None:
    client = counter(gateway, pin_pad=True)
    client.typed_pin = "111111"
    answers = [settle(client, f"pad-wrong-{n}") for n in range(6)]
    assert [a.status for a in answers] == [pb.STATUS_CODE_PIN_WRONG] * 5 + [pb.STATUS_CODE_PIN_LOCKED]
    assert [a.pin_tries_left for a in answers[:5]] == [5, 4, 3, 2, 1]
    client.typed_pin = HOLDERS_PIN
    assert settle(client, "pad-after-lock").status == pb.STATUS_CODE_PIN_LOCKED
    client.close()


def test_a_cancelled_pin_entry_is_pin_required_and_costs_no_try(gateway: RunningGateway) -> None:
    client = counter(gateway, pin_pad=True)
    client.typed_pin = ""  # the holder pressed cancel: the pad answers 6401
    assert settle(client, "pad-cancel").status == pb.STATUS_CODE_PIN_REQUIRED
    assert client.card.state.tries_left == 6
    client.close()


def test_a_terminal_with_a_pad_that_sends_the_pin_anyway_is_refused(gateway: RunningGateway) -> None:
    client = counter(gateway, pin_pad=True)
    refused = settle(client, "pad-and-pin", pin=HOLDERS_PIN)
    assert refused.status == pb.STATUS_CODE_BAD_REQUEST
    assert len(client.scripts) == 1  # the read only: nothing was verified with what it sent
    client.close()


def test_a_terminal_that_announced_no_pad_still_sends_the_pin_in_the_request(gateway: RunningGateway) -> None:
    client = counter(gateway, pin_pad=False)
    assert settle(client, "no-pad-missing").status == pb.STATUS_CODE_PIN_REQUIRED
    wrong = settle(client, "no-pad-wrong", pin="111111")
    assert (wrong.status, wrong.pin_tries_left) == (pb.STATUS_CODE_PIN_WRONG, 5)
    assert settle(client, "no-pad-settle", pin=HOLDERS_PIN).status == OK
    assert not any(s.HasField("pin_entry") for s in client.scripts)
    assert verify_commands(client)[-1] == apdu.verify_pin(HOLDERS_PIN)  # the old way: the PIN in VERIFY
    client.close()


# The gateway's own PC/SC readers -------------------------------------------------------------------------------


def test_the_pin_verify_structure_follows_pc_sc_part_10() -> None:
    structure = pin_verify_structure(apdu.verify_pin_entry(), timeout_s=30)
    assert structure == bytes.fromhex(
        "1e1e"        # bTimerOut, bTimerOut2: 30 s
        "81"          # bmFormatString: units bytes, position 0, left justified, BCD
        "03"          # bmPINBlockString: 3 bytes
        "00"          # bmPINLengthFormat
        "0606"        # wPINMaxExtraDigit: 6 to 6 digits
        "02" "01"     # validation key pressed; one message
        "0904" "00"   # wLangId en-US; bMsgIndex
        "000000"      # bTeoPrologue
        "08000000"    # ulDataLength
        "0020000003000000")


@pytest_twisted.inlineCallbacks
def test_a_reader_without_secure_pin_entry_falls_back_to_verify(vpcd_card: object) -> Any:
    reader = PcscReader("Virtual PCD 00 00", reactor)
    driver = SocialSecurityCardDriver(reader)
    try:
        assert (yield driver.has_pin_pad()) is False  # CM_IOCTL_GET_FEATURE_REQUEST asked of vpcd for real
        with pytest.raises(ReaderUnavailable):
            yield driver.verify_pin_on_pad()
        yield driver.verify_pin("000000")
        with pytest.raises(PinWrong):
            yield driver.verify_pin("111111")
    finally:
        reader.close()


VERIFY_PIN_DIRECT_CODE = 0x42330012


class MockPad:
    """SCardControl of a reader with a pad: the feature list names FEATURE_VERIFY_PIN_DIRECT, and the verify
    writes `typed_pin` into the structure's APDU and transmits it to the card for real."""

    def __init__(self, typed_pin: str) -> None:
        self.typed_pin = typed_pin
        self.structures: list[bytes] = []

    def control(self, connection: Any, code: int, data: list[int]) -> list[int]:
        from smartcard.pcsc.PCSCPart10 import CM_IOCTL_GET_FEATURE_REQUEST

        if code == CM_IOCTL_GET_FEATURE_REQUEST:
            return [0x06, 0x04, *VERIFY_PIN_DIRECT_CODE.to_bytes(4, "big")]
        assert code == VERIFY_PIN_DIRECT_CODE
        structure = bytes(data)
        self.structures.append(structure)
        template = structure[19:]
        filled = apdu.PinEntry(template, 5 + ((structure[2] >> 3) & 0x0F), structure[5]).filled(self.typed_pin)
        _data, sw1, sw2 = connection.transmit(list(filled))
        return [sw1, sw2]


@pytest_twisted.inlineCallbacks
def test_a_reader_with_secure_pin_entry_verifies_on_its_pad(vpcd_card: object,
                                                           monkeypatch: pytest.MonkeyPatch) -> Any:
    from smartcard.pcsc.PCSCCardConnection import PCSCCardConnection

    pad = MockPad("111111")
    monkeypatch.setattr(PCSCCardConnection, "control", lambda self, code, data=(): pad.control(self, code, data))
    reader = PcscReader("Virtual PCD 00 00", reactor)
    driver = SocialSecurityCardDriver(reader)
    try:
        assert (yield driver.has_pin_pad()) is True
        with pytest.raises(PinWrong) as wrong:
            yield driver.verify_pin_on_pad("N00000001")
        assert wrong.value.tries_left == 5
        pad.typed_pin = "000000"
        yield driver.verify_pin_on_pad("N00000001")
        assert pad.structures[0] == pin_verify_structure(apdu.verify_pin_entry())
        pad.typed_pin = "222222"
        for _ in range(5):
            with pytest.raises(PinWrong):
                yield driver.verify_pin_on_pad()
        with pytest.raises(PinLocked):
            yield driver.verify_pin_on_pad()
    finally:
        reader.close()
