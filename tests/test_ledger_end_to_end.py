"""The ledger behind real gateway processes: durability across kill -9, two gateways on one PostgreSQL,
and a database that goes away and comes back."""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.db.engine import make_engine
from gateway.demo.population import demo_population
from gateway.demo.registry import demo_balances
from gateway.ledger.models import LedgerAccount, LedgerTransaction
from gateway.protocol.messages import pb
from tests.ledger_support import person_id_of
from tests.test_end_to_end import ROOT, RunningGateway, prepare_database
from tests.wire import WireClient, request, sign_in

OK = pb.STATUS_CODE_OK
VIRTUAL_IN_CITY = "H33020300001-03"   # its reader holds N00000001, in Ningbo: no PIN


def settle(client: WireClient, terminal: str, message_id: str, total_fen: int, medical_type: int = 11
           ) -> pb.Response:
    return client.call(request("settle", message_id, terminal, medical_type=medical_type, total_fen=total_fen))


def signed_in(gateway: RunningGateway, terminal: str) -> WireClient:
    client = WireClient("127.0.0.1", gateway.port)
    response = client.call(sign_in(terminal_id=terminal))
    assert response.status == OK, response.message_en
    return client


def ledger_check(db: str) -> None:
    result = subprocess.run([sys.executable, "-m", "gateway", "ledger", "check", "--db", db], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all invariants hold" in result.stdout


def test_settle_retry_reverse_and_query_over_a_real_socket(tmp_path: Path) -> None:
    gateway = RunningGateway(tmp_path, persons=40)
    try:
        client = signed_in(gateway, VIRTUAL_IN_CITY)
        first = settle(client, VIRTUAL_IN_CITY, "s-1", 88_800)
        assert first.status == OK, first.message_en
        again = settle(client, VIRTUAL_IN_CITY, "s-1", 88_800)
        again.ClearField("server_time")
        first.ClearField("server_time")
        assert again == first  # the stored answer, byte for byte but for the time it was sent
        reversed_ = client.call(request("reverse", "rv-1", VIRTUAL_IN_CITY, original_message_id="s-1"))
        assert reversed_.reverse.outcome == pb.REVERSE_OUTCOME_REVERSED
        queried = client.call(request("query_transaction", "q-1", VIRTUAL_IN_CITY,
                                      settlement_id=first.settle.settlement_id))
        assert queried.query_transaction.state == pb.TRANSACTION_STATE_REVERSED
        client.close()
    finally:
        gateway.stop()
    ledger_check(gateway.db)


@dataclass
class LoadResult:
    ok: dict[str, pb.Response] = field(default_factory=dict)          # message id -> OK answer seen
    unknown: set[str] = field(default_factory=set)                    # sent, no answer (the gateway died)
    unexpected: list[str] = field(default_factory=list)


def keep_settling(gateway: RunningGateway, terminal: str, prefix: str, stop: threading.Event,
                  result: LoadResult, lock: threading.Lock) -> None:
    """A terminal that settles until told to stop, reconnecting whenever the gateway is gone, and retrying a
    message whose answer it never saw with the same message id."""
    n = 0
    pending: str | None = None
    client: WireClient | None = None
    while not stop.is_set():
        try:
            if client is None:
                client = signed_in(gateway, terminal)
            message_id = pending or f"{prefix}-{n}"
            if pending is None:
                n += 1
            pending = message_id
            response = settle(client, terminal, message_id, 1_000 + n % 50)
            pending = None
            with lock:
                result.unknown.discard(message_id)
                if response.status == OK:
                    result.ok[message_id] = response
                elif response.status != pb.STATUS_CODE_TEMPORARILY_UNAVAILABLE:
                    result.unexpected.append(f"{message_id}: {pb.StatusCode.Name(response.status)}")
        except (OSError, ConnectionError, AssertionError):
            if pending is not None:
                with lock:
                    result.unknown.add(pending)
            if client is not None:
                client.close()
            client = None
            time.sleep(0.05)
    if client is not None:
        client.close()


@pytest.mark.slow
def test_kill_minus_nine_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    gateway = RunningGateway(tmp_path, persons=40)
    stop, lock, result = threading.Event(), threading.Lock(), LoadResult()
    terminals = [VIRTUAL_IN_CITY] * 3
    workers = [threading.Thread(target=keep_settling, args=(gateway, t, f"w{i}", stop, result, lock))
               for i, t in enumerate(terminals)]
    for worker in workers:
        worker.start()
    rng = random.Random(1124)
    try:
        for _ in range(10):
            time.sleep(rng.uniform(0.3, 1.0))
            gateway.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            gateway.start()
        time.sleep(1.5)  # the terminals retry what they never heard about
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        gateway.stop()
    assert result.unexpected == []
    assert len(result.ok) > 50, "the load should have settled something between the kills"
    engine = make_engine(gateway.db)
    with engine.connect() as conn:
        settled = conn.execute(select(LedgerTransaction.message_id, func.count()).where(
            LedgerTransaction.kind == "settlement").group_by(LedgerTransaction.message_id)).all()
    engine.dispose()
    counts = dict(settled)
    lost = [m for m in result.ok if counts.get(m) != 1]
    assert lost == [], f"acknowledged settlements missing or duplicated: {lost[:10]}"
    assert all(count == 1 for count in counts.values())
    # Whatever the ledger holds beyond the acknowledged ones was sent and never answered.
    assert set(counts) - set(result.ok) <= result.unknown
    ledger_check(gateway.db)


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_concurrent_settlements_never_overdraw_one_person(database: str, tmp_path: Path,
                                                          request: pytest.FixtureRequest) -> None:
    """Four counters settle for the same holder at the same instant — on PostgreSQL through two gateway
    processes sharing one database, on SQLite through one gateway: the accounts pay no more than they held,
    the pooled fund no more than the yearly cap, and nothing is lost or doubled."""
    url = (str(request.getfixturevalue("postgres_url")) if database == "postgresql"
           else f"sqlite:///{tmp_path / 'ledger.db'}")
    prepare_database(url, tmp_path, persons=40)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = RunningGateway(tmp_path / "a", url, prepare=False)
    second = RunningGateway(tmp_path / "b", url, prepare=False) if database == "postgresql" else first
    postgres_url = url
    responses: list[pb.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def counter(gateway: RunningGateway, prefix: str) -> None:
        client = signed_in(gateway, VIRTUAL_IN_CITY)  # each gateway's -03 reader holds N00000001
        start.wait()
        for n in range(25):
            response = settle(client, VIRTUAL_IN_CITY, f"{prefix}-{n}", 600_000)
            with lock:
                responses.append(response)
        client.close()

    counters = [threading.Thread(target=counter, args=(gw, f"{name}{k}"))
                for gw, name in ((first, "a"), (second, "b")) for k in range(2)]
    try:
        for thread in counters:
            thread.start()
        for thread in counters:
            thread.join(timeout=180)
    finally:
        first.stop()
        if second is not first:
            second.stop()
    assert [pb.StatusCode.Name(r.status) for r in responses if r.status != OK] == []
    assert len(responses) == 100
    holder = next(h for h in demo_population(40) if h.card.card_number == "N00000001")
    opening_current, opening_prior = demo_balances(holder)
    paid_current = sum(r.settle.split.current_year_account_fen for r in responses)
    paid_prior = sum(r.settle.split.prior_years_account_fen for r in responses)
    pooled = sum(r.settle.split.pooled_fund_fen for r in responses)
    assert paid_current == opening_current  # 60 million fen of care empties the current-year account exactly
    assert paid_prior == opening_prior
    assert pooled == 2_000_000  # the yearly cap, reached and never passed
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        balances = dict(conn.execute(select(LedgerAccount.code, LedgerAccount.balance_fen).where(
            LedgerAccount.owner == str(person_id_of(engine, holder.person.social_security_number)))).all())
        refs = conn.execute(select(func.count(func.distinct(LedgerTransaction.ref))).where(
            LedgerTransaction.kind == "settlement")).scalar()
    engine.dispose()
    assert set(balances.values()) == {0}
    assert refs == 100
    ledger_check(postgres_url)


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own, which it may stop and start at will."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"
        root.mkdir(parents=True, exist_ok=True)
        shutil.chown(root, "postgres", "postgres")
        self._as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E",
                           "UTF8", "--no-locale"])
        self.start()
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE gw"],
                       check=True, capture_output=True)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/gw"

    def _as_postgres(self, command: list[str]) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.root / "log"), "-o",
                           f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}", "start"])

    def stop(self) -> None:
        self._as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop"])


