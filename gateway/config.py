"""The gateway's configuration: a TOML file whose every key has a default.

`docs/configuration.md` documents each key; `gateway.example.toml` lists them all with their defaults.
Command-line options override the file.

Each default is defined once. A limit enforced below this layer keeps its default beside the code that
enforces it (the session's frame size, the ledger writer's batch, a PC/SC reader's timeouts, the SQLite busy
timeout, the demo population): the keys here take theirs from it, and the sections build those limit objects
(`ServerConfig.session_limits`, `LedgerConfig.writer_limits`). A limit of the request path, which lies above
this layer (connections, sessions per terminal, the registry cache), has its default here, and the request
path reads the section itself.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gateway.db.engine import DEFAULT_BUSY_TIMEOUT_MS, DEFAULT_DB_URL, DEFAULT_SQLITE_SYNCHRONOUS
from gateway.demo.population import DEFAULT_PERSONS, DEFAULT_SEED
from gateway.ledger.writer import WriterLimits
from gateway.ops.logs import LEVELS, LOG_FORMATS
from gateway.pki.layout import CA_CERTIFICATE, CRL, SERVER_CERTIFICATE, SERVER_KEY, default_file
from gateway.protocol.send_time import DEFAULT_SEND_TIME_WINDOW_S
from gateway.protocol.session import SessionLimits
from gateway.protocol.throttle import ThrottleLimits
from gateway.reader.pcsc import DEFAULT_CLOSE_TIMEOUT_S, DEFAULT_TRANSMIT_TIMEOUT_S
from gateway.settlement.policy import DEFAULT_POLICY_WARNING_DAYS, MAX_POLICY_WARNING_DAYS

# A deep accept queue: after a restart thousands of terminals reconnect at once.
DEFAULT_LISTEN = "tcp:9500:interface=127.0.0.1:backlog=1024"
# The operator's HTTP port (/metrics, /healthz, /readyz, /status): loopback unless told otherwise.
DEFAULT_METRICS_LISTEN = "tcp:9501:interface=127.0.0.1"
# Reactor processes of one gateway (server.processes, `gateway serve --processes`): more than the host has cores
# only adds contention for the ledger's write lock; the bound keeps a typo from starting hundreds.
MAX_PROCESSES = 64
# The limit objects with their own defaults, which the keys below take as theirs.
_SESSION = SessionLimits()
_THROTTLE = ThrottleLimits()
_WRITER = WriterLimits()


class ConfigError(ValueError):
    """The configuration file is unreadable or holds a bad key or value."""


@dataclass(frozen=True)
class ServerConfig:
    # Plain TCP listeners (Twisted server endpoint strings); several may be given to listen on several addresses.
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    max_frame_bytes: int = _SESSION.max_frame_bytes
    idle_timeout_s: float = _SESSION.idle_timeout_s
    max_in_flight_per_connection: int = _SESSION.max_in_flight
    max_connections: int = 20_000
    max_sessions_per_terminal: int = 4
    # After a final error frame, how long to drain the peer's bytes before closing for good.
    close_linger_s: float = 2.0
    # How long a shutdown waits for requests in flight before closing connections.
    shutdown_grace_s: float = 10.0
    # Plain TCP carries credentials and PINs in clear: `listen` is refused off loopback unless this is true.
    allow_plaintext_on_network: bool = False
    # A connection not signed in this long after it opened is closed (STATUS_CODE_SIGN_IN_TIMEOUT).
    sign_in_timeout_s: float = _SESSION.sign_in_timeout_s
    # Failed SignIns after which the connection is closed.
    sign_in_failures_per_connection: int = _SESSION.sign_in_failures_per_connection
    # Failed SignIns per terminal id, and per address, after which it is locked for sign_in_lock_s.
    sign_in_lock_after_failures: int = _THROTTLE.lock_after_failures
    sign_in_peer_lock_after_failures: int = _THROTTLE.peer_lock_after_failures
    sign_in_lock_s: float = _THROTTLE.lock_s
    # A failed SignIn is answered after sign_in_delay_base_s, doubling with each failure in a row, at most
    # sign_in_delay_max_s.
    sign_in_delay_base_s: float = _THROTTLE.delay_base_s
    sign_in_delay_max_s: float = _THROTTLE.delay_max_s
    # Terminal ids and addresses whose failed SignIns are remembered at once.
    sign_in_tracked_keys: int = _THROTTLE.tracked_keys
    # A new Settle, Revoke or Reverse whose send_time is further from the gateway's clock is refused.
    send_time_window_s: float = DEFAULT_SEND_TIME_WINDOW_S
    # Frames read from one connection before the other connections get a turn.
    frames_per_slice: int = _SESSION.frames_per_slice
    # Reactor processes sharing each listening address (SO_REUSEPORT) and the ledger (gateway.serve.processes);
    # 1: the gateway is this one process.
    processes: int = 1
    # Once listening, what is alive is set aside from the garbage collector's full passes (gateway.ops.collector).
    freeze_startup_objects: bool = True

    def session_limits(self) -> SessionLimits:
        """What each connection's session enforces."""
        return SessionLimits(max_frame_bytes=self.max_frame_bytes, max_in_flight=self.max_in_flight_per_connection,
                             idle_timeout_s=self.idle_timeout_s, sign_in_timeout_s=self.sign_in_timeout_s,
                             sign_in_failures_per_connection=self.sign_in_failures_per_connection,
                             frames_per_slice=self.frames_per_slice)

    def throttle_limits(self) -> ThrottleLimits:
        """What limits failed sign-ins, per terminal id and per address, across the gateway."""
        return ThrottleLimits(lock_after_failures=self.sign_in_lock_after_failures,
                              peer_lock_after_failures=self.sign_in_peer_lock_after_failures,
                              lock_s=self.sign_in_lock_s, delay_base_s=self.sign_in_delay_base_s,
                              delay_max_s=self.sign_in_delay_max_s, tracked_keys=self.sign_in_tracked_keys)


