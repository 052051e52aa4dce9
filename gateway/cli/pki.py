"""`gateway pki init-ca | issue-server | issue-terminal | revoke | list`: the operator's terminal CA
(gateway.pki.authority). Private keys are written with mode 0600 and never printed."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from gateway.cli.support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Commands
from gateway.config import GatewayConfig
from gateway.pki.authority import (
    CA_DAYS,
    LEAF_DAYS,
    PkiError,
    init_ca,
    issue_server,
    issue_terminal,
    list_certificates,
    revoke,
)
from gateway.pki.layout import DEFAULT_PKI_DIR, PkiLayout
from gateway.pki.names import serial_text

DEFAULT_CA_NAME = "Ningbo gateway terminal CA"


def add_commands(commands: Commands) -> None:
    pki = commands.add_parser(
        "pki", help="the terminal CA: certificates for TLS",
        description="The operator's terminal CA: the gateway's TLS certificate and one certificate per terminal "
                    "(its subject CN is the terminal id), and their revocation. A directory holds ca.crt, ca.key, "
                    "crl.pem, server.crt/.key and terminals/TERMINAL_ID.crt/.key (docs/configuration.md, [tls]).")
    actions = pki.add_subparsers(dest="pki_command", metavar="ACTION", required=True)

    init = actions.add_parser("init-ca", help="create the CA (its key, certificate and an empty CRL)",
                              description="Create a CA in --dir: ca.key (mode 0600), ca.crt, crl.pem. Refused "
                                          "when the directory already holds one.")
    init.add_argument("--name", default=DEFAULT_CA_NAME, help=f"the CA's common name (default {DEFAULT_CA_NAME!r})")
    init.add_argument("--days", type=int, default=CA_DAYS, help=f"validity in days (default {CA_DAYS})")
    init.add_argument("--skip-existing", action="store_true", help="leave a CA that is there (exit 0)")
    init.set_defaults(run=_init_ca)

    server = actions.add_parser("issue-server", help="the gateway's own certificate",
                                description="Issue server.crt and server.key for the names terminals dial: DNS "
                                            "names and IP addresses (the first is also the subject CN).")
    server.add_argument("hosts", nargs="+", metavar="HOST")
    server.add_argument("--days", type=int, default=LEAF_DAYS, help=f"validity in days (default {LEAF_DAYS})")
    server_existing = server.add_mutually_exclusive_group()
    server_existing.add_argument("--skip-existing", action="store_true",
                                 help="leave a server certificate that is there")
    server_existing.add_argument("--replace", action="store_true", help="replace an existing server certificate")
    server.set_defaults(run=_issue_server)

    terminal = actions.add_parser(
        "issue-terminal", help="a certificate per terminal id",
        description="Issue terminals/TERMINAL_ID.crt and .key for each terminal id (and with --demo every terminal "
                    "of `gateway registry demo`). A terminal that already has one is refused unless --skip-existing "
                    "(leave it) or --replace (a new key and certificate; the old one stays valid until revoked).")
    terminal.add_argument("terminal_ids", nargs="*", metavar="TERMINAL_ID")
    terminal.add_argument("--demo", action="store_true", help="every terminal id of the demo registry")
    from gateway.demo.registry import DEFAULT_TERMINALS_PER_INSTITUTION

    terminal.add_argument("--terminals-per-institution", type=int, default=DEFAULT_TERMINALS_PER_INSTITUTION,
                          metavar="N", help="with --demo: as `gateway registry demo` was given "
                                            f"(default {DEFAULT_TERMINALS_PER_INSTITUTION})")
    existing = terminal.add_mutually_exclusive_group()
    existing.add_argument("--skip-existing", action="store_true", help="leave terminals that have a certificate")
    existing.add_argument("--replace", action="store_true", help="issue anew for terminals that have one")
    terminal.add_argument("--days", type=int, default=LEAF_DAYS, help=f"validity in days (default {LEAF_DAYS})")
    terminal.set_defaults(run=_issue_terminal)

    revoking = actions.add_parser(
        "revoke", help="revoke a terminal's certificates, or one certificate by serial",
        description="Add to crl.pem every unrevoked certificate naming TERMINAL_ID, or the one with SERIAL (hex, "
                    "as `list` prints it). Gateways reading the CRL refuse it from their next connection on.")
    revoking.add_argument("target", metavar="TERMINAL_ID|SERIAL")
    revoking.set_defaults(run=_revoke)

    listing = actions.add_parser("list", help="every certificate issued, with its status",
                                 description="Every certificate this CA issued: serial, kind, name, validity and "
                                             "status (valid, expired, revoked).")
    listing.set_defaults(run=_list)

    for parser in (init, server, terminal, revoking, listing):
        parser.add_argument("--dir", type=Path, default=Path(DEFAULT_PKI_DIR), metavar="DIR",
                            help=f"the PKI directory (default {DEFAULT_PKI_DIR})")


def _failed(exc: PkiError) -> int:
    print(f"gateway: {exc}", file=sys.stderr)
    return EXIT_FAILED


def _init_ca(args: argparse.Namespace, _config: GatewayConfig) -> int:
    layout = PkiLayout(args.dir)
    if args.skip_existing and layout.ca_key.exists():
        print(f"{layout.root} holds a CA already; left as it is")
        return EXIT_OK
    try:
        certificate = init_ca(layout, args.name, days=args.days)
    except PkiError as exc:
        return _failed(exc)
    print(f"CA {args.name!r} created in {layout.root}: {layout.ca_certificate} (serial {serial_text(certificate)}, "
          f"valid until {certificate.not_valid_after_utc:%Y-%m-%d}), key {layout.ca_key} (mode 0600: keep it "
          f"offline; the gateway needs only {layout.ca_certificate.name} and {layout.crl.name})")
    return EXIT_OK


def _issue_server(args: argparse.Namespace, _config: GatewayConfig) -> int:
    layout = PkiLayout(args.dir)
    if args.skip_existing and layout.server_certificate.exists():
        print(f"{layout.server_certificate} exists; left as it is")
        return EXIT_OK
    try:
        certificate = issue_server(layout, args.hosts, days=args.days, replace=args.replace)
    except PkiError as exc:
        return _failed(exc)
    print(f"server certificate for {', '.join(args.hosts)}: {layout.server_certificate} (serial "
          f"{serial_text(certificate)}, valid until {certificate.not_valid_after_utc:%Y-%m-%d}), key "
          f"{layout.server_key} (mode 0600)")
    return EXIT_OK


def _issue_terminal(args: argparse.Namespace, _config: GatewayConfig) -> int:
    terminal_ids = list(args.terminal_ids)
    if args.demo:
        from gateway.demo.registry import DEMO_INSTITUTIONS, demo_terminal_id

        terminal_ids += [demo_terminal_id(institution[0], number) for institution in DEMO_INSTITUTIONS
                         for number in range(1, args.terminals_per_institution + 1)]
    if not terminal_ids:
        print("gateway: issue-terminal needs TERMINAL_ID... or --demo", file=sys.stderr)
        return EXIT_USAGE
    layout = PkiLayout(args.dir)
    issued = skipped = 0
    for terminal_id in dict.fromkeys(terminal_ids):
        if args.skip_existing and layout.terminal_certificate(terminal_id).exists():
            skipped += 1
            continue
        try:
            certificate = issue_terminal(layout, terminal_id, days=args.days, replace=args.replace)
        except PkiError as exc:
            return _failed(exc)
        issued += 1
        print(f"terminal {terminal_id}: {layout.terminal_certificate(terminal_id)} (serial "
              f"{serial_text(certificate)}, valid until {certificate.not_valid_after_utc:%Y-%m-%d}), key "
              f"{layout.terminal_key(terminal_id).name} (mode 0600)")
    print(f"{issued} terminal certificate(s) issued in {layout.terminals}"
          + (f"; {skipped} terminal(s) already had one" if skipped else ""))
    return EXIT_OK


def _revoke(args: argparse.Namespace, _config: GatewayConfig) -> int:
    layout = PkiLayout(args.dir)
    try:
        revoked = revoke(layout, args.target)
    except PkiError as exc:
        return _failed(exc)
    if not revoked:
        print(f"nothing to do: every certificate matching {args.target!r} was revoked already")
        return EXIT_OK
    for certificate in revoked:
        print(f"revoked {certificate.kind} {certificate.name} (serial {certificate.serial})")
    print(f"{layout.crl} now lists it; gateways reading it refuse it from their next connection")
    return EXIT_OK


def _list(args: argparse.Namespace, _config: GatewayConfig) -> int:
    layout = PkiLayout(args.dir)
    try:
        certificates = list_certificates(layout)
    except PkiError as exc:
        return _failed(exc)
    now = datetime.now(UTC)
    width = max((len(c.serial) for c in certificates), default=6)
    print(f"{'serial':<{width}}  {'kind':<8}  {'name':<32}  {'valid until':<16}  status")
    for c in certificates:
        status = c.status(now) + (f" {c.revoked_at:%Y-%m-%d %H:%M} UTC" if c.revoked_at is not None else "")
        print(f"{c.serial:<{width}}  {c.kind:<8}  {c.name:<32}  {c.not_after:%Y-%m-%d %H:%M}  {status}")
    return EXIT_OK
