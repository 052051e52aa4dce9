"""The ledger knows a person by the registry's person id, never by the ID number (issue 13, item 6).

The person id: random, 19 digits, given once and kept by every later import. Migration 0010: a ledger built by
the release before it (revision 0009, its own code run from `git archive`) reads the same after the upgrade, on
SQLite and PostgreSQL: every balance (under the renamed account codes), `gateway ledger check`, the day's export and
statement, its reconciliation, the payout file, and the answer to a retry of every request; and no ledger table
holds an ID number any more.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from gateway.cli.main import main
from gateway.db.engine import make_engine
from gateway.db.migrate import MigrationRefused, current_revision, downgrade, head_revision, upgrade
from gateway.demo.registry import demo_person_csv, write_demo_registry
from gateway.finance.bank_files import read_amounts, write_payout_file
from gateway.finance.payouts import PayoutKind, bank_lines, run_payout
from gateway.identity import mask_id
from gateway.ledger.writer import InlineLedgerWriter
from gateway.protocol.messages import pb
from gateway.registry.importer import import_files
from gateway.registry.models import PERSON_ID_FLOOR
from gateway.registry.tables import PERSONS, REGISTRY_VERSION
from gateway.settlement.policy import load_builtin_policies
from tests import ledger_0009
from tests.ledger_support import CARDS, reverse, revoke, settle, write

ROOT = Path(__file__).resolve().parent.parent
MIGRATION = "gateway/db/migrations/versions/0010_person_ids.py"
LEDGER_TABLES = ("ledger_accounts", "ledger_transactions", "ledger_entries", "request_records", "year_totals",
                 "closed_days")
KEYED_BY_PERSON = ("opening", "rollover", "payout")


# The release before 0010, as it was committed ----------------------------------------------------------


@pytest.fixture(scope="session")
def release_0009(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tree of the commit before 0010 was added, with its protobuf code generated as `make proto` does."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git history of the repository (the release before migration 0010)")
    added = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", MIGRATION], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    if not added:
        pytest.skip(f"{MIGRATION} is not committed yet: no release before it to build a ledger with")
    tree = tmp_path_factory.mktemp("release-0009")
    archive = subprocess.run(["git", "archive", f"{added[-1]}^"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    generated = tree / "gateway" / "protocol" / "generated"
    generated.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={generated}",
                    f"--pyi_out={generated}", "proto/ningbo/gateway/v1/gateway.proto"], cwd=tree, check=True)
    for folder in [generated, *(path for path in generated.rglob("*") if path.is_dir())]:
        (folder / "__init__.py").touch()
    return tree


def ledger_of_0009(release: Path, url: str, work: Path) -> dict[str, Any]:
    """A ledger built at `url` by the old release (tests/ledger_0009.py), and what that release said of it."""
    work.mkdir()
    snapshot = work / "snapshot.json"
    subprocess.run([sys.executable, str(ROOT / "tests" / "ledger_0009.py"), url, str(snapshot), str(work)],
                   cwd=release, env={"PYTHONPATH": str(release), "PATH": "/usr/bin:/bin"}, check=True, timeout=300)
    loaded: dict[str, Any] = json.loads(snapshot.read_text(encoding="utf-8"))
    return loaded


def run(argv: list[str], url: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = main([*argv, "--db", url])
    return status, out.getvalue()


# What the ledger holds, renamed as 0010 renames it --------------------------------------------------------


def person_ids(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(PERSONS.c.social_security_number, PERSONS.c.person_id)).all())  # type: ignore[arg-type]


def renamed(code: str, ids: dict[str, int]) -> str:
    if not code.startswith("person:"):
        return code
    _, number, account = code.split(":")
    return f"person:{ids[number]}:{account}"


def rekeyed(kind: str, key: str | None, number: str | None, ids: dict[str, int]) -> str | None:
    if key is None or kind not in KEYED_BY_PERSON or number is None:
        return key
    if not key.endswith(f":{number}"):
        raise AssertionError(f"{key} does not end with its holder")
    return key[: -len(number)] + str(ids[number])


def rows(engine: Engine, sql: str) -> list[list[Any]]:
    with engine.connect() as conn:
        return [list(row) for row in conn.execute(text(sql))]


def ledger_text(engine: Engine) -> str:
    """Every row of every ledger table, as text."""
    return "\n".join(repr(rows(engine, f"SELECT * FROM {table}")) for table in LEDGER_TABLES)


def scenario_intents(engine: Engine, settlement_of: dict[str, str]) -> list[tuple[str, Any]]:
    """The old release's requests, built again by today's code."""
    at = datetime.fromisoformat(ledger_0009.SETTLED_AT)
    intents: list[tuple[str, Any]] = []
    for kind, message_id, target, total in ledger_0009.SCENARIO:
        if kind == "settle":
            intents.append((message_id, settle(engine, target, message_id, total, at=at)))
        elif kind == "revoke":
            intents.append((message_id, revoke(settlement_of[target], message_id, at=at)))
        else:
            intents.append((message_id, reverse(target, message_id, at=at)))
    return intents


def payout_amounts() -> str:
    return "social_security_number,amount\n" + "".join(
        f"{CARDS[card][0].person.social_security_number},{fen // 100}.{fen % 100:02d}\n"
        for card, fen in ledger_0009.PAYOUT_ROWS)


@pytest.mark.slow
def test_a_ledger_of_0009_reads_the_same_after_the_upgrade_and_holds_no_id_number(
    release_0009: Path, db_url: str, tmp_path: Path
) -> None:
    old = ledger_of_0009(release_0009, db_url, tmp_path / "old")
    assert old["revision"] == "0009" and old["printed"]["check"]["status"] == 0
    assert old["printed"]["reconcile"]["status"] == 0, "the old release's day reconciles against its own export"
    assert {kind for _, kind, _, _ in old["transactions"]} == {"opening", "settlement", "revoke", "reversal",
                                                              "payout", "rollover"}
    assert all(pb.Response.FromString(bytes.fromhex(answer)).status == pb.STATUS_CODE_OK
               for answer in old["answers"].values())
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        ids = person_ids(engine)
        assert sorted(ids) == old["id_numbers"]
        assert len(set(ids.values())) == len(ids) and all(PERSON_ID_FLOOR <= i < 2 * PERSON_ID_FLOOR
                                                           for i in ids.values())

        # The same money under the renamed accounts; the same entries, transactions and totals.
        new_balances = dict(rows(engine, "SELECT code, balance_fen FROM ledger_accounts"))
        assert new_balances == {renamed(code, ids): balance for code, balance in old["balances"].items()}
        assert rows(engine, "SELECT code, kind, owner, must_not_go_negative FROM ledger_accounts ORDER BY code") == \
            sorted([renamed(code, ids), kind, str(ids[owner]) if code.startswith("person:") else owner, bool(limit)]
                   for code, kind, owner, limit in old["accounts"])
        assert rows(engine, "SELECT id, transaction_ref, account_code, amount_fen FROM ledger_entries ORDER BY id") == \
            [[i, ref, renamed(code, ids), amount] for i, ref, code, amount in old["entries"]]
        assert rows(engine, "SELECT ref, kind, dedupe_key, person_id FROM ledger_transactions ORDER BY id") == \
            [[ref, kind, rekeyed(kind, key, number, ids), ids[number] if number else None]
             for ref, kind, key, number in old["transactions"]]
        assert sorted(rows(engine, "SELECT person_id, insurance_year, deductible_counted_fen, pooled_fund_paid_fen "
                                   "FROM year_totals")) == \
            sorted([ids[number], *rest] for number, *rest in old["year_totals"])
        assert dict(rows(engine, "SELECT message_id, recorded_outcome FROM request_records "
                                 "WHERE recorded_outcome IS NOT NULL")) == old["records"], "byte for byte"
        text_of_ledger = ledger_text(engine)
        assert not [mask_id(n) for n in ids if n in text_of_ledger], "an ID number left in the ledger's tables"

        # What the commands print and write.
        assert run(["ledger", "check"], db_url) == (0, old["printed"]["check"]["stdout"])
        new = tmp_path / "new"
        new.mkdir()
        day = ledger_0009.DAY
        assert run(["ledger", "export", "--date", day, "--output", str(new / "export.csv")], db_url)[0] == 0
        assert (new / "export.csv").read_text(encoding="utf-8-sig") == old["files"]["export.csv"]
        statement = new / "statement.csv"
        assert run(["ledger", "export", "--date", day, "--format", "statement", "--output", str(statement)],
                   db_url)[0] == 0
        assert statement.read_text(encoding="utf-8-sig") == old["files"]["statement.csv"], \
            "the statement's psn_no is the full ID number, joined from the registry"
        status, _ = run(["reconcile", "--date", day, "--statement", str(tmp_path / "old" / "statement.csv"),
                         "--out", str(new / "recon")], db_url)
        assert status == 0
        for name in ("recon/totals.csv", "recon/differences.csv"):
            assert (new / name).read_text(encoding="utf-8-sig") == old["files"][name], name

        # A retry of every request gets the answer it got, and writes nothing; the payout batch pays nothing twice.
        writer = InlineLedgerWriter(engine, load_builtin_policies())
        for message_id, intent in scenario_intents(engine, old["settlement_of"]):
            [again] = write(writer, [intent])
            assert again == pb.Response.FromString(bytes.fromhex(old["answers"][message_id])), message_id
        report = run_payout(engine, PayoutKind.CONTRIBUTION, ledger_0009.PAYOUT_BATCH, read_amounts(payout_amounts()),
                            date.fromisoformat(day))
        assert not report.paid and len(report.already_paid) == len(ledger_0009.PAYOUT_ROWS)
        payout_file = io.StringIO()
        write_payout_file(bank_lines(engine, ledger_0009.PAYOUT_BATCH), payout_file)
        assert payout_file.getvalue() == old["payout_file"]

        # The downgrade gives the old ledger back exactly; upgraded again, it takes new requests.
        downgrade(engine, "0009")
        assert rows(engine, "SELECT code, kind, owner, must_not_go_negative FROM ledger_accounts ORDER BY code") == \
            [[code, kind, owner, bool(limit)] for code, kind, owner, limit in old["accounts"]]
        assert rows(engine, "SELECT id, transaction_ref, account_code, amount_fen FROM ledger_entries "
                            "ORDER BY id") == old["entries"]
        assert rows(engine, "SELECT ref, kind, dedupe_key, social_security_number FROM ledger_transactions "
                            "ORDER BY id") == old["transactions"]
        upgrade(engine)
        late = datetime(2027, 1, 1, 2, 0, tzinfo=UTC)
        [revoked] = write(writer, [revoke(old["settlement_of"]["m-1"], "rk-late", at=late)])
        assert revoked.status == pb.STATUS_CODE_OK, revoked.message_en
        refunded = revoked.revoke.refunded
        assert (refunded.current_year_account_fen, refunded.prior_years_account_fen) == (0, 1_000), \
            "2026 was rolled over (its rollover found under the rewritten key): the refund goes to prior years"
        [settled] = write(writer, [settle(engine, "N00000001", "m-new", 500, at=late)])
        assert settled.status == pb.STATUS_CODE_OK, settled.message_en
        status, report_text = run(["ledger", "check"], db_url)
        assert status == 0, report_text
        text_of_ledger = ledger_text(engine)
        assert not [mask_id(n) for n in person_ids(engine) if n in text_of_ledger]
    finally:
        engine.dispose()


# Refusals and the registry's side ----------------------------------------------------------------------


def test_an_id_number_the_registry_does_not_know_stops_the_upgrade_and_changes_nothing(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ledger's holder must be a person of the registry, or 0010 could give them no person id."""
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0009")
        stranger = "11010519491231002X"
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO ledger_accounts (code, kind, owner, must_not_go_negative, balance_fen) "
                              "VALUES (:code, 'person_current_year', :owner, true, 0)"),
                         {"code": f"person:{stranger}:current_year", "owner": stranger})
        with pytest.raises(MigrationRefused, match=r"1 ID number\(s\) that are no person of the registry "
                                                   r"\(110105\*\*\*\*\*\*\*\*002X\)") as refused:
            upgrade(engine)
        assert stranger not in str(refused.value)
        capsys.readouterr()
        assert main(["db", "upgrade", "--db", db_url]) == 1
        said = capsys.readouterr().err
        assert said.count("\n") == 1 and said.startswith("gateway: the ledger holds 1 ID number(s)"), said
        assert current_revision(engine) == "0009"
        assert rows(engine, "SELECT code FROM ledger_accounts") == [[f"person:{stranger}:current_year"]]
    finally:
        engine.dispose()


