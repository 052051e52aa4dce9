"""`gateway card ...`: the card reader on this host, for operators and the card agency."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias

from twisted.internet.defer import ensureDeferred

from gateway.cli.support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Commands, Run, add_config
from gateway.config import GatewayConfig
from gateway.identity import mask_id
from gateway.reader.apdu import ApduError, pin_to_bcd
from gateway.reader.base import CardReader
from gateway.reader.card import CardData
from gateway.reader.driver import SocialSecurityCardDriver
from gateway.reader.errors import CardProblem, PinLocked, PinWrong
from gateway.reader.spec import ReaderSpec

READER_HELP = ('a PC/SC reader name as `gateway card readers` lists it, or virtual:CARD_NUMBER for a card of the '
               'demo population (default: the first PC/SC reader)')


def add_commands(commands: Commands) -> None:
    card = commands.add_parser("card", help="the card reader on this host",
                               description="Read social security cards in a reader on this host.")
    actions = card.add_subparsers(dest="card_command", metavar="ACTION", required=True)
    readers = actions.add_parser("readers", help="list the PC/SC readers",
                                 description="List the PC/SC readers pcscd knows, and whether each holds a card.")
    readers.set_defaults(run=_on_the_reactor(_list_readers))
    read = actions.add_parser("read", help="read the card and its holder",
                              description="Read and check the card in a reader. The ID number is masked "
                                          "unless --show-id is given.")
    read.add_argument("--reader", metavar="NAME", help=READER_HELP)
    read.add_argument("--json", action="store_true", help="print one JSON object")
    read.add_argument("--show-id", action="store_true", help="print the social security number unmasked")
    read.set_defaults(run=_on_the_reactor(_read_card))
    verify = actions.add_parser(
        "verify-pin", help="check the card's PIN",
        description="Check the card's PIN. The PIN is read from a hidden prompt, or from standard input when "
                    "that is not a terminal — never from the command line. Exits 0 only if the card accepted it.",
    )
    verify.add_argument("--reader", metavar="NAME", required=True, help=READER_HELP)
    verify.set_defaults(run=_on_the_reactor(_verify_pin))
    reset = actions.add_parser(
        "reset-pin", help="card agency: unblock and reset the PIN",
        description="Card agency operation: reset a locked PIN under the agency key (RESET RETRY COUNTER). The "
                    "holder has shown the original ID document. The new PIN is read like verify-pin's.",
    )
    reset.add_argument("--reader", metavar="NAME", required=True, help=READER_HELP)
    key = reset.add_mutually_exclusive_group(required=True)
    key.add_argument("--agency-key-file", type=Path, metavar="FILE",
                     help="file holding the agency master key in hex (at least 32 hex digits)")
    key.add_argument("--demo-key", action="store_true", help="the demo population's agency key (virtual cards)")
    reset.add_argument("--initial", action="store_true", help="reset to the initial PIN 000000 instead of asking")
    reset.set_defaults(run=_on_the_reactor(_reset_pin))
    for parser in (read, verify, reset):
        add_config(parser)


# A card action: the arguments, the configuration and the running reactor in; the exit status out.
CardAction: TypeAlias = Callable[[argparse.Namespace, GatewayConfig, Any], Awaitable[int]]


def _on_the_reactor(action: CardAction) -> Run:
    """The command that runs `action` on the reactor and says how the card answered."""

    def run(args: argparse.Namespace, config: GatewayConfig) -> int:
        from twisted.internet import task

        result: list[int] = []
        raised: list[Exception] = []

        def main(reactor: Any) -> Any:
            async def act() -> None:
                try:
                    result.append(await _explained(action(args, config, reactor)))
                except Exception as exc:  # raised again off the reactor, to main(), not logged as a traceback
                    raised.append(exc)
            return ensureDeferred(act())

        try:
            task.react(main)
        except SystemExit as exc:
            if raised:
                raise raised[0] from None
            if exc.code not in (0, None):
                return int(exc.code) if isinstance(exc.code, int) else EXIT_FAILED
        return result[0] if result else EXIT_FAILED

    return run


async def _explained(acting: Awaitable[int]) -> int:
    """The action's exit status, or the card's refusal or a usage error said in one line."""
    try:
        return await acting
    except PinWrong as exc:
        print(f"gateway: wrong PIN; {exc.tries_left} tries left before the card locks", file=sys.stderr)
        return EXIT_FAILED
    except PinLocked:
        print("gateway: the PIN is locked after 6 wrong tries: the holder brings the original ID document and the "
              "card to a card agency (gateway card reset-pin)", file=sys.stderr)
        return EXIT_FAILED
    except CardProblem as exc:
        from gateway.protocol.messages import pb

        print(f"gateway: {pb.StatusCode.Name(exc.status)}: {exc.detail_en}", file=sys.stderr)  # type: ignore[arg-type]
        return EXIT_FAILED
    except (ValueError, ApduError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def _list_readers(_args: argparse.Namespace, _config: GatewayConfig, _reactor: Any) -> int:
    from gateway.reader.pcsc import list_readers

    names = list_readers()
    if not names:
        print("no PC/SC readers (is pcscd running? `pcscd` starts it)")
        return EXIT_FAILED
    for name in names:
        print(name)
    return EXIT_OK


async def _read_card(args: argparse.Namespace, config: GatewayConfig, reactor: Any) -> int:
    card = await SocialSecurityCardDriver(_open_reader(args.reader, config, reactor)).read()
    _print_card(card, as_json=args.json, show_id=args.show_id)
    return EXIT_OK


async def _verify_pin(args: argparse.Namespace, config: GatewayConfig, reactor: Any) -> int:
    driver = SocialSecurityCardDriver(_open_reader(args.reader, config, reactor))
    pin = _read_pin("PIN: ")
    await driver.verify_pin(pin)
    print("PIN accepted")
    return EXIT_OK


def _open_reader(name: str | None, config: GatewayConfig, reactor: Any) -> CardReader:
    if name is not None and name.startswith("virtual:"):
        from gateway.demo.card import card_from_population
        from gateway.reader.virtual import VirtualReader

        spec = ReaderSpec.parse(name)
        try:
            card = card_from_population(spec.argument, config.reader.virtual_persons, config.reader.virtual_seed)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from exc
        return VirtualReader(name, card)
    from gateway.reader.pcsc import PcscReader, list_readers

    if name is None:
        names = list_readers()
        if not names:
            raise ValueError("no PC/SC readers found; name one with --reader")
        name = names[0]
    return PcscReader(name, reactor, transmit_timeout_s=config.reader.pcsc_timeout_s,
                      close_timeout_s=config.reader.pcsc_close_timeout_s)


def _read_pin(prompt: str) -> str:
    """A PIN from a hidden prompt, or from standard input's first line when it is not a terminal."""
    pin = getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.readline().strip()
    pin_to_bcd(pin)  # six digits, or ApduError (whose message does not repeat the PIN)
    return pin


