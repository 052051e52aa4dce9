"""ReadCard over a real socket through each backend: the terminal's own reader (APDU relay), a virtual
reader in the gateway, and a PC/SC reader on the gateway host — the same card must read the same."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.demo.card import card_from_population
from gateway.protocol.messages import pb
from simulators.virtual_card import VpcdClient
from tests.test_end_to_end import ROOT, RunningGateway
from tests.wire import WireClient, request, sign_in

OK = pb.STATUS_CODE_OK
RELAY_TERMINAL = "H33020300001-01"
PCSC_TERMINAL = "H33020300001-02"
VIRTUAL_TERMINAL = "H33020300001-03"  # the demo registry gives it virtual:N00000001


class ConfiguredGateway(RunningGateway):
    def __init__(self, tmp: Path, config: str) -> None:
        path = tmp / "gateway.toml"
        path.write_text(config, encoding="utf-8")
        self.config_path = path
        super().__init__(tmp)

    def serve_command(self) -> list[str]:
        return ["--config", str(self.config_path)]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    config = f'[reader]\nrelay_timeout_s = 3.0\n[reader.terminals]\n"{PCSC_TERMINAL}" = "pcsc:Virtual PCD 00 00"\n'
    running = ConfiguredGateway(tmp_path_factory.mktemp("readers"), config)
    yield running
    running.stop()


def relay_read(client: WireClient, message_id: str, card: object) -> tuple[pb.Response, int]:
    """Send ReadCard and play the terminal: answer every ApduScript with `card`."""
    client.send(request("read_card", message_id))
    scripts = 0
    while True:
        response = client.receive()
        if not response.interim:
            return response, scripts
        scripts += 1
        script = response.apdu_script
        answers = [card.transmit(command) for command in script.commands]  # type: ignore[attr-defined]
        client.send(request("apdu_result", f"{message_id}-ar{scripts}", script_id=script.script_id,
                            responses=answers))


def test_read_card_through_the_terminals_reader_costs_one_round_trip(gateway: RunningGateway) -> None:
    client = gateway.client()
    assert client.call(sign_in(terminal_id=RELAY_TERMINAL)).status == OK
    response, scripts = relay_read(client, "rc-relay", card_from_population())
    assert response.status == OK, response.message_en
    assert response.read_card.card.card_number == "N00000001"
    assert scripts == 1
    client.close()


def test_a_terminal_reader_that_reports_no_card(gateway: RunningGateway) -> None:
    client = gateway.client()
    client.call(sign_in(terminal_id=RELAY_TERMINAL))
    client.send(request("read_card", "rc-empty"))
    interim = client.receive()
    client.send(request("apdu_result", "ar-empty", script_id=interim.apdu_script.script_id,
                        error=pb.READER_ERROR_NO_CARD))
    final = client.receive()
    assert (final.message_id, final.status) == ("rc-empty", pb.STATUS_CODE_CARD_NOT_PRESENT)
    client.close()


def test_the_three_backends_read_the_same_card_to_the_same_result(
    gateway: RunningGateway, vpcd_card: VpcdClient
) -> None:
    relay_client = gateway.client()
    relay_client.call(sign_in(terminal_id=RELAY_TERMINAL))
    by_relay, _ = relay_read(relay_client, "rc-1", card_from_population())

    virtual_client = gateway.client()
    virtual_client.call(sign_in(terminal_id=VIRTUAL_TERMINAL))
    by_virtual = virtual_client.call(request("read_card", "rc-2", terminal_id=VIRTUAL_TERMINAL))

    pcsc_client = gateway.client()
    pcsc_client.call(sign_in(terminal_id=PCSC_TERMINAL))
    by_pcsc = pcsc_client.call(request("read_card", "rc-3", terminal_id=PCSC_TERMINAL))

    for response in (by_relay, by_virtual, by_pcsc):
        assert response.status == OK, response.message_en
    assert by_relay.read_card.card == by_virtual.read_card.card == by_pcsc.read_card.card
    assert by_pcsc.read_card.card.name == "张玲"
    for client in (relay_client, virtual_client, pcsc_client):
        client.close()


def test_the_cli_reads_the_same_card_from_the_virtual_reader() -> None:
    result = subprocess.run([sys.executable, "-m", "gateway", "card", "read", "--reader", "virtual:N00000001",
                             "--json", "--show-id"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"card_number": "N00000001"' in result.stdout
