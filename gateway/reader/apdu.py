"""Command and response APDUs of the social security card, and the TLV its records use.

Pure functions over bytes: no reader, no I/O. `gateway.reader.driver` sequences them.
"""

from __future__ import annotations

from dataclasses import dataclass

# "sx1.sh." + "社会保障" in GBK: the social-security application.
SOCIAL_SECURITY_AID = bytes.fromhex("7378312E73682EC9E7BBE1B1A3D5CF")
EF05_FILE_ID = bytes.fromhex("EF05")
EF06_FILE_ID = bytes.fromhex("EF06")
EF05_SFI = 5
EF06_SFI = 6
PIN_DIGITS = 6
AGENCY_MAC_BYTES = 4
CHALLENGE_BYTES = 4

SW_OK = 0x9000
SW_SECURITY_BLOCKED = 0x6983
SW_FILE_NOT_FOUND = 0x6A82
SW_RECORD_NOT_FOUND = 0x6A83
SW_WRONG_LENGTH = 0x6700
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00
SW_WRONG_P1P2 = 0x6B00
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_WRONG_DATA = 0x6A80
# A PIN pad's own answers to a secure PIN entry (PC/SC part 10, as CCID readers give them).
SW_PIN_ENTRY_TIMEOUT = 0x6400
SW_PIN_ENTRY_CANCELLED = 0x6401
# VERIFY's header: the PIN is its data, at this offset.
VERIFY_PIN_OFFSET = 5


class ApduError(ValueError):
    """Bytes that are not a well-formed APDU or record."""


@dataclass(frozen=True)
class ResponseApdu:
    data: bytes
    sw1: int
    sw2: int

    @classmethod
    def parse(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise ApduError(f"response of {len(raw)} bytes has no status word")
        return cls(bytes(raw[:-2]), raw[-2], raw[-1])

    @property
    def sw(self) -> int:
        return (self.sw1 << 8) | self.sw2

    @property
    def ok(self) -> bool:
        return self.sw == SW_OK

    def __str__(self) -> str:
        return f"{len(self.data)} bytes, SW {self.sw:04X}"


def command(cla: int, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None) -> bytes:
    """A short APDU (case 1 to 4). Le 256 is written as 00."""
    if len(data) > 255:
        raise ApduError("command data longer than 255 bytes")
    out = bytes((cla, ins, p1, p2))
    if data:
        out += bytes((len(data),)) + data
    if le is not None:
        if not 0 < le <= 256:
            raise ApduError(f"Le {le} out of range")
        out += bytes((le & 0xFF,))
    return out


def select_aid(aid: bytes = SOCIAL_SECURITY_AID) -> bytes:
    return command(0x00, 0xA4, 0x04, 0x00, aid)


def get_response(length: int) -> bytes:
    return command(0x00, 0xC0, 0x00, 0x00, le=length or 256)


def read_record_by_sfi(sfi: int, record: int, le: int) -> bytes:
    """Record `record` of the EF with short file id `sfi`, without selecting it."""
    return command(0x00, 0xB2, record, (sfi << 3) | 0x04, le=le)


def with_le(apdu: bytes, le: int) -> bytes:
    """The same case-2 command with another Le (the card's 6Cxx correction)."""
    return apdu[:-1] + bytes((le & 0xFF,))


def pin_to_bcd(pin: str) -> bytes:
    if len(pin) != PIN_DIGITS or not pin.isascii() or not pin.isdigit():
        # The message must never contain the PIN itself.
        raise ApduError(f"a PIN is exactly {PIN_DIGITS} digits")
    return bytes.fromhex(pin)


def verify_pin(pin: str) -> bytes:
    return command(0x00, 0x20, 0x00, 0x00, pin_to_bcd(pin))


@dataclass(frozen=True)
class PinEntry:
    """A VERIFY whose PIN a reader's pad writes in (PC/SC part 10 FEATURE_VERIFY_PIN_DIRECT): the template holds
    zero bytes where the PIN goes, BCD, two digits a byte."""

    template: bytes
    pin_offset: int
    digits: int

    def filled(self, pin: str) -> bytes:
        """The APDU the pad sends once the holder has typed `pin`; only the pad's own code calls it."""
        pin_bcd = pin_to_bcd(pin)
        if len(pin) != self.digits:
            raise ApduError(f"a PIN is exactly {self.digits} digits")
        return self.template[: self.pin_offset] + pin_bcd + self.template[self.pin_offset + len(pin_bcd):]


def verify_pin_entry() -> PinEntry:
    """VERIFY with the PIN left for the pad: 00 20 00 00 03 00 00 00."""
    return PinEntry(command(0x00, 0x20, 0x00, 0x00, bytes(PIN_DIGITS // 2)), VERIFY_PIN_OFFSET, PIN_DIGITS)


def change_pin(old_pin: str, new_pin: str) -> bytes:
    """CHANGE PIN as the card spec has it (PBOC style): old PIN, FF, new PIN."""
    return command(0x80, 0x5E, 0x01, 0x00, pin_to_bcd(old_pin) + b"\xff" + pin_to_bcd(new_pin))


def get_challenge() -> bytes:
    return command(0x00, 0x84, 0x00, 0x00, le=CHALLENGE_BYTES)


def reset_retry_counter(new_pin: str, mac: bytes) -> bytes:
    """RESET RETRY COUNTER: the new PIN and a MAC under the card agency's key."""
    if len(mac) != AGENCY_MAC_BYTES:
        raise ApduError(f"the MAC is {AGENCY_MAC_BYTES} bytes")
    return command(0x00, 0x2C, 0x00, 0x00, pin_to_bcd(new_pin) + mac)


def reset_retry_counter_header() -> bytes:
    return bytes((0x00, 0x2C, 0x00, 0x00))


# TLV ------------------------------------------------------------------------------------------


def parse_tlv(data: bytes) -> tuple[int, bytes]:
    """One record: a 1-byte tag, a 1-byte length, the value. Trailing bytes are an error."""
    if len(data) < 2:
        raise ApduError(f"record of {len(data)} bytes is too short for a tag and a length")
    tag, length = data[0], data[1]
    if len(data) != 2 + length:
        raise ApduError(f"record tag {tag:02X} declares {length} bytes but carries {len(data) - 2}")
    return tag, bytes(data[2:])


def encode_tlv(tag: int, value: bytes) -> bytes:
    if len(value) > 255:
        raise ApduError("TLV value longer than 255 bytes")
    return bytes((tag, len(value))) + value
