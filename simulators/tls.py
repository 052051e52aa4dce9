"""Simulated terminals over TLS: each presents its own certificate (DIR/<TERMINAL_ID>.crt and .key, as
`gateway pki issue-terminal` writes them) and trusts the operator's CA for the gateway's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer


@dataclass
class TlsFiles:
    ca: Path        # the CA the gateway's certificate must come from
    cert_dir: Path  # <TERMINAL_ID>.crt and .key for every terminal id the run signs in as
    # One client configuration per terminal id: its context (and certificate) is made once per run.
    _options: dict[str, Any] = field(default_factory=dict, repr=False)

    def certificate(self, terminal_id: str) -> Path:
        return self.cert_dir / f"{terminal_id}.crt"

    def key(self, terminal_id: str) -> Path:
        return self.cert_dir / f"{terminal_id}.key"

    def options_for(self, host: str, terminal_id: str) -> Any:
        options = self._options.get(terminal_id)
        if options is None:
            try:
                authority = Certificate.loadPEM(self.ca.read_bytes())  # type: ignore[no-untyped-call]
                own = PrivateCertificate.loadPEM(  # type: ignore[no-untyped-call]
                    self.certificate(terminal_id).read_bytes() + self.key(terminal_id).read_bytes())
            except OSError as exc:
                raise RuntimeError(f"{terminal_id}: no TLS certificate in {self.cert_dir} ({exc.strerror}): "
                                   "`gateway pki issue-terminal` makes one") from exc
            options = optionsForClientTLS(host, trustRoot=authority, clientCertificate=own)
            self._options[terminal_id] = options
        return options


class _UnbufferedTlsFactory(TLSMemoryBIOFactory):
    # TLSMemoryBIOProtocol itself, not Twisted's default BufferingTLSTransport, which holds every write back to the
    # reactor's next turn (a timer per write) to join small writes: a simulated terminal writes one frame per
    # turn, so the timer is pure cost, and a load generator's own cost is what it must not add to the figures.
    protocol = TLSMemoryBIOProtocol


@implementer(IStreamClientEndpoint)
class _TlsClientEndpoint:
    """What `twisted.internet.endpoints.wrapClientTLS` makes, over the unbuffered TLS transport."""

    def __init__(self, options: Any, endpoint: Any) -> None:
        self._options = options
        self._endpoint = endpoint

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        connected: Deferred[Any] = self._endpoint.connect(
            _UnbufferedTlsFactory(self._options, True, factory))  # type: ignore[no-untyped-call]
        return connected.addCallback(lambda tls: tls.wrappedProtocol)


def client_endpoint(reactor: Any, host: str, port: int, terminal_id: str, tls: TlsFiles | None) -> Any:
    """Where terminal `terminal_id` connects: plain TCP, or TLS with its certificate."""
    endpoint: Any = TCP4ClientEndpoint(reactor, host, port, timeout=30)  # zope interfaces: typed loosely
    if tls is None:
        return endpoint
    return _TlsClientEndpoint(tls.options_for(host, terminal_id), endpoint)
