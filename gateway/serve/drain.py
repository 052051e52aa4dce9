"""A clean stop (SIGTERM, Ctrl+C): every connection is closed once its requests in flight are answered; a request
waiting on a terminal's reader is answered GATEWAY_SHUTTING_DOWN at once (the terminal's answer would no longer be
read, and the clerk must not be sent to check a reader that is fine); a request at the ledger's writer is answered
before its connection is cut. One log line says what there is to do, one what was done."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from gateway.serve.adapter import Drain, TerminalFactory

if TYPE_CHECKING:
    from gateway.ledger.writer import LedgerWriter

log = Logger(namespace="gateway.serve.drain")


def drain(factory: TerminalFactory, writer: LedgerWriter | None) -> Deferred[Drain]:
    """Close every connection of `factory` (TerminalFactory.close_all), the requests at `writer` answered first."""
    at_writer = writer.in_hand if writer is not None else 0
    answered_before = writer.answered if writer is not None else 0
    closing = factory.close_all(writer.idle if writer is not None else None)
    log.info("gateway stopping: no new connections; {connections} connections open, {relayed} requests waiting on a "
             "terminal's reader answered STATUS_CODE_GATEWAY_SHUTTING_DOWN, {at_writer} at the ledger's writer; "
             "finishing the requests in flight (up to {grace_s} s)", connections=closing.connections,
             relayed=closing.relayed, at_writer=at_writer, grace_s=factory.config.shutdown_grace_s)

    def drained(done: Drain) -> Drain:
        finished = (writer.answered - answered_before) if writer is not None else 0
        log.info("gateway drained: {closed} connections closed ({cut} cut after the grace period), {relayed} "
                 "requests waiting on a terminal's reader answered STATUS_CODE_GATEWAY_SHUTTING_DOWN, "
                 "{ledger_finished} ledger intents finished and answered", closed=done.connections, cut=done.cut,
                 relayed=done.relayed, ledger_finished=finished)
        return done

    return closing.done.addCallback(drained)
