"""The real PC/SC path: pcscd + vsmartcard-vpcd, our virtual card as a vpcd client, pyscard in the gateway.

The fixtures start pcscd themselves; these tests skip only where the Debian packages are missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from gateway.demo.card import VirtualCard, card_from_population
from gateway.protocol.messages import pb
from gateway.reader.agency import DEMO_AGENCY_MASTER_KEY
from gateway.reader.base import Presence, PresenceEvent
from gateway.reader.driver import SocialSecurityCardDriver
from gateway.reader.errors import CardProblem, PinLocked, PinWrong
from gateway.reader.pcsc import PcscReader, list_readers
from gateway.reader.virtual import VirtualReader
from simulators.virtual_card import VpcdClient
from tests.conftest import PcscStack

ROOT = Path(__file__).resolve().parent.parent
TODAY = date(2026, 11, 24)


def sleep(seconds: float) -> Any:
    return task.deferLater(reactor, seconds, lambda: None)


def test_pcscd_lists_the_virtual_reader(pcsc_stack: str) -> None:
    assert pcsc_stack in list_readers()


@pytest_twisted.inlineCallbacks
def test_pyscard_reads_the_same_card_as_the_in_process_reader(vpcd_card: VpcdClient) -> Any:
    reader = PcscReader("Virtual PCD 00 00", reactor)
    try:
        through_pcsc = yield SocialSecurityCardDriver(reader, today=lambda: TODAY).read()
    finally:
        reader.close()
    in_process = yield SocialSecurityCardDriver(VirtualReader("v", card_from_population()), today=lambda: TODAY).read()
    assert through_pcsc == in_process
    assert through_pcsc.card_number == "N00000001"


@pytest_twisted.inlineCallbacks
def test_six_wrong_pins_lock_the_card_and_the_agency_resets_it(vpcd_card: VpcdClient) -> Any:
    reader = PcscReader("Virtual PCD 00 00", reactor)
    driver = SocialSecurityCardDriver(reader, today=lambda: TODAY)
    try:
        tries = []
        for _ in range(6):
            try:
                yield driver.verify_pin("999999")
            except PinWrong as wrong:
                tries.append(wrong.tries_left)
            except PinLocked:
                tries.append(0)
        assert tries == [5, 4, 3, 2, 1, 0]
        with pytest.raises(PinLocked):
            yield driver.verify_pin("000000")
        identification = yield driver.read_identification()
        yield driver.reset_pin(DEMO_AGENCY_MASTER_KEY, identification, "000000")
        yield driver.verify_pin("000000")
    finally:
        reader.close()


@pytest_twisted.inlineCallbacks
def test_insertion_and_removal_are_seen(pcsc_daemon: PcscStack) -> Any:
    reader = PcscReader(pcsc_daemon.reader, reactor)
    events: list[PresenceEvent] = []
    reader.subscribe(events.append)
    client = VpcdClient(card_from_population(), port=pcsc_daemon.vpcd_port)
    try:
        yield sleep(1.0)  # the monitor learns the empty state first
        client.insert()
        for _ in range(100):
            if any(e.presence is Presence.INSERTED for e in events):
                break
            yield sleep(0.1)
        client.remove()
        for _ in range(100):
            if Presence.REMOVED in [e.presence for e in events[1:]]:
                break
            yield sleep(0.1)
    finally:
        client.remove()
        reader.close()
    kinds = [e.presence for e in events]
    assert Presence.INSERTED in kinds, events
    inserted = kinds.index(Presence.INSERTED)
    assert Presence.REMOVED in kinds[inserted:], events
    assert events[inserted].atr == card_from_population().atr


@pytest_twisted.inlineCallbacks
def test_an_empty_reader_and_an_unknown_reader_give_clear_statuses(pcsc_stack: str) -> Any:
    empty = PcscReader(pcsc_stack, reactor, transmit_timeout_s=5)
    unknown = PcscReader("No Such Reader 00 00", reactor, transmit_timeout_s=5)
    try:
        with pytest.raises(CardProblem) as no_card:
            yield SocialSecurityCardDriver(empty).read()
        assert no_card.value.status == pb.STATUS_CODE_CARD_NOT_PRESENT
        with pytest.raises(CardProblem) as no_reader:
            yield SocialSecurityCardDriver(unknown).read()
        assert no_reader.value.status == pb.STATUS_CODE_READER_UNAVAILABLE
    finally:
        empty.close()
        unknown.close()


class PulledOut(VirtualCard):
    """A card whose holder pulls it out after a few commands."""

    client: VpcdClient

    def transmit(self, command: bytes) -> bytes:
        if self.commands_seen == 4 and self.client._sock is not None:
            self.client._sock.close()
        return super().transmit(command)


@pytest_twisted.inlineCallbacks
def test_a_card_pulled_out_mid_read_gives_a_clear_status(pcsc_daemon: PcscStack) -> Any:
    template = card_from_population()
    card = PulledOut(template.holder)
    client = VpcdClient(card, port=pcsc_daemon.vpcd_port)
    card.client = client
    client.insert()
    reader = PcscReader(pcsc_daemon.reader, reactor, transmit_timeout_s=5)
    try:
        with pytest.raises(CardProblem) as pulled:
            yield SocialSecurityCardDriver(reader).read()
        assert pulled.value.status in (pb.STATUS_CODE_CARD_REMOVED, pb.STATUS_CODE_CARD_NOT_PRESENT,
                                       pb.STATUS_CODE_READER_UNAVAILABLE)
    finally:
        reader.close()
        client.remove()
    yield sleep(1.0)


def gateway_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "card", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_the_card_commands_on_the_real_stack(vpcd_card: VpcdClient) -> None:
    listed = gateway_cli("readers")
    assert listed.returncode == 0 and "Virtual PCD 00 00" in listed.stdout
    masked = gateway_cli("read", "--reader", "Virtual PCD 00 00", "--json")
    assert masked.returncode == 0, masked.stderr
    fields = json.loads(masked.stdout)
    assert fields["card_number"] == "N00000001" and fields["social_security_number"] == "330213********2808"
    shown = json.loads(gateway_cli("read", "--reader", "Virtual PCD 00 00", "--json", "--show-id").stdout)
    assert shown["social_security_number"] == "330213196412052808"
    wrong = gateway_cli("verify-pin", "--reader", "Virtual PCD 00 00", stdin="654321\n")
    assert wrong.returncode == 1 and "5 tries left" in wrong.stderr
    assert "654321" not in wrong.stdout + wrong.stderr
    right = gateway_cli("verify-pin", "--reader", "Virtual PCD 00 00", stdin="000000\n")
    assert right.returncode == 0 and "000000" not in right.stdout + right.stderr
    reset = gateway_cli("reset-pin", "--reader", "Virtual PCD 00 00", "--demo-key", "--initial")
    assert reset.returncode == 0, reset.stderr


def test_the_virtual_card_program_as_the_readme_runs_it(pcsc_daemon: PcscStack, tmp_path: Path) -> None:
    """`python -m simulators.virtual_card --vpcd ... [--card ...]`, read with `gateway card read`."""
    import time

    state = tmp_path / "cards.json"
    for card_number, expected in ((None, "N00000001"), ("Z00000101", "Z00000101")):
        command = [sys.executable, "-m", "simulators.virtual_card", "--vpcd", f"127.0.0.1:{pcsc_daemon.vpcd_port}",
                   "--state", str(state)]
        if card_number:
            command += ["--card", card_number]
        program = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 15
            while True:
                read = gateway_cli("read", "--reader", pcsc_daemon.reader, "--json")
                if read.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert read.returncode == 0, read.stderr
            assert json.loads(read.stdout)["card_number"] == expected
            wrong = gateway_cli("verify-pin", "--reader", pcsc_daemon.reader, stdin="999999\n")
            assert "5 tries left" in wrong.stderr
        finally:
            program.terminate()
            program.wait(timeout=10)
        time.sleep(1.0)
    # The try counters were kept in the state file, not in the program.
    saved = json.loads(state.read_text())
    assert saved["N00000001"]["tries_left"] == 5 and saved["Z00000101"]["tries_left"] == 5


def test_the_virtual_card_program_lists_the_population() -> None:
    listed = subprocess.run([sys.executable, "-m", "simulators.virtual_card", "--list", "--persons", "20"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].startswith("N00000001\tningbo\tsocial_security\tactive\t")


def test_closing_a_reader_whose_driver_hangs_does_not_hang_the_gateway() -> None:
    """A call stuck in the PC/SC driver holds the reader's worker; closing the reader (at shutdown, on the
    reactor's thread) gives up after its close timeout and leaves that worker behind as a daemon thread."""
    import threading
    import time

    reader = PcscReader("Hung Reader 00 00", reactor, close_timeout_s=0.5)
    stuck, release = threading.Event(), threading.Event()

    def hung_in_the_driver() -> None:
        stuck.set()
        release.wait(30)

    reader._run(hung_in_the_driver).addErrback(lambda _failure: None)
    try:
        assert stuck.wait(5)
        started = time.monotonic()
        reader.close()
        assert time.monotonic() - started < 3
        workers = [t for t in threading.enumerate() if "pcsc-Hung Reader" in t.name and "close" not in t.name]
        assert workers and all(t.daemon for t in workers)
    finally:
        release.set()