@pytest.fixture
def private_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server binaries (postgresql-15) or runuser are not installed")
    root = Path("/tmp") / f"gateway-pg-{random.randrange(10**9)}"
    cluster = PrivatePostgres(root, port=25000 + random.randrange(5000))
    yield cluster
    with contextlib.suppress(subprocess.CalledProcessError):
        cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.postgres
@pytest.mark.slow
def test_a_database_that_goes_away_gives_retry_and_the_gateway_recovers(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    prepare_database(private_postgres.url, tmp_path, persons=40)
    gateway = RunningGateway(tmp_path, private_postgres.url, prepare=False)
    try:
        client = signed_in(gateway, VIRTUAL_IN_CITY)
        assert settle(client, VIRTUAL_IN_CITY, "before", 1_000).status == OK
        private_postgres.stop()
        during = settle(client, VIRTUAL_IN_CITY, "during", 1_000)
        assert during.status == pb.STATUS_CODE_TEMPORARILY_UNAVAILABLE, during.message_en
        assert "retry" in during.message_en
        heartbeat = client.call(request("heartbeat", "hb", VIRTUAL_IN_CITY))
        assert heartbeat.status == OK  # the gateway itself is fine
        private_postgres.start()
        deadline = time.monotonic() + 30
        while True:
            after = settle(client, VIRTUAL_IN_CITY, "during", 1_000)  # the same message id, as advised
            if after.status == OK or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert after.status == OK, after.message_en
        client.close()
    finally:
        gateway.stop()
    ledger_check(private_postgres.url)