@dataclass(frozen=True)
class TlsConfig:
    # Twisted server endpoint strings (e.g. "tcp:9543:interface=0.0.0.0") served with TLS and terminal
    # certificates; empty: no TLS listener.
    listen: tuple[str, ...] = ()
    # The gateway's certificate (PEM, intermediates after it) and its private key.
    certificate: str = default_file(SERVER_CERTIFICATE)
    private_key: str = default_file(SERVER_KEY)
    # The operator's terminal CA: every terminal's certificate must be issued by it.
    client_ca: str = default_file(CA_CERTIFICATE)
    # The CA's revocation list, reloaded when the file changes; "" serves without revocation.
    crl: str = default_file(CRL)


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = DEFAULT_DB_URL
    # SQLite: how long a connection waits for a lock before failing.
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
    # Threads that run blocking database calls off the reactor.
    worker_threads: int = 4
    # SQLite only (ignored elsewhere): the durability the ledger relies on.
    sqlite_synchronous: str = DEFAULT_SQLITE_SYNCHRONOUS


@dataclass(frozen=True)
class ReaderConfig:
    # How long the terminal's own reader may take to answer one ApduScript.
    relay_timeout_s: float = 5.0
    # How long a PC/SC reader on the gateway host may take for one script.
    pcsc_timeout_s: float = DEFAULT_TRANSMIT_TIMEOUT_S
    # How long closing a PC/SC reader (at shutdown) waits for a call hung in its driver.
    pcsc_close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S
    # The demo population that `virtual:CARD` readers take their cards from.
    virtual_persons: int = DEFAULT_PERSONS
    virtual_seed: int = DEFAULT_SEED
    # Terminal id -> reader ("terminal", "pcsc:NAME", "virtual[:CARD]"), overriding the registry.
    terminals: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LedgerConfig:
    # Settlements written in one database transaction (group commit).
    max_batch: int = _WRITER.max_batch
    # Settlements waiting for the writer; beyond it requests are answered "temporarily unavailable".
    max_queue: int = _WRITER.max_queue
    # A batch that met a deadlock or a concurrent write of the same key is run again this often.
    retry_attempts: int = _WRITER.retry_attempts
    # Account codes the writer remembers as existing, so that it neither looks them up nor creates them again.
    known_accounts: int = _WRITER.known_accounts
    # Holders whose balances, year-to-date totals and card state the writer keeps from its last commit (SQLite).
    known_holders: int = _WRITER.known_holders
    # A directory of policy files (YEAR.toml); empty: the built-in, illustrative ones.
    policy_dir: str = ""
    # Days ahead of today the policies must cover; fewer, and the gateway warns (at start, then daily).
    policy_warning_days: int = DEFAULT_POLICY_WARNING_DAYS

    def writer_limits(self) -> WriterLimits:
        """What the ledger's writer enforces."""
        return WriterLimits(max_batch=self.max_batch, max_queue=self.max_queue, retry_attempts=self.retry_attempts,
                            known_accounts=self.known_accounts, known_holders=self.known_holders)


@dataclass(frozen=True)
class RegistryConfig:
    """Also the registry cache's limits (gateway.serve.registry_cache)."""

    # Cards whose registry facts the gateway holds in memory; the oldest is dropped beyond it.
    cache_entries: int = 200_000
    # How often the registry's version is read: a change made elsewhere (an import, an agency command, another
    # gateway) reaches requests within this many seconds.
    refresh_s: float = 0.2


