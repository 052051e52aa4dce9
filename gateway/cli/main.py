"""The `gateway` command: the parser assembled from one module per command group; each leaf sub-command
names its own handler (`set_defaults(run=...)`), which main() calls with the resolved configuration."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.cli import agency, card, db, finance, ledger, payout, pki, registry, serve, simulate
from gateway.cli.support import EXIT_FAILED, EXIT_USAGE, Run, resolve_config
from gateway.config import ConfigError

# In the order `gateway --help` lists them.
COMMAND_GROUPS = (serve, db, registry, card, agency, ledger, payout, simulate, finance, pki)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Ningbo medical-settlement gateway: settles medical insurance with the social security card.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = resolve_config(args)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    run: Run = args.run
    try:
        return run(args, config)
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