def test_the_person_id_is_given_once_and_kept_by_every_later_import(migrated_engine: Engine, tmp_path: Path) -> None:
    files = demo_person_csv(persons=5)
    paths = {}
    for name in ("persons", "cards", "balances"):
        paths[name] = tmp_path / f"{name}.csv"
        paths[name].write_text(files[name], encoding="utf-8")
    import_files(migrated_engine, list(paths.values()))
    first = person_ids(migrated_engine)
    assert len(first) == 5
    changed = files["persons"].replace("employee_active", "employee_retired")
    assert changed != files["persons"]
    paths["persons"].write_text(changed, encoding="utf-8")  # the same persons, updated
    report = import_files(migrated_engine, [paths["persons"]])
    assert report.tables["persons"].updated > 0
    write_demo_registry(migrated_engine, persons=8)  # and three more
    again = person_ids(migrated_engine)
    assert {number: again[number] for number in first} == first and len(set(again.values())) == 8
    assert all(number[:6] not in str(i) and number[-4:] not in str(i)[-4:] for number, i in first.items())


def test_the_upgrade_keeps_the_registry_version_moving_on_persons(sqlite_url: str) -> None:
    """SQLite's copy of `persons` in batch mode loses the table's triggers: 0010 gives them back."""
    engine = make_engine(sqlite_url)
    try:
        upgrade(engine, "0009")
        upgrade(engine)
        with engine.begin() as conn:
            before = conn.execute(select(REGISTRY_VERSION.c.version)).scalar_one()
            conn.execute(text("INSERT INTO persons (social_security_number, person_id, name, insurance_type, "
                              "insured_region_code) VALUES ('330203199001011236', :id, 'x', 'resident', '330203')"),
                         {"id": PERSON_ID_FLOOR})
            assert conn.execute(select(REGISTRY_VERSION.c.version)).scalar_one() > before
    finally:
        engine.dispose()


