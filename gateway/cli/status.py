"""`gateway status`: a running gateway's readiness and its signed-in terminals, from its /status page."""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from gateway.cli.support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Commands, add_config
from gateway.config import GatewayConfig

# Longer than the gateway's own readiness checks take at most (metrics.check_timeout_s is at most 60).
_TIMEOUT_S = 70.0


def add_commands(commands: Commands) -> None:
    status = commands.add_parser(
        "status", help="a running gateway's readiness and connected terminals",
        description="Ask a running gateway (its /status page on metrics.listen) whether it is ready, what each "
                    "readiness check found, and which terminals are signed in, by institution. Exit status 0 when "
                    "it is ready or degraded (still serving), 1 when it is not ready or does not answer.")
    add_config(status)
    status.add_argument("--url", metavar="URL",
                        help="the gateway's operator listener, e.g. http://127.0.0.1:9501 (default: from "
                             "metrics.listen of the configuration)")
    status.add_argument("--processes", type=int, metavar="N",
                        help="a gateway of N processes (gateway serve --processes N): ask each worker K at the "
                             "URL's port + K (default: server.processes of the configuration)")
    status.add_argument("--json", action="store_true", help="print the page's JSON as it is")
    status.set_defaults(run=_status)


def _status(args: argparse.Namespace, config: GatewayConfig) -> int:
    base = args.url or url_of_endpoint(config.metrics.listen)
    if base is None:
        print(f"gateway: cannot tell the URL of metrics.listen {config.metrics.listen!r}: give --url",
              file=sys.stderr)
        return EXIT_USAGE
    processes = args.processes if args.processes is not None else config.server.processes
    if processes < 1:
        print("gateway: --processes must be positive", file=sys.stderr)
        return EXIT_USAGE
    try:
        urls = [base] if processes == 1 else worker_urls(base, processes)
    except ValueError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    pages = [_page(url) for url in urls]
    if args.json and pages != [None]:
        shown: Any = pages[0] if processes == 1 else {"workers": pages}
        print(json.dumps(shown, ensure_ascii=False, indent=2))
    else:
        for index, (url, page) in enumerate(zip(urls, pages, strict=True)):
            if page is not None:
                print(render(url if processes == 1 else f"{url} (worker {index})", page), end="")
    # A gateway of several processes is as ready as its least ready worker.
    ready = all(page is not None and page.get("status") in ("ready", "degraded") for page in pages)
    return EXIT_OK if ready else EXIT_FAILED


def worker_urls(base: str, processes: int) -> list[str]:
    """The operator listener of each worker of a gateway of `processes`: worker K at `base`'s port + K."""
    parsed = urllib.parse.urlsplit(base)
    if parsed.port is None or parsed.hostname is None:
        raise ValueError(f"{base!r} names no port: give --url http://HOST:PORT")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return [urllib.parse.urlunsplit((parsed.scheme, f"{host}:{parsed.port + index}", parsed.path, "", ""))
            for index in range(processes)]


def _page(base: str) -> dict[str, Any] | None:
    """The /status page under `base`, or None (said on stderr) when there is none to read."""
    url = base.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as answer:
            page = answer.read()
    except urllib.error.HTTPError as exc:
        page = exc.read()  # 503: not ready, and the page says why
        if exc.code != 503:
            print(f"gateway: {url} answered {exc.code} {exc.reason}", file=sys.stderr)
            return None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"gateway: no answer from {url}: {reason} (is the gateway running, with metrics.listen?)",
              file=sys.stderr)
        return None
    try:
        status: dict[str, Any] = json.loads(page)
    except ValueError:
        print(f"gateway: {url} did not answer JSON: is it a gateway's operator listener?", file=sys.stderr)
        return None
    return status


def render(base: str, status: dict[str, Any]) -> str:
    lines = [f"gateway at {base}: {status.get('status', 'unknown')}"]
    checks: dict[str, dict[str, str]] = status.get("checks", {})
    width = max((len(name) for name in checks), default=0)
    for name, check in checks.items():
        lines.append(f"  {name:<{width}}  {check.get('status', '?'):<8}  {check.get('detail', '')}")
    connections = status.get("connections", {})
    lines.append(f"connections: {connections.get('open', 0)} open, {connections.get('signed_in', 0)} signed in")
    for institution in status.get("institutions", []):
        lines.append(f"{institution['code']} {institution['name']}: {institution['sessions']} session(s)")
        lines.extend(f"  {terminal['terminal_id']}  {terminal['sessions']}" for terminal in institution["terminals"])
    return "\n".join(lines) + "\n"


def url_of_endpoint(description: str) -> str | None:
    """http://HOST:PORT of a tcp: server endpoint string (an interface of all addresses asked on loopback), or None
    for one that names no fixed TCP port (unix:, tcp:0, a plugin's)."""
    parts = [part.replace("\\:", ":") for part in re.split(r"(?<!\\):", description.strip())]
    if len(parts) < 2 or parts[0].lower() not in ("tcp", "tcp6"):
        return None
    options = dict(part.split("=", 1) for part in parts[1:] if "=" in part)
    positional = [part for part in parts[1:] if "=" not in part]
    port = options.get("port", positional[0] if positional else "")
    if not port.isdigit() or int(port) == 0:
        return None
    host = options.get("interface", "")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
