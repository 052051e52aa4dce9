"""What the ledger records under a request key, and migration 0007, which converted the protobuf answers that
revision 0006 stored into recorded outcomes: a row written the old way is answered exactly as before."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text

from gateway.db.engine import make_engine
from gateway.db.migrate import MIGRATIONS_DIR, current_revision, downgrade, head_revision, upgrade
from gateway.demo.registry import write_demo_registry
from gateway.ledger.outcomes import (
    Committed,
    HolderBalances,
    RecordUnreadable,
    Reversed,
    ReverseResult,
    Revoked,
    Settled,
    canonical_form,
    from_recorded_form,
    recorded_form,
)
from gateway.ledger.tables import RECORDS
from gateway.protocol.messages import pb
from gateway.serve.answers import answer, content_hash
from gateway.settlement.split import FundSplit
from tests.ledger_support import TERMINAL, settle_request
from tests.test_adapter import Harness
from tests.test_settlement_flow import Counter
from tests.wire import request

OK = pb.STATUS_CODE_OK


def migration_0007() -> ModuleType:
    path = MIGRATIONS_DIR / "versions" / "0007_recorded_outcomes.py"
    spec = importlib.util.spec_from_file_location("migration_0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What revision 0006 stored: the answer it sent, serialized (gateway/ledger/responses.py as of commit 9e7015c).

SETTLED_AT = datetime(2026, 11, 24, 2, 0, 0, 123_456, tzinfo=UTC)


def _split_0006(message: pb.FundSplit, total: int, pooled: int, current: int, prior: int, cash: int,
                deductible: int) -> None:
    message.total_fen = total
    message.fund_pay_fen = pooled
    message.pooled_fund_fen = pooled
    message.current_year_account_fen = current
    message.prior_years_account_fen = prior
    message.cash_fen = cash
    message.deductible_counted_fen = deductible


def settled_0006(message_id: str) -> pb.Response:
    response = pb.Response(message_id=message_id, status=OK, message_en="OK", message_zh="成功")
    result = response.settle
    result.settlement_id = "S20261124A1B2C3D4E5F6"
    result.card_number = "N00000001"
    _split_0006(result.split, 12_345, 0, 12_345, 0, 0, 0)
    balances = result.balances_after
    balances.insurance_year = 2026
    balances.current_year_account_fen = 87_655
    balances.prior_years_account_fen = 250_000
    balances.deductible_fen = 75_000
    balances.pooled_fund_cap_fen = 2_000_000
    result.settled_at.FromDatetime(SETTLED_AT)
    result.policy_version = "NB-2026-illustrative-1"
    return response


def revoked_0006(message_id: str) -> pb.Response:
    response = pb.Response(message_id=message_id, status=OK, message_en="OK", message_zh="成功")
    response.revoke.settlement_id = "S20261124A1B2C3D4E5F6"
    response.revoke.revoke_id = "R20261124FFEEDDCCBBAA"
    _split_0006(response.revoke.refunded, 80_000, 4_000, 70_000, 5_000, 1_000, 5_000)
    return response


def reversed_0006(message_id: str, original: str, outcome: int) -> pb.Response:
    response = pb.Response(message_id=message_id, status=OK, message_en="OK", message_zh="成功")
    response.reverse.original_message_id = original
    response.reverse.outcome = outcome  # type: ignore[assignment]
    if outcome == pb.REVERSE_OUTCOME_REVERSED:
        _split_0006(response.reverse.reversed, 1_000, 0, 1_000, 0, 0, 0)
    else:
        response.reverse.SetInParent()
    return response


REQUESTS = {  # message id -> (the request, what 0006 stored for it)
    "s-1": (request("settle", "s-1", TERMINAL, medical_type=11, total_fen=12_345), settled_0006("s-1")),
    "rk-1": (request("revoke", "rk-1", TERMINAL, settlement_id="S20261124A1B2C3D4E5F6"), revoked_0006("rk-1")),
    "rv-1": (request("reverse", "rv-1", TERMINAL, original_message_id="s-0"),
             reversed_0006("rv-1", "s-0", pb.REVERSE_OUTCOME_REVERSED)),
    "rv-2": (request("reverse", "rv-2", TERMINAL, original_message_id="lost-1"),
             reversed_0006("rv-2", "lost-1", pb.REVERSE_OUTCOME_NEVER_ARRIVED)),
    "rv-3": (request("reverse", "rv-3", TERMINAL, original_message_id="s-0"),
             reversed_0006("rv-3", "s-0", pb.REVERSE_OUTCOME_ALREADY_REVERSED)),
}


def _row_0006(message_id: str, body: str, digest: str | None, outcome: str, response: bytes | None) -> dict[str, Any]:
    return {"terminal_id": TERMINAL, "message_id": message_id, "body": body, "content_hash": digest,
            "outcome": outcome, "transaction_ref": None, "response": response, "recorded_at": SETTLED_AT}


def write_rows_0006(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO request_records (terminal_id, message_id, body, content_hash, outcome, "
                          "transaction_ref, response, recorded_at) VALUES (:terminal_id, :message_id, :body, "
                          ":content_hash, :outcome, :transaction_ref, :response, :recorded_at)"), rows)


def ledger_at(db_url: str, revision: str) -> Engine:
    """A ledger at `revision` (0006, or 0008 beside it: the request records as 0006 left them) holding the answers
    REQUESTS got, and a tombstone (Reverse of lost-1). (No registry: today's writes it only at the head.)"""
    engine = make_engine(db_url)
    upgrade(engine, revision)
    rows = [_row_0006(mid, req.WhichOneof("body") or "", content_hash(req), "committed", stored.SerializeToString())
            for mid, (req, stored) in REQUESTS.items()]
    rows.append(_row_0006("lost-1", "settle", None, "tombstone", None))
    write_rows_0006(engine, rows)
    return engine


@pytest.fixture
def ledger_of_0006(db_url: str) -> Iterator[Engine]:
    engine = ledger_at(db_url, "0006")
    yield engine
    engine.dispose()


@pytest.mark.parametrize("revision", ["0006", "0008"])
def test_a_row_written_by_0006_is_answered_identically_after_the_upgrade(db_url: str, revision: str) -> None:
    """From 0006, or from 0008 (written beside 0007 on another branch, after 0006): 0007 converts the rows."""
    engine = ledger_at(db_url, revision)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    write_demo_registry(engine, persons=40)
    counter = Counter(Harness(engine), TERMINAL, "N00000001")  # a new connection: nothing read at it yet
    for message_id, (req, stored) in REQUESTS.items():
        again = counter.terminal.run(req)
        again.ClearField("server_time")  # the gateway's clock when it wrote the frame
        assert again == stored, message_id
    assert counter.scripts() == 0, "a retry is answered without reading the card"
    assert counter.run("settle", "s-1", medical_type=11, total_fen=99_999).status == pb.STATUS_CODE_DUPLICATE_MESSAGE_ID
    assert counter.run("settle", "lost-1", medical_type=11, total_fen=1_000).status == (
        pb.STATUS_CODE_MESSAGE_ID_REVERSED)
    engine.dispose()


def test_the_downgrade_stores_the_answers_0006_stored(ledger_of_0006: Engine) -> None:
    engine = ledger_of_0006
    with engine.connect() as conn:
        before = dict(conn.execute(text("SELECT message_id, response FROM request_records")).all())
    upgrade(engine)
    downgrade(engine, "0006")
    with engine.connect() as conn:
        after = dict(conn.execute(text("SELECT message_id, response FROM request_records")).all())
    assert after.keys() == before.keys()
    for message_id, stored in before.items():
        if stored is None:
            assert after[message_id] is None
        else:
            assert pb.Response.FromString(after[message_id]) == pb.Response.FromString(stored), message_id


def _unreproducible() -> bytes:
    """A stored answer whose split says the funds paid other than the pooled fund did: the recorded form, which
    has no field for that, could not give it back."""
    response = settled_0006("bad-1")
    response.settle.split.fund_pay_fen += 1
    return response.SerializeToString()


@pytest.mark.parametrize("stored", [_unreproducible(), b"\xff\xff not protobuf",
                                    pb.Response(message_id="bad-1", status=OK).SerializeToString()],
                         ids=["split the form cannot hold", "not protobuf", "an answer without a body"])
def test_an_answer_the_recorded_form_cannot_reproduce_stops_the_upgrade_and_changes_nothing(
    ledger_of_0006: Engine, stored: bytes
) -> None:
    engine = ledger_of_0006
    write_rows_0006(engine, [_row_0006("bad-1", "settle", "0" * 64, "committed", stored)])
    with pytest.raises(RuntimeError, match=f"request record {TERMINAL}/bad-1"):
        upgrade(engine)
    assert current_revision(engine) == "0006"
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT response FROM request_records WHERE message_id = 'bad-1'")).scalar_one()
    assert kept == stored


def test_the_ledger_records_what_it_answered(migrated_engine: Engine) -> None:
    """A settlement written now: its record is the canonical text of the outcome the writer answered with."""
    from gateway.ledger.writer import InlineLedgerWriter
    from gateway.settlement.policy import load_builtin_policies
    from tests.ledger_support import settle

    write_demo_registry(migrated_engine, persons=40)
    writer = InlineLedgerWriter(migrated_engine, load_builtin_policies())
    [settled] = writer.write([settle(migrated_engine, "N00000001", "m-1", 12_345)])
    assert isinstance(settled, Settled)
    with migrated_engine.connect() as conn:
        recorded = conn.execute(select(RECORDS.c.recorded_outcome, RECORDS.c.content_hash)
                                .where(RECORDS.c.message_id == "m-1")).one()
    assert recorded.recorded_outcome == recorded_form(settled)
    assert recorded.content_hash == content_hash(settle_request("m-1", 12_345))
    assert settled.split.total_fen == 12_345 and settled.card_number == "N00000001"


# The recorded form, for every outcome -----------------------------------------------------------------------

_fen = st.integers(min_value=0, max_value=10**13)
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
_splits = st.builds(lambda parts, deductible: FundSplit(sum(parts), *parts, deductible),
                    st.tuples(_fen, _fen, _fen, _fen), _fen)
_zones = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-14 * 60, 14 * 60))
_moments = st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=_zones)
_balances = st.builds(HolderBalances, st.integers(2000, 2100), _fen, _fen, _fen, _fen, _fen, _fen)
_outcomes: st.SearchStrategy[Committed] = st.one_of(
    st.builds(Settled, _text, _text, _splits, _balances, _moments, _text),
    st.builds(Revoked, _text, _text, _splits),
    st.builds(Reversed, _text, st.just(ReverseResult.REVERSED), _splits),
    st.builds(Reversed, _text, st.sampled_from([ReverseResult.NEVER_ARRIVED, ReverseResult.ALREADY_REVERSED]),
              st.none()),
)
MIGRATION = migration_0007()


