"""One worker of `gateway serve --processes N`, started by its supervisor (gateway.serve.processes) as
`python -m gateway.serve.worker`.

The supervisor writes one JSON line on the worker's standard input: its number, how many there are, the descriptor
of the pipe it reports on, and the resolved configuration (every listening port fixed, the worker's own metrics
address). Standard input then stays open: its end (the supervisor gone, even by kill -9) stops the worker as SIGTERM
does, with the drain, so that no worker outlives its supervisor.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from typing import Any

from gateway.config import ConfigError, config_from_mapping
from gateway.db.engine import DatabaseMissing, DatabaseUrlError
from gateway.ops.logs import report_fatal
from gateway.serve.app import StartupError, WorkerRole, serve
from gateway.settlement.policy import PolicyError

EXIT_FAILED = 1  # as the command line's (gateway.cli.support), which this layer may not import


STDIN = 0


def main() -> int:
    line = _first_line()
    if not line:
        return EXIT_FAILED  # the supervisor went before it said what to run
    spec = json.loads(line)
    report_stream = os.fdopen(spec["report_fd"], "w", encoding="utf-8")

    def report(facts: dict[str, Any]) -> None:
        report_stream.write(json.dumps(facts) + "\n")
        report_stream.flush()

    try:
        config = config_from_mapping(spec["config"], source="the supervisor's configuration")
    except ConfigError as exc:
        report_fatal(str(exc))
        return EXIT_FAILED
    threading.Thread(target=_stop_when_supervisor_gone, name="supervisor-lifeline", daemon=True).start()
    try:
        return serve(config, WorkerRole(spec["index"], spec["count"], report))
    except (DatabaseUrlError, PolicyError, DatabaseMissing, StartupError) as exc:
        report_fatal(str(exc))
        return EXIT_FAILED


def _first_line() -> bytes:
    """The supervisor's line, read from the descriptor byte by byte: nothing after it is taken from the pipe, and
    no buffered reader (whose lock a daemon thread would hold at the interpreter's exit) is involved."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(STDIN, 1)
        if not byte:
            break
        line += byte
    return bytes(line)


def _stop_when_supervisor_gone() -> None:
    """Blocks until standard input ends, then stops the reactor (a clean stop, as SIGTERM)."""
    from twisted.internet import reactor as _reactor
    from twisted.internet.error import ReactorNotRunning

    reactor: Any = _reactor
    with contextlib.suppress(OSError):
        while os.read(STDIN, 4096):
            pass

    def stop() -> None:
        with contextlib.suppress(ReactorNotRunning):
            reactor.stop()

    reactor.callFromThread(stop)


if __name__ == "__main__":
    sys.exit(main())
