"""Shared fixtures: databases (SQLite in a temp dir, a fresh PostgreSQL database) and a running gateway."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from gateway.db.engine import make_engine
from gateway.db.migrate import upgrade
from gateway.demo.registry import write_demo_registry
from simulators.virtual_card import VPCD_DEFAULT_PORT

POSTGRES_ADMIN_URL = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _postgres_available() -> str | None:
    """None if the server answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL.replace("+psycopg", ""), connect_timeout=3):
            return None
    except Exception as exc:  # the reason goes into the skip message
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {exc.__class__.__name__}: {exc}"


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    reason = _postgres_available()
    if reason:
        pytest.skip(reason)
    return POSTGRES_ADMIN_URL


@contextlib.contextmanager
def fresh_postgres_database(postgres_admin: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped (connections and all) on leaving."""
    import psycopg

    name = f"gateway_test_{uuid.uuid4().hex[:12]}"
    admin = postgres_admin.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    with fresh_postgres_database(postgres_admin) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs on both databases."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def migrated_engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _demo_engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    upgrade(engine)
    write_demo_registry(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def demo_engine(sqlite_url: str) -> Iterator[Engine]:
    yield from _demo_engine(sqlite_url)


@pytest.fixture
def demo_engine_on_both(db_url: str) -> Iterator[Engine]:
    """The demo registry, on SQLite and on PostgreSQL."""
    yield from _demo_engine(db_url)


# The real PC/SC stack: pcscd with the vsmartcard-vpcd driver ------------------------------------

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
VPCD_READER = "Virtual PCD 00 00"
# The Debian package's port, used only when a system pcscd already offers the reader.
VPCD_SYSTEM_PORT = VPCD_DEFAULT_PORT
# vpcd listens on a port and the next one (two reader slots). The package's port lies inside Linux's
# ephemeral range, where any outgoing connection of the suite may hold it and make vpcd's bind fail
# ("Address already in use"); our own pcscd gets ports below that range, which no client is given.
VPCD_OWN_FIRST_PORT = 29950
VPCD_PORT_ATTEMPTS = 20


@dataclass(frozen=True)
class PcscStack:
    reader: str
    vpcd_port: int


def _vpcd_reader_listed() -> bool:
    from gateway.reader.errors import ReaderUnavailable
    from gateway.reader.pcsc import list_readers

    try:
        return VPCD_READER in list_readers()
    except ReaderUnavailable:
        return False


def _ephemeral_port_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _ports_free(*ports: int) -> bool:
    import socket

    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                return False
    return True


def _vpcd_ports() -> Iterator[int]:
    """Candidate first ports for our vpcd: free (with the next one) and outside the ephemeral range."""
    floor = _ephemeral_port_floor()
    port = min(VPCD_OWN_FIRST_PORT, floor - 2 * VPCD_PORT_ATTEMPTS)
    for _ in range(VPCD_PORT_ATTEMPTS):
        if _ports_free(port, port + 1):
            yield port
        port += 2


def _start_pcscd(config_dir: Path, port: int) -> tuple[object, str]:
    """pcscd in the foreground with only our vpcd reader; (process, "") once it offers it, else (None, why)."""
    import subprocess
    import time

    (config_dir / "vpcd").write_text(
        'FRIENDLYNAME "Virtual PCD"\n'
        f"DEVICENAME   /dev/null:0x{port:04X}\n"
        f"LIBPATH      {VPCD_DRIVER}\n"
        f"CHANNELID    0x{port:04X}\n")
    process = subprocess.Popen(["pcscd", "--foreground", "--config", str(config_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not _vpcd_reader_listed():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=10)
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            return None, f"port {port}: {stderr[-2000:]}"
        time.sleep(0.2)
    return process, ""


@pytest.fixture(scope="session")
def pcsc_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcscStack]:
    """A running pcscd with the vpcd reader; started here (and stopped after) unless one is running."""
    import shutil
    import subprocess

    from gateway.reader.pcsc import pyscard_available

    missing = [name for name, present in (("pcscd", shutil.which("pcscd")), ("vsmartcard-vpcd", VPCD_DRIVER.exists()))
               if not present]
    if missing:
        pytest.skip(f"Debian packages missing: {', '.join(missing)} (`make test` installs them when run as root)")
    if not pyscard_available():
        pytest.skip("pyscard is not installed (`make` installs it when swig and libpcsclite-dev are present)")
    if _vpcd_reader_listed():
        yield PcscStack(VPCD_READER, VPCD_SYSTEM_PORT)
        return
    config_dir = tmp_path_factory.mktemp("reader.conf.d")
    failures = []
    for port in _vpcd_ports():
        process, why = _start_pcscd(config_dir, port)
        if process is not None:
            break
        failures.append(why)
    else:
        pytest.fail(f"pcscd did not offer {VPCD_READER}: " + " | ".join(failures or ["no free port pair"]))
    assert isinstance(process, subprocess.Popen)
    yield PcscStack(VPCD_READER, port)
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def pcsc_stack(pcsc_daemon: PcscStack) -> str:
    """The vpcd reader's name, on a running pcscd."""
    return pcsc_daemon.reader


@pytest.fixture
def vpcd_card(pcsc_daemon: PcscStack) -> Iterator[object]:
    """The first demo card, inserted in the vpcd reader for one test (removed after)."""
    import time

    from gateway.demo.card import card_from_population
    from simulators.virtual_card import VpcdClient

    client = VpcdClient(card_from_population(), port=pcsc_daemon.vpcd_port)
    client.insert()
    _wait_for_card(pcsc_daemon.reader, present=True)
    yield client
    client.remove()
    _wait_for_card(pcsc_daemon.reader, present=False)
    time.sleep(0.2)


def _wait_for_card(reader: str, *, present: bool, timeout_s: float = 10.0) -> None:
    import time

    from smartcard.System import readers

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for candidate in readers():
            if str(candidate) == reader:
                connection = candidate.createConnection()
                try:
                    connection.connect()
                    connection.disconnect()
                    if present:
                        return
                except Exception:
                    if not present:
                        return
                finally:
                    with contextlib.suppress(Exception):
                        connection.release()
        time.sleep(0.1)
    raise AssertionError(f"card {'never appeared in' if present else 'never left'} {reader}")