@given(_outcomes)
def test_the_recorded_form_gives_back_the_outcome_and_its_answer(outcome: Committed) -> None:
    recorded = recorded_form(outcome)
    again = from_recorded_form(recorded)
    assert again == outcome
    assert recorded_form(again) == recorded, "canonical: one outcome, one text"
    assert answer("m-1", again) == answer("m-1", outcome)


@given(_outcomes)
def test_migration_0007_writes_the_recorded_form_of_the_answer_sent(outcome: Committed) -> None:
    """What 0006 stored was the answer sent, which is what the request path builds from the outcome: converted,
    it is the outcome's recorded form, and the downgrade gives the same answer back."""
    sent = answer("m-1", outcome)
    converted = MIGRATION._recorded_form_of(TERMINAL, "m-1", sent.SerializeToString())
    assert converted == recorded_form(outcome)
    assert pb.Response.FromString(MIGRATION._answer_of(TERMINAL, "m-1", converted)) == sent


@given(st.builds(Settled, _text, _text, _splits, _balances, st.one_of(_moments, _moments.map(
    lambda moment: moment.astimezone(UTC))), _text))
def test_a_settlement_is_recorded_as_json_writes_its_canonical_form(outcome: Settled) -> None:
    """The writer writes a Settled's text directly, without json.dumps (it was the largest part of deciding a
    settlement): the text must be, byte for byte, the canonical JSON of the outcome — sorted keys, no spaces,
    strings as json escapes them (quotes, backslashes, control characters, any script) — so that every record
    written before and after reads alike and means one thing."""
    assert recorded_form(outcome) == canonical_form(outcome)
    assert json.loads(recorded_form(outcome)) == json.loads(canonical_form(outcome))


@pytest.mark.parametrize("recorded", ["", "{}", '{"kind":"settled"}', '{"kind":"paid"}', "[1]",
                                      '{"kind":"revoked","settlement_id":"S","revoke_id":"R","refunded":{}}'])
def test_an_unreadable_record_is_said_to_be_so(recorded: str) -> None:
    with pytest.raises(RecordUnreadable):
        from_recorded_form(recorded)


def test_a_time_without_a_zone_is_not_recorded() -> None:
    naive = Settled("S1", "N00000001", FundSplit(1, cash_fen=1), HolderBalances(2026, 0, 0, 0, 0, 0, 0),
                    datetime(2026, 11, 24, 10, 0), "v")
    with pytest.raises(ValueError, match="without a zone"):
        recorded_form(naive)