def test_an_id_drawn_twice_is_drawn_again(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The draw repeats itself for the first persons (as it may, once in a great while): each still gets an id of
    its own, and the unique constraint is made."""
    engine = make_engine(sqlite_url)
    try:
        upgrade(engine, "0009")
        numbers = ["330203199001011236", "11010519491231002X", "440524188001010014"]
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO persons (social_security_number, name, insurance_type, insured_region_code)"
                              " VALUES (:number, 'x', 'resident', '330203')"), [{"number": n} for n in numbers])
        draws = iter([7, 7, 7, 8, 9])
        monkeypatch.setattr(secrets, "randbits", lambda bits: next(draws))
        upgrade(engine)
        assert sorted(person_ids(engine).values()) == [PERSON_ID_FLOOR + n for n in (7, 8, 9)]
    finally:
        engine.dispose()


def test_the_ledger_commands_print_no_id_number_and_only_the_statement_has_it_in_full(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What finance and the operator see: person ids, masked numbers, and the full number only in the center's
    statement format (its psn_no)."""
    engine = make_engine(sqlite_url)
    try:
        upgrade(engine)
        write_demo_registry(engine, persons=40)
        writer = InlineLedgerWriter(engine, load_builtin_policies())
        at = datetime.fromisoformat(ledger_0009.SETTLED_AT)
        [settled] = write(writer, [settle(engine, "N00000001", "m-1", 300_000, at=at)])
        assert settled.status == pb.STATUS_CODE_OK
        number = CARDS["N00000001"][0].person.social_security_number
        holder = person_ids(engine)[number]
        with engine.begin() as conn:  # a cached total gone wrong, for check to report
            conn.execute(text("UPDATE year_totals SET pooled_fund_paid_fen = pooled_fund_paid_fen + 1"))
    finally:
        engine.dispose()
    day = ledger_0009.DAY
    status, report = run(["ledger", "check"], sqlite_url)
    assert status == 1 and f"person {holder} 2026: cached" in report
    outputs = {"report": report}
    for fmt in ("csv", "jsonl", "statement"):
        path = tmp_path / f"day.{fmt}"
        assert run(["ledger", "export", "--date", day, "--format", fmt, "--output", str(path)], sqlite_url)[0] == 0
        outputs[fmt] = path.read_text(encoding="utf-8")
    assert f'"person_id": {holder}' in outputs["jsonl"]
    assert f",{number}," in outputs["statement"], "the center's format names the person by the full number"
    assert [name for name, printed in outputs.items() if number in printed] == ["statement"]
    amounts = tmp_path / "amounts.csv"
    mistyped = number[:17] + ("0" if number[17] != "0" else "1")
    amounts.write_text(f"social_security_number,amount\n{mistyped},1.00\n", encoding="utf-8")
    capsys.readouterr()
    status = main(["payout", "run", "--kind", "subsidy", "--batch", "B9", "--amounts", str(amounts), "--out",
                   str(tmp_path / "bank.csv"), "--db", sqlite_url])
    refused = capsys.readouterr().err
    assert status == 2 and mistyped not in refused and mask_id(mistyped) in refused
