"""The gateway's listeners: plain TCP (`server.listen`) and TLS (`tls.listen`), parsed before the reactor runs,
and plain TCP kept to loopback unless the operator says otherwise (`server.allow_plaintext_on_network`).

A worker of `gateway serve --processes N` (gateway.serve.processes) listens on each address through a socket of
its own with SO_REUSEPORT (`ReusePortEndpoint`): the kernel spreads the incoming connections over the N sockets."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from zope.interface import implementer

from gateway.config import GatewayConfig

# Twisted's own defaults of a tcp: endpoint (twisted.internet.endpoints.TCP4ServerEndpoint).
_TWISTED_BACKLOG = 50
_ENDPOINT_SEPARATOR = re.compile(r"(?<!\\):")


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


@dataclass(frozen=True)
class TcpAddress:
    """A tcp: or tcp6: server endpoint's address, as Twisted reads the string."""

    host: str       # "" for every IPv4 address, as Twisted has it
    port: int
    backlog: int
    ipv6: bool

    def description(self, port: int | None = None) -> str:
        """The endpoint string again, at `port` when given (colons of an IPv6 address escaped)."""
        host = self.host.replace(":", "\\:")
        return (f"{'tcp6' if self.ipv6 else 'tcp'}:{self.port if port is None else port}:interface={host}"
                f":backlog={self.backlog}")

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if self.ipv6 else socket.AF_INET


def tcp_address(description: str) -> TcpAddress | None:
    """The address of a tcp:/tcp6: endpoint string (port, interface, backlog as positional or key=value), or None
    for any other endpoint or a string Twisted would not take."""
    parts = [part.replace("\\:", ":") for part in _ENDPOINT_SEPARATOR.split(description.strip())]
    if len(parts) < 2 or parts[0].lower() not in ("tcp", "tcp6"):
        return None
    ipv6 = parts[0].lower() == "tcp6"
    options = dict(part.split("=", 1) for part in parts[1:] if "=" in part)
    positional = [part for part in parts[1:] if "=" not in part]
    names = ("port", "interface", "backlog")  # positional order of Twisted's parser
    if len(positional) > len(names) or set(options) - set(names):
        return None
    values = {**dict(zip(names, positional, strict=False)), **options}
    port, backlog = values.get("port", ""), values.get("backlog", str(_TWISTED_BACKLOG))
    if not port.isdigit() or int(port) > 65_535 or not backlog.isdigit():
        return None
    return TcpAddress(values.get("interface", "::" if ipv6 else ""), int(port), int(backlog), ipv6)


def reuse_port_socket(address: TcpAddress, port: int | None = None) -> socket.socket:
    """A socket bound to `address` (at `port` when given) with SO_REUSEPORT, not yet listening: what a worker
    listens on, and what the supervisor holds to fix port 0 to one port for all its workers."""
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's own listening ports
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address.host, address.port if port is None else port))
    except OSError:
        sock.close()
        raise
    return sock


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """A tcp: endpoint whose socket has SO_REUSEPORT: each of N processes binds the same address, and the kernel
    hands every new connection to one of their listening sockets (by a hash of its addresses and ports)."""

    def __init__(self, reactor: Any, address: TcpAddress) -> None:
        self._reactor = reactor
        self.address = address

    def listen(self, factory: Any) -> Deferred[Any]:
        try:
            sock = reuse_port_socket(self.address)
        except OSError as exc:
            return fail(CannotListenError(self.address.host, self.address.port, exc))  # type: ignore[no-untyped-call]
        try:
            sock.listen(self.address.backlog)
            sock.setblocking(False)
            # The reactor listens on a duplicate of the descriptor; this one is closed below.
            return succeed(self._reactor.adoptStreamPort(sock.fileno(), self.address.family, factory))
        except OSError as exc:
            return fail(CannotListenError(self.address.host, self.address.port, exc))  # type: ignore[no-untyped-call]
        finally:
            sock.close()


def parse_listeners(reactor: Any, config: GatewayConfig, *, reuse_port: bool = False) -> list[Listener]:
    """Every endpoint of the configuration, or ListenerError for the first that Twisted cannot make. `reuse_port`
    (a worker of several processes): each tcp: endpoint through a socket of its own with SO_REUSEPORT."""
    listeners = []
    for key, descriptions, tls in (("server.listen", config.server.listen, False),
                                   ("tls.listen", config.tls.listen, True)):
        for description in descriptions:
            if reuse_port:
                address = tcp_address(description)
                if address is None:
                    raise ListenerError(f"{key}: {description!r}: several processes (server.processes) share "
                                        "tcp: and tcp6: endpoints only")
                listeners.append(Listener(description, ReusePortEndpoint(reactor, address), tls))
                continue
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
