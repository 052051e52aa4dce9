"""The gateway's listeners: plain TCP (`server.listen`) and TLS (`tls.listen`), parsed before the reactor runs,
and plain TCP kept to loopback unless the operator says otherwise (`server.allow_plaintext_on_network`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import UNIXAddress
from twisted.internet.endpoints import serverFromString

from gateway.config import GatewayConfig


class ListenerError(Exception):
    """A listener that cannot start; the message names the endpoint and why."""


@dataclass(frozen=True)
class Listener:
    description: str
    endpoint: Any  # an IStreamServerEndpoint (a zope interface: typed loosely)
    tls: bool

    @property
    def label(self) -> str:
        return "TLS" if self.tls else "plain TCP"


def parse_listeners(reactor: Any, config: GatewayConfig) -> list[Listener]:
    """Every endpoint of the configuration, or ListenerError for the first that Twisted cannot make."""
    listeners = []
    for key, descriptions, tls in (("server.listen", config.server.listen, False),
                                   ("tls.listen", config.tls.listen, True)):
        for description in descriptions:
            try:
                endpoint = serverFromString(reactor, description)  # type: ignore[no-untyped-call]
            except Exception as exc:  # an endpoint plugin may raise anything: a typo, a missing module
                raise ListenerError(f"{key}: cannot use the endpoint {description!r}: "
                                    f"{exc.__class__.__name__}: {exc}") from exc
            listeners.append(Listener(description, endpoint, tls))
    return listeners


def plaintext_exposure(listener: Listener, port: Any, config: GatewayConfig) -> str | None:
    """Why a listening port must be closed again: plain TCP reachable from the network when the operator did not
    allow it. None when it may stay."""
    if listener.tls or config.server.allow_plaintext_on_network:
        return None
    address = port.getHost()
    if isinstance(address, UNIXAddress):
        return None
    host = getattr(address, "host", "")
    try:
        if ipaddress.ip_address(host.split("%", 1)[0]).is_loopback:
            return None
    except ValueError:
        pass
    return (f"refusing plain TCP on {format_address(port)} ({listener.description!r}): it is not loopback, and "
            "credentials and PINs would cross the network in clear. Serve terminals on tls.listen, or set "
            "server.allow_plaintext_on_network = true where the network is protected otherwise")


def format_address(port: Any) -> str:
    address = port.getHost()
    host = getattr(address, "host", None)
    if host is None:
        return str(getattr(address, "name", None) or address)
    return f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"
