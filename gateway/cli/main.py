"""The `gateway` command: the parser assembled from one module per command group; each leaf sub-command
names its own handler (`set_defaults(run=...)`), which main() calls with the resolved configuration."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.cli import agency, card, db, finance, ledger, payout, pki, policy, registry, serve, simulate, status
from gateway.cli.support import EXIT_FAILED, EXIT_USAGE, Run, resolve_config
from gateway.config import ConfigError

# In the order `gateway --help` lists them.
COMMAND_GROUPS = (serve, status, db, registry, card, agency, ledger, policy, payout, simulate, finance, pki)


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
    try:
        try:
            return _run(argv)
        finally:
            # Written now, not when Python exits: a closed pipe or a full disk is then still ours to report.
            sys.stdout.flush()
    except BrokenPipeError:
        _drop_standard_output()
        print("gateway: standard output was closed before everything was written", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # input or output no command foresaw, e.g. standard output on a full disk
        try:
            sys.stdout.flush()
        except OSError:
            _drop_standard_output()
        where = f" {exc.filename}" if exc.filename else ""
        print(f"gateway: input/output error{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(argv: Sequence[str] | None) -> int:
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


def _drop_standard_output() -> None:
    """Standard output cannot take what is left in its buffer: it goes to /dev/null, so that Python's own flush
    at exit does not fail a second time."""
    with contextlib.suppress(OSError, ValueError):  # not a real file (captured in tests): nothing to flush
        stdout = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stdout)
        os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