@dataclass(frozen=True)
class MetricsConfig:
    """The operator's HTTP listener (gateway.serve.http) and the readiness checks behind /readyz."""

    # A Twisted server endpoint string; "": no HTTP listener (no metrics, no health checks).
    listen: str = DEFAULT_METRICS_LISTEN
    # The ledger's writer counts as stuck when one batch has been in hand longer than this.
    writer_stale_s: float = 10.0
    # How long /readyz waits for the database to answer before that check fails.
    check_timeout_s: float = 2.0


@dataclass(frozen=True)
class LogConfig:
    format: str = "text"  # "text" or "json"
    level: str = "info"   # "debug", "info", "warn", "error"


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)


# Each section's name and type, as GatewayConfig declares them.
_SECTIONS: dict[str, type[Any]] = {f.name: f.default_factory for f in fields(GatewayConfig)}  # type: ignore[misc]
_LOG_LEVELS = tuple(LEVELS)
_SQLITE_SYNCHRONOUS = ("FULL", "EXTRA")


def config_to_mapping(config: GatewayConfig) -> dict[str, Any]:
    """`config` as the TOML file's tables would hold it: config_from_mapping(config_to_mapping(c)) == c. How a
    supervisor hands its resolved configuration to its workers (gateway.serve.processes)."""
    mapping: dict[str, Any] = {}
    for section in fields(GatewayConfig):
        values: dict[str, Any] = {}
        for key in fields(_SECTIONS[section.name]):
            value = getattr(getattr(config, section.name), key.name)
            if section.name == "reader" and key.name == "terminals":
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            values[key.name] = value
        mapping[section.name] = values
    return mapping


def load_config(path: Path | None) -> GatewayConfig:
    """Read `path` (or return the defaults when it is None) and validate every value."""
    if path is None:
        return GatewayConfig()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return config_from_mapping(raw, source=str(path))


def config_from_mapping(raw: dict[str, Any], source: str = "config") -> GatewayConfig:
    sections: dict[str, Any] = {}
    for section_name, value in raw.items():
        section_type = _SECTIONS.get(section_name)
        if section_type is None:
            raise ConfigError(f"{source}: unknown section [{section_name}]; known: {', '.join(_SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{section_name}] must be a table")
        sections[section_name] = _build_section(section_type, section_name, value, source)
    config = GatewayConfig(**sections)
    validate_config(config, source)
    return config


def _build_section(section_type: type[Any], section_name: str, values: dict[str, Any], source: str) -> Any:
    defaults = section_type()
    known = {f.name: f for f in fields(section_type)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key {section_name}.{key}; known: {', '.join(sorted(known))}"
            )
        default = getattr(defaults, key)
        kwargs[key] = _coerce(value, default, f"{section_name}.{key}", source)
    return replace(defaults, **kwargs)


def _coerce(value: Any, default: Any, key: str, source: str) -> Any:
    if key == "reader.terminals":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f'{source}: [reader.terminals] maps terminal ids to readers, e.g. "T1" = "terminal"')
        return tuple(sorted(value.items()))
    if isinstance(default, tuple):
        if isinstance(value, str):
            return (value,)
        # Either listen list may be empty when the other is not (validate_config checks).
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{source}: {key} must be a string or a non-empty list of strings")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be a whole number")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {key} must be a number")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {key} must be a string")
    return value


