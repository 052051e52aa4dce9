"""A virtual Ningbo social security card with the real card's behaviour: its files, its PIN try counter, the
agency's reset. In-process: `VirtualCard(holder).transmit(apdu)`; simulators.virtual_card puts it on vpcd.

The PIN try counter belongs to the card: it survives power cycles and resets, and with a CardStateStore on a
file it survives restarts too.
"""

from __future__ import annotations

import functools
import json
import secrets
import struct
import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from gateway.demo.population import (
    DEFAULT_PERSONS,
    DEFAULT_SEED,
    PIN_TRIES,
    DemoCard,
    DemoHolder,
    DemoPerson,
    demo_population,
)
from gateway.reader import apdu
from gateway.reader.agency import reset_mac

# T=0, TB1 = TC1 = 0, ten historical bytes "NB-SSC-300": no TCK is needed for T=0 only.
DEFAULT_ATR = bytes.fromhex("3B6A0000") + b"NB-SSC-300"
NAME_BYTES = 30


@dataclass(frozen=True)
class Quirks:
    """Ways real cards differ that the driver must cope with."""

    select_answers_61: bool = False   # SELECT answers 61xx; the FCI comes with GET RESPONSE
    records_via_61: bool = False      # READ RECORD answers 61xx (T=0 style); data with GET RESPONSE


@dataclass
class CardState:
    pin: str
    tries_left: int


def _bcd(digits: str) -> bytes:
    return bytes.fromhex(digits)


def _bcd_date(day: date) -> bytes:
    return _bcd(day.strftime("%Y%m%d"))


def build_files(person: DemoPerson, card: DemoCard) -> dict[int, dict[int, bytes]]:
    """EF05 (SFI 5) and EF06 (SFI 6): record number -> TLV bytes."""
    name = person.name.encode("gbk")
    if len(name) > NAME_BYTES:
        raise ValueError("name longer than 30 GBK bytes")
    ef05 = {
        1: apdu.encode_tlv(0x01, bytes.fromhex(card.card_identification_code)),
        2: apdu.encode_tlv(0x02, b"3"),  # card type: social security card
        3: apdu.encode_tlv(0x03, card.spec_version.encode("ascii")),
        4: apdu.encode_tlv(0x04, _bcd(card.issuing_region_code)),  # issuing body
        5: apdu.encode_tlv(0x05, _bcd_date(card.issue_date)),
        6: apdu.encode_tlv(0x06, _bcd_date(card.expiry_date)),
        7: apdu.encode_tlv(0x07, card.card_number.encode("ascii")),
    }
    ef06 = {
        1: apdu.encode_tlv(0x08, person.social_security_number.encode("ascii")),
        2: apdu.encode_tlv(0x09, name.ljust(NAME_BYTES, b"\x00")),
        3: apdu.encode_tlv(0x0A, person.sex.encode("ascii")),
        4: apdu.encode_tlv(0x0B, bytes((int(person.ethnicity),))),
        5: apdu.encode_tlv(0x0C, _bcd(person.birthplace)),
        6: apdu.encode_tlv(0x0D, _bcd_date(person.birth_date)),
    }
    return {apdu.EF05_SFI: ef05, apdu.EF06_SFI: ef06}


FILE_IDS = {apdu.EF05_FILE_ID: apdu.EF05_SFI, apdu.EF06_FILE_ID: apdu.EF06_SFI}


def _sw(sw: int, data: bytes = b"") -> bytes:
    return data + struct.pack(">H", sw)


