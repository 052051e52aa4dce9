"""`gateway serve`: the gateway in the foreground (gateway.serve.app)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from gateway.cli.support import EXIT_FAILED, EXIT_USAGE, Commands, add_config, add_db, no_database_advice
from gateway.config import MAX_PROCESSES, ConfigError, GatewayConfig, validate_config
from gateway.db.engine import DatabaseMissing, DatabaseUrlError
from gateway.ops.logs import LEVELS, LOG_FORMATS, report_fatal


def add_commands(commands: Commands) -> None:
    serve = commands.add_parser("serve", help="run the gateway in the foreground",
                                description="Run the gateway in the foreground until Ctrl+C or SIGTERM.")
    add_config(serve)
    serve.add_argument("--listen", action="append", metavar="ENDPOINT",
                       help="Twisted server endpoint for plain TCP, e.g. tcp:9500:interface=127.0.0.1 (repeatable; "
                            "overrides server.listen; loopback only unless server.allow_plaintext_on_network)")
    serve.add_argument("--tls-listen", action="append", metavar="ENDPOINT",
                       help="Twisted server endpoint served with TLS and terminal certificates, e.g. "
                            "tcp:9543:interface=0.0.0.0 (repeatable; overrides tls.listen; files: [tls])")
    serve.add_argument("--metrics-listen", metavar="ENDPOINT",
                       help="Twisted server endpoint of /metrics, /healthz, /readyz and /status, e.g. "
                            "tcp:9501:interface=127.0.0.1; \"\" for none (overrides metrics.listen)")
    serve.add_argument("--processes", type=int, metavar="N",
                       help="reactor processes sharing each listening address (SO_REUSEPORT) and the ledger; "
                            f"worker K serves metrics on metrics.listen's port + K (1 to {MAX_PROCESSES}; "
                            "overrides server.processes)")
    add_db(serve)
    serve.add_argument("--log-format", choices=LOG_FORMATS, help="log format (overrides log.format)")
    serve.add_argument("--log-level", choices=tuple(LEVELS),
                       help="lowest level logged (overrides log.level)")
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace, config: GatewayConfig) -> int:
    from gateway.serve.app import StartupError, serve
    from gateway.settlement.policy import PolicyError

    try:
        config = _with_serve_options(args, config)
    except ConfigError as exc:
        report_fatal(str(exc))
        return EXIT_USAGE
    try:
        if config.server.processes > 1:
            from gateway.serve.processes import supervise

            return supervise(config)
        return serve(config)
    except (DatabaseUrlError, PolicyError) as exc:
        report_fatal(str(exc))
        return EXIT_USAGE
    except DatabaseMissing as exc:
        report_fatal(no_database_advice(exc))
        return EXIT_FAILED
    except StartupError as exc:
        report_fatal(str(exc))
        return EXIT_FAILED


def _with_serve_options(args: argparse.Namespace, config: GatewayConfig) -> GatewayConfig:
    """The configuration with --listen, --tls-listen, --metrics-listen, --processes, --log-format and --log-level
    applied over the file's keys."""
    if args.listen:
        config = replace(config, server=replace(config.server, listen=tuple(args.listen)))
    if args.tls_listen:
        config = replace(config, tls=replace(config.tls, listen=tuple(args.tls_listen)))
    if args.metrics_listen is not None:
        config = replace(config, metrics=replace(config.metrics, listen=args.metrics_listen))
    if args.processes is not None:
        config = replace(config, server=replace(config.server, processes=args.processes))
    if args.log_format:
        config = replace(config, log=replace(config.log, format=args.log_format))
    if args.log_level:
        config = replace(config, log=replace(config.log, level=args.log_level))
    validate_config(config, "command line")
    return config