async def _reset_pin(args: argparse.Namespace, config: GatewayConfig, reactor: Any) -> int:
    from gateway.reader.agency import DEMO_AGENCY_MASTER_KEY

    driver = SocialSecurityCardDriver(_open_reader(args.reader, config, reactor))
    if args.demo_key:
        master_key = DEMO_AGENCY_MASTER_KEY
    else:
        try:
            master_key = bytes.fromhex(args.agency_key_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the agency key from {args.agency_key_file}: {exc}") from exc
    new_pin = "000000" if args.initial else _read_pin("new PIN: ")
    if not args.initial and sys.stdin.isatty() and _read_pin("new PIN again: ") != new_pin:
        raise ValueError("the two PINs differ; nothing was changed")
    identification = await driver.read_identification()
    await driver.reset_pin(master_key, identification, new_pin)
    print("PIN reset; the card accepts six tries again")
    return EXIT_OK


def _print_card(card: CardData, *, as_json: bool, show_id: bool) -> None:
    fields = card.as_dict()
    if not show_id:
        fields["social_security_number"] = mask_id(card.social_security_number)
    if as_json:
        print(json.dumps(fields, ensure_ascii=False, sort_keys=True))
        return
    labels = {
        "card_number": "card number", "card_identification_code": "card identification code",
        "issuing_region_code": "issuing region", "spec_version": "spec version", "issue_date": "issued",
        "expiry_date": "expires", "social_security_number": "social security number", "name": "name",
        "sex": "sex", "ethnicity": "ethnicity", "birthplace": "birthplace", "birth_date": "born",
    }
    for key, label in labels.items():
        print(f"{label:>26}: {fields[key]}")