class CardStateStore:
    """Where PINs and try counters live between power cycles (memory, or a JSON file)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._states: dict[str, CardState] = {}
        if path is not None and path.exists():
            raw = json.loads(path.read_text(encoding="utf-8"))
            self._states = {k: CardState(v["pin"], v["tries_left"]) for k, v in raw.items()}

    def get(self, card: DemoCard) -> CardState:
        with self._lock:
            state = self._states.get(card.card_number)
            if state is None:
                state = self._states[card.card_number] = CardState(card.pin, card.pin_tries_left)
            return state

    def save(self) -> None:
        if self.path is None:
            return
        with self._lock:
            data = {k: {"pin": v.pin, "tries_left": v.tries_left} for k, v in self._states.items()}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        temporary.replace(self.path)


class VirtualCard:
    """One card: files, PIN, try counter, agency reset. `transmit` takes a command APDU, returns the response."""

    def __init__(self, holder: DemoHolder, card: DemoCard | None = None, *, quirks: Quirks = Quirks(),
                 store: CardStateStore | None = None, atr: bytes = DEFAULT_ATR) -> None:
        self.holder = holder
        self.card = card or holder.card
        self.quirks = quirks
        self.atr = atr
        self._store = store or CardStateStore()
        self.state = self._store.get(self.card)
        self._files = build_files(holder.person, self.card)
        self._lock = threading.Lock()
        self.commands_seen = 0
        self.power_on()

    # Power --------------------------------------------------------------------------------------

    def power_on(self) -> bytes:
        """Power-up or reset: volatile state goes; the PIN and its counter stay."""
        self._app_selected = False
        self._current_sfi: int | None = None
        self._pending: bytes | None = None
        self._challenge: bytes | None = None
        return self.atr

    reset = power_on

    # Commands -----------------------------------------------------------------------------------

    def transmit(self, command: bytes) -> bytes:
        with self._lock:
            self.commands_seen += 1
            return self._dispatch(bytes(command))

    def verify_on_pad(self, entry: apdu.PinEntry, typed_pin: str) -> bytes:
        """A PIN pad at this card's reader: the typed PIN goes into the entry's template and to this card only; the
        reader returns only the status word. A pad takes exactly the PIN's digits: anything else is cancelled."""
        try:
            command = entry.filled(typed_pin)
        except apdu.ApduError:
            return _sw(apdu.SW_PIN_ENTRY_CANCELLED)
        return self.transmit(command)[-2:]

    def _dispatch(self, command: bytes) -> bytes:
        if len(command) < 4:
            return _sw(apdu.SW_WRONG_LENGTH)
        cla, ins, p1, p2 = command[:4]
        body = command[4:]
        pending, self._pending = self._pending, None  # any command but GET RESPONSE drops it
        if cla not in (0x00, 0x80):
            return _sw(apdu.SW_CLA_NOT_SUPPORTED)
        if ins == 0xC0:
            return self._get_response(pending, body)
        handlers = {0xA4: self._select, 0xB2: self._read_record, 0x20: self._verify, 0x5E: self._change_pin,
                    0x84: self._get_challenge, 0x2C: self._reset_retry_counter}
        handler = handlers.get(ins)
        if handler is None:
            return _sw(apdu.SW_INS_NOT_SUPPORTED)
        return handler(cla, p1, p2, body)

    @staticmethod
    def _split(body: bytes) -> tuple[bytes, int | None] | None:
        """(data, Le) of a short APDU body, or None when Lc disagrees with the length."""
        if not body:
            return b"", None
        if len(body) == 1:
            return b"", body[0] or 256
        lc = body[0]
        if len(body) == 1 + lc:
            return body[1:], None
        if len(body) == 2 + lc:
            return body[1 : 1 + lc], body[-1] or 256
        return None

    def _offer(self, data: bytes, le: int | None, via_61: bool) -> bytes:
        """Answer with `data`, honouring Le the way the card's spec says (6Cxx, or 61xx for T=0)."""
        if via_61:
            self._pending = data
            return _sw(0x6100 | len(data))
        if le is None or le != len(data):
            return _sw(0x6C00 | len(data))
        return _sw(0x9000, data)

    def _get_response(self, pending: bytes | None, body: bytes) -> bytes:
        if pending is None:
            return _sw(apdu.SW_CONDITIONS_NOT_SATISFIED)
        le = (body[0] or 256) if len(body) == 1 else None
        if le is None:
            return _sw(apdu.SW_WRONG_LENGTH)
        if le > len(pending):
            self._pending = pending
            return _sw(0x6C00 | len(pending))
        if le < len(pending):
            self._pending = pending[le:]
            return _sw(0x6100 | len(self._pending), pending[:le])
        return _sw(0x9000, pending)

    def _select(self, cla: int, p1: int, p2: int, body: bytes) -> bytes:
        parts = self._split(body)
        if parts is None:
            return _sw(apdu.SW_WRONG_LENGTH)
        data, _le = parts
        if p1 == 0x04:
            if data != apdu.SOCIAL_SECURITY_AID:
                return _sw(apdu.SW_FILE_NOT_FOUND)
            self._app_selected, self._current_sfi = True, None
            if self.quirks.select_answers_61:
                fci = bytes((0x6F, len(data) + 2, 0x84, len(data))) + data
                self._pending = fci
                return _sw(0x6100 | len(fci))
            return _sw(0x9000)
        if p1 == 0x02:
            if not self._app_selected or data not in FILE_IDS:
                return _sw(apdu.SW_FILE_NOT_FOUND)
            self._current_sfi = FILE_IDS[data]
            return _sw(0x9000)
        if p1 == 0x00:  # the MF
            self._app_selected, self._current_sfi = False, None
            return _sw(0x9000)
        return _sw(apdu.SW_WRONG_P1P2)

    def _read_record(self, cla: int, p1: int, p2: int, body: bytes) -> bytes:
        if len(body) != 1:
            return _sw(apdu.SW_WRONG_LENGTH)
        le = body[0] or 256
        if not self._app_selected:
            return _sw(apdu.SW_FILE_NOT_FOUND)
        sfi = p2 >> 3 or self._current_sfi
        if sfi is None:
            return _sw(0x6986)  # no current EF
        records = self._files.get(sfi)
        if records is None:
            return _sw(apdu.SW_FILE_NOT_FOUND)
        mode = p2 & 0x07
        if mode == 0x04:
            record = records.get(p1)
        elif mode == 0x00:  # by identifier: P1 is the tag
            record = next((r for r in records.values() if r[0] == p1), None)
        else:
            return _sw(apdu.SW_WRONG_P1P2)
        if record is None:
            return _sw(apdu.SW_RECORD_NOT_FOUND)
        if self.quirks.records_via_61:
            return self._offer(record, le, via_61=True)
        return self._offer(record, le, via_61=False)

    def _check_pin(self, pin_bcd: bytes) -> bytes | None:
        """None if right; otherwise the refusal, having counted the try."""
        if self.state.tries_left == 0:
            return _sw(apdu.SW_SECURITY_BLOCKED)
        if pin_bcd.hex() == self.state.pin:
            self.state.tries_left = PIN_TRIES
            self._store.save()
            return None
        self.state.tries_left -= 1
        self._store.save()
        return _sw(0x63C0 | self.state.tries_left)

    def _verify(self, cla: int, p1: int, p2: int, body: bytes) -> bytes:
        if (p1, p2) != (0, 0):
            return _sw(apdu.SW_WRONG_P1P2)
        if not self._app_selected:
            return _sw(apdu.SW_CONDITIONS_NOT_SATISFIED)
        parts = self._split(body)
        if parts is None or len(parts[0]) != 3:
            return _sw(apdu.SW_WRONG_LENGTH)
        return self._check_pin(parts[0]) or _sw(0x9000)

    def _change_pin(self, cla: int, p1: int, p2: int, body: bytes) -> bytes:
        if cla != 0x80 or (p1, p2) != (1, 0):
            return _sw(apdu.SW_WRONG_P1P2)
        if not self._app_selected:
            return _sw(apdu.SW_CONDITIONS_NOT_SATISFIED)
        parts = self._split(body)
        if parts is None or len(parts[0]) != 7:
            return _sw(apdu.SW_WRONG_LENGTH)
        data = parts[0]
        if data[3] != 0xFF or not data[4:].hex().isdigit():
            return _sw(apdu.SW_WRONG_DATA)
        refused = self._check_pin(data[:3])
        if refused:
            return refused
        self.state.pin = data[4:].hex()
        self._store.save()
        return _sw(0x9000)

    def _get_challenge(self, cla: int, p1: int, p2: int, body: bytes) -> bytes:
        if body != bytes((apdu.CHALLENGE_BYTES,)):
            return _sw(0x6C00 | apdu.CHALLENGE_BYTES) if len(body) == 1 else _sw(apdu.SW_WRONG_LENGTH)
        self._challenge = secrets.token_bytes(apdu.CHALLENGE_BYTES)
        return _sw(0x9000, self._challenge)

    def _reset_retry_counter(self, cla: int, p1: int, p2: int, body: bytes) -> bytes:
        parts = self._split(body)
        if parts is None or len(parts[0]) != 3 + apdu.AGENCY_MAC_BYTES:
            return _sw(apdu.SW_WRONG_LENGTH)
        challenge, self._challenge = self._challenge, None  # single use
        if challenge is None:
            return _sw(apdu.SW_CONDITIONS_NOT_SATISFIED)
        new_pin, mac = parts[0][:3], parts[0][3:]
        expected = reset_mac(self.card.agency_card_key, challenge, bytes((cla, 0x2C, p1, p2)), new_pin)
        if not secrets.compare_digest(mac, expected) or not new_pin.hex().isdigit():
            return _sw(apdu.SW_SECURITY_NOT_SATISFIED)
        self.state.pin, self.state.tries_left = new_pin.hex(), PIN_TRIES
        self._store.save()
        return _sw(0x9000)


def card_from_population(card_number: str | None = None, persons: int = DEFAULT_PERSONS, seed: int = DEFAULT_SEED,
                         quirks: Quirks = Quirks(), store: CardStateStore | None = None) -> VirtualCard:
    """The demo card `card_number` (default: the first holder's card)."""
    cards = _cards_of(persons, seed)
    if card_number is None:
        card_number = next(iter(cards))
    if card_number not in cards:
        raise KeyError(f"no card {card_number} in the demo population of {persons} (seed {seed})")
    holder, card = cards[card_number]
    return VirtualCard(holder, card, quirks=quirks, store=store)


@functools.lru_cache(maxsize=4)
def _cards_of(persons: int, seed: int) -> dict[str, tuple[DemoHolder, DemoCard]]:
    """Every card of a population, built once: the gateway asks on its reactor thread for each virtual reader."""
    return {card.card_number: (holder, card) for holder in demo_population(persons, seed) for card in holder.cards}