def validate_config(config: GatewayConfig, source: str = "config") -> None:
    server = config.server
    _positive(source, "server.max_frame_bytes", server.max_frame_bytes, upper=16 * 1024 * 1024)
    if server.max_frame_bytes < 64:
        raise ConfigError(f"{source}: server.max_frame_bytes must be at least 64")
    if server.idle_timeout_s < 1:
        # SignInResult reports it in whole seconds.
        raise ConfigError(f"{source}: server.idle_timeout_s must be at least 1 (got {server.idle_timeout_s})")
    _positive(source, "server.max_in_flight_per_connection", server.max_in_flight_per_connection)
    _positive(source, "server.max_connections", server.max_connections)
    _positive(source, "server.max_sessions_per_terminal", server.max_sessions_per_terminal)
    _positive(source, "server.close_linger_s", server.close_linger_s, upper=60)
    _positive(source, "server.sign_in_timeout_s", server.sign_in_timeout_s, upper=3600)
    _positive(source, "server.sign_in_failures_per_connection", server.sign_in_failures_per_connection, upper=100)
    _positive(source, "server.sign_in_lock_after_failures", server.sign_in_lock_after_failures, upper=1000)
    _positive(source, "server.sign_in_peer_lock_after_failures", server.sign_in_peer_lock_after_failures,
              upper=100_000)
    _positive(source, "server.sign_in_lock_s", server.sign_in_lock_s, upper=86_400)
    _positive(source, "server.sign_in_delay_max_s", server.sign_in_delay_max_s, upper=60)
    if not 0 <= server.sign_in_delay_base_s <= server.sign_in_delay_max_s:
        raise ConfigError(f"{source}: server.sign_in_delay_base_s must be 0 to server.sign_in_delay_max_s "
                          f"({server.sign_in_delay_max_s}) (got {server.sign_in_delay_base_s})")
    if server.sign_in_delay_max_s >= server.sign_in_timeout_s:
        # A refusal held longer than the sign-in timeout would never be read: the connection closes first.
        raise ConfigError(f"{source}: server.sign_in_delay_max_s must be less than server.sign_in_timeout_s")
    _positive(source, "server.sign_in_tracked_keys", server.sign_in_tracked_keys, upper=10_000_000)
    _positive(source, "server.send_time_window_s", server.send_time_window_s, upper=86_400)
    _positive(source, "server.frames_per_slice", server.frames_per_slice, upper=100_000)
    _positive(source, "server.processes", server.processes, upper=MAX_PROCESSES)
    if server.shutdown_grace_s < 0:
        raise ConfigError(f"{source}: server.shutdown_grace_s must not be negative")
    if not server.listen and not config.tls.listen:
        raise ConfigError(f"{source}: server.listen must be a string or a non-empty list of strings when "
                          "tls.listen is empty: the gateway needs at least one endpoint")
    for key, endpoints in (("server.listen", server.listen), ("tls.listen", config.tls.listen)):
        for endpoint in endpoints:
            if endpoint.split(":", 1)[0].strip().lower() == "ssl":
                # Twisted's own ssl: endpoint would skip the terminal certificates and the CRL.
                raise ConfigError(f"{source}: {key}: {endpoint!r}: give TLS listeners as plain endpoints in "
                                  'tls.listen (e.g. "tcp:9543:interface=0.0.0.0"); the gateway adds TLS with '
                                  "terminal certificates")
    _positive(source, "database.busy_timeout_ms", config.database.busy_timeout_ms)
    _positive(source, "database.worker_threads", config.database.worker_threads, upper=64)
    if config.database.sqlite_synchronous not in _SQLITE_SYNCHRONOUS:
        raise ConfigError(f"{source}: database.sqlite_synchronous must be one of {_SQLITE_SYNCHRONOUS}")
    reader = config.reader
    _positive(source, "reader.relay_timeout_s", reader.relay_timeout_s, upper=120)
    _positive(source, "reader.pcsc_timeout_s", reader.pcsc_timeout_s, upper=120)
    _positive(source, "reader.pcsc_close_timeout_s", reader.pcsc_close_timeout_s, upper=120)
    _positive(source, "reader.virtual_persons", reader.virtual_persons, upper=10_000_000)
    from gateway.reader.spec import ReaderSpec

    for terminal_id, spec in reader.terminals:
        try:
            ReaderSpec.parse(spec)
        except ValueError as exc:
            raise ConfigError(f"{source}: reader.terminals.{terminal_id}: {exc}") from exc
    _positive(source, "ledger.max_batch", config.ledger.max_batch, upper=10_000)
    _positive(source, "ledger.max_queue", config.ledger.max_queue, upper=10_000_000)
    _positive(source, "ledger.retry_attempts", config.ledger.retry_attempts, upper=100)
    _positive(source, "ledger.known_accounts", config.ledger.known_accounts, upper=100_000_000)
    _positive(source, "ledger.policy_warning_days", config.ledger.policy_warning_days,
              upper=MAX_POLICY_WARNING_DAYS)
    _positive(source, "ledger.known_holders", config.ledger.known_holders, upper=100_000_000)
    _positive(source, "registry.cache_entries", config.registry.cache_entries, upper=100_000_000)
    _positive(source, "registry.refresh_s", config.registry.refresh_s, upper=3600)
    _positive(source, "metrics.writer_stale_s", config.metrics.writer_stale_s, upper=3600)
    _positive(source, "metrics.check_timeout_s", config.metrics.check_timeout_s, upper=60)
    if config.log.format not in LOG_FORMATS:
        raise ConfigError(f"{source}: log.format must be one of {LOG_FORMATS}")
    if config.log.level not in _LOG_LEVELS:
        raise ConfigError(f"{source}: log.level must be one of {_LOG_LEVELS}")


def _positive(source: str, key: str, value: float, upper: float | None = None) -> None:
    if value <= 0:
        raise ConfigError(f"{source}: {key} must be greater than 0 (got {value})")
    if upper is not None and value > upper:
        raise ConfigError(f"{source}: {key} must be at most {upper} (got {value})")
