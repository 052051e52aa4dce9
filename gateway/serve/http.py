"""The operator's HTTP listener (`metrics.listen`), on the gateway's own reactor (twisted.web):

- `/metrics`: Prometheus's text format (or OpenMetrics, when the scraper asks for it), rendered by
  prometheus_client from the gateway's registry;
- `/healthz`: the reactor answers (200, JSON);
- `/readyz`: every readiness check (gateway.serve.health) with what it found; 200 when ready or degraded, 503 not;
- `/status`: the same, the connection counts and the signed-in terminals by institution, for `gateway status`.
  It names terminals, so it answers loopback clients only (403 otherwise), even when the listener is opened to
  the network for a Prometheus server elsewhere.

Nothing here is a secret (no credential, PIN, card or ID number); requests are not logged (a scrape every few
seconds would drown the log).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

from prometheus_client.exposition import choose_encoder
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gateway import __version__
from gateway.ops.metrics import GatewayMetrics
from gateway.serve.health import HealthChecks, Readiness

log = Logger(namespace="gateway.serve.http")

JSON = b"application/json; charset=utf-8"
# twisted.web's requests and resources are typed loosely (zope interfaces, untyped methods): `Any` here on purpose.
# The status page beside readiness: connections and terminals by institution (gateway.serve.app builds it).
StatusFacts = Callable[[], dict[str, Any]]


def _json(request: Any, body: dict[str, Any], code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON)
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, ensure_ascii=False, indent=2).encode() + b"\n"


class MetricsPage(Resource):
    isLeaf = True  # noqa: N815 (twisted.web's name)

    def __init__(self, metrics: GatewayMetrics) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._metrics = metrics

    def render_GET(self, request: Any) -> bytes:
        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        request.setHeader(b"content-type", content_type.encode())
        return encoder(self._metrics.registry)


class HealthPage(Resource):
    isLeaf = True  # noqa: N815 (twisted.web's name)

    def render_GET(self, request: Any) -> bytes:
        return _json(request, {"status": "ok", "version": __version__})


class ReadyPage(Resource):
    isLeaf = True  # noqa: N815 (twisted.web's name)

    def __init__(self, checks: HealthChecks, status: StatusFacts | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._checks = checks
        self._status = status

    def render_GET(self, request: Any) -> int:
        if self._status is not None and not _from_loopback(request):
            request.write(_json(request, {"error": "/status answers loopback clients only"}, 403))
            request.finish()
            return NOT_DONE_YET
        self._checks.readiness().addCallbacks(self._answer, self._failed, callbackArgs=(request,),
                                              errbackArgs=(request,))
        return NOT_DONE_YET

    def _answer(self, readiness: Readiness, request: Any) -> None:
        body = readiness.as_json()
        if self._status is not None:
            body.update(self._status())
        self._write(request, _json(request, body, 200 if readiness.serving else 503))

    def _failed(self, failure: Failure, request: Any) -> None:
        log.failure("readiness check failed", failure)
        self._write(request, _json(request, {"status": "not ready", "error": "the checks themselves failed"}, 500))

    @staticmethod
    def _write(request: Any, body: bytes) -> None:
        if not request.finished and request.channel is not None:  # the scraper may have hung up meanwhile
            request.write(body)
            request.finish()


def _from_loopback(request: Any) -> bool:
    host = getattr(request.getClientAddress(), "host", None)
    if host is None:
        return True  # a unix socket: only this host's users reach it
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class OperatorSite(Site):
    noisy = False

    def log(self, request: Any) -> None:
        """No access log: see the module's docstring."""


def operator_site(metrics: GatewayMetrics, checks: HealthChecks, status: StatusFacts) -> OperatorSite:
    root: Any = Resource()  # type: ignore[no-untyped-call]
    pages: dict[bytes, Any] = {b"metrics": MetricsPage(metrics), b"healthz": HealthPage(),  # type: ignore[no-untyped-call]
                               b"readyz": ReadyPage(checks), b"status": ReadyPage(checks, status)}
    for path, page in pages.items():
        root.putChild(path, page)
    return OperatorSite(root)  # type: ignore[no-untyped-call]
