"""A virtual Ningbo social security card (gateway.demo.card) on the real PC/SC stack (pcscd with the
vsmartcard-vpcd driver):

    python -m simulators.virtual_card --vpcd 127.0.0.1:35963 [--card CARD_NUMBER]

Without --card it presents the first card of the demo population (PIN 000000). The PIN try counter
belongs to the card: it survives power cycles and resets, and with --state FILE it survives restarts
of this program too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import socket
import struct
import sys
import threading
import time
from pathlib import Path

from gateway.demo.card import CardStateStore, Quirks, VirtualCard, card_from_population
from gateway.demo.population import DEFAULT_PERSONS, DEFAULT_SEED, demo_population

log = logging.getLogger("simulators.virtual_card")

VPCD_DEFAULT_PORT = 35963
VPCD_POWER_OFF, VPCD_POWER_ON, VPCD_RESET, VPCD_GET_ATR = 0x00, 0x01, 0x02, 0x04


# vpcd -----------------------------------------------------------------------------------------


class VpcdClient:
    """Presents a VirtualCard to vsmartcard-vpcd: the card is "inserted" while connected.

    Every message both ways is a 2-byte big-endian length and a payload; a 1-byte payload from vpcd
    is control (power off, power on, reset, get ATR), anything longer a command APDU.
    """

    def __init__(self, card: VirtualCard, host: str = "127.0.0.1", port: int = VPCD_DEFAULT_PORT) -> None:
        self.card = card
        self.host, self.port = host, port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def insert(self, connect_timeout_s: float = 10.0) -> None:
        """Connect to vpcd (retrying until it listens) and serve in a background thread."""
        deadline = time.monotonic() + connect_timeout_s
        while True:
            try:
                self._sock = socket.create_connection((self.host, self.port), timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._sock.settimeout(None)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, args=(self._sock,), daemon=True,
                                        name=f"vpcd-{self.card.card.card_number}")
        self._thread.start()

    def remove(self) -> None:
        """Pull the card out: close the connection to vpcd."""
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wait(self) -> None:
        """Block until vpcd closes the connection: the card stays inserted until then."""
        if self._thread is not None:
            self._thread.join()

    def swap(self, card: VirtualCard) -> None:
        self.remove()
        self.card = card
        self.insert()

    def _serve(self, sock: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                header = _read_exactly(sock, 2)
                if header is None:
                    return
                (length,) = struct.unpack(">H", header)
                payload = _read_exactly(sock, length)
                if payload is None:
                    return
                answer = self._answer(payload)
                if answer is not None:
                    sock.sendall(struct.pack(">H", len(answer)) + answer)
        except OSError:
            return

    def _answer(self, payload: bytes) -> bytes | None:
        if len(payload) == 1:
            control = payload[0]
            if control in (VPCD_POWER_ON, VPCD_RESET):
                self.card.power_on()
                return None
            if control == VPCD_POWER_OFF:
                self.card.power_on()  # volatile state is lost either way
                return None
            if control == VPCD_GET_ATR:
                return self.card.atr
            return None
        return self.card.transmit(payload)


def _read_exactly(sock: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.virtual_card",
        description="Present a virtual Ningbo social security card to vsmartcard-vpcd (a PC/SC reader).",
    )
    parser.add_argument("--vpcd", default=f"127.0.0.1:{VPCD_DEFAULT_PORT}", metavar="HOST:PORT",
                        help=f"where vpcd listens (default 127.0.0.1:{VPCD_DEFAULT_PORT}, /etc/reader.conf.d/vpcd)")
    parser.add_argument("--card", metavar="CARD_NUMBER",
                        help="a card number of the demo population (default: its first card, PIN 000000)")
    parser.add_argument("--persons", type=int, default=DEFAULT_PERSONS,
                        help=f"size of the demo population (default {DEFAULT_PERSONS})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the demo population (default {DEFAULT_SEED})")
    parser.add_argument("--state", type=Path, metavar="FILE",
                        help="keep PINs and try counters in this JSON file across restarts")
    parser.add_argument("--select-61", action="store_true", help="answer SELECT with 61xx (FCI by GET RESPONSE)")
    parser.add_argument("--t0", action="store_true", help="answer READ RECORD with 61xx (data by GET RESPONSE)")
    parser.add_argument("--list", action="store_true", help="list the population's cards and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.list:
        for holder in demo_population(args.persons, args.seed):
            for demo_card in holder.cards:
                print(f"{demo_card.card_number}\t{holder.case}\t{demo_card.kind}\t{demo_card.status}\t"
                      f"{holder.person.name}")
        return 0
    host, _, port = args.vpcd.rpartition(":")
    try:
        card = card_from_population(args.card, args.persons, args.seed,
                                    Quirks(select_answers_61=args.select_61, records_via_61=args.t0),
                                    CardStateStore(args.state))
    except KeyError as exc:
        print(f"virtual_card: {exc.args[0]}", file=sys.stderr)
        return 2
    client = VpcdClient(card, host or "127.0.0.1", int(port))
    log.info("presenting card %s (%s) to vpcd at %s:%s; Ctrl+C removes it", card.card.card_number,
             card.holder.case, client.host, client.port)
    while True:
        try:
            client.insert(connect_timeout_s=3600)
            client.wait()
            log.info("vpcd closed the connection; reconnecting")
            time.sleep(1)
        except KeyboardInterrupt:
            client.remove()
            return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["VpcdClient"]
