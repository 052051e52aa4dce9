"""Reading the ledger (blocking; the server runs these in its database thread pool). Only the writer writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Engine, Table, select

from gateway.ledger import accounts
from gateway.ledger.models import (
    LedgerAccount,
    LedgerTransaction,
    RequestOutcome,
    RequestRecord,
    TransactionKind,
    YearTotal,
)
from gateway.ledger.responses import fill_split
from gateway.protocol.messages import pb
from gateway.registry.models import OpeningBalance
from gateway.settlement.facts import Balances, YearToDate
from gateway.settlement.split import FundSplit

ACCOUNTS = cast(Table, LedgerAccount.__table__)
TRANSACTIONS = cast(Table, LedgerTransaction.__table__)
RECORDS = cast(Table, RequestRecord.__table__)
YEAR_TOTALS = cast(Table, YearTotal.__table__)
OPENING_BALANCES = cast(Table, OpeningBalance.__table__)


@dataclass(frozen=True)
class StoredRequest:
    outcome: str
    content_hash: str | None
    response: bytes | None


class LedgerReader:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def find_request(self, terminal_id: str, message_id: str) -> StoredRequest | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(RECORDS.c.outcome, RECORDS.c.content_hash, RECORDS.c.response).where(
                RECORDS.c.terminal_id == terminal_id, RECORDS.c.message_id == message_id)).first()
        return StoredRequest(row.outcome, row.content_hash, row.response) if row is not None else None

    def person_state(self, ssn: str, year: int) -> tuple[Balances, YearToDate]:
        """Balances (the ledger's, or the opening balances of a person the ledger has not met) and the
        year-to-date totals."""
        current, prior = accounts.person_current_year(ssn).code, accounts.person_prior_years(ssn).code
        with self._engine.connect() as conn:
            found = dict(conn.execute(select(ACCOUNTS.c.code, ACCOUNTS.c.balance_fen)
                                      .where(ACCOUNTS.c.code.in_([current, prior]))).all())
            if found:
                balances = Balances(found.get(current, 0), found.get(prior, 0))
            else:
                opening = conn.execute(select(OPENING_BALANCES.c.current_year_fen, OPENING_BALANCES.c.prior_years_fen)
                                       .where(OPENING_BALANCES.c.social_security_number == ssn)).first()
                balances = Balances(opening[0], opening[1]) if opening else Balances()
            totals = conn.execute(select(YEAR_TOTALS.c.deductible_counted_fen, YEAR_TOTALS.c.pooled_fund_paid_fen)
                                  .where(YEAR_TOTALS.c.social_security_number == ssn,
                                         YEAR_TOTALS.c.insurance_year == year)).first()
        return balances, YearToDate(totals[0], totals[1]) if totals else YearToDate()

    def query_transaction(self, terminal_id: str, institution_code: str, message_id: str | None,
                          settlement_id: str | None) -> pb.TransactionResult | None:
        """A terminal's own request by message id, or a settlement of its institution by id."""
        with self._engine.connect() as conn:
            record = None
            if message_id is not None:
                record = conn.execute(select(RECORDS).where(RECORDS.c.terminal_id == terminal_id,
                                                            RECORDS.c.message_id == message_id)).mappings().first()
                if record is None:
                    return None
                result = pb.TransactionResult(message_id=message_id)
                if record["outcome"] == RequestOutcome.TOMBSTONE.value:
                    result.state = pb.TRANSACTION_STATE_REVERSED
                    return result
                ref = record["transaction_ref"]
                if ref is None:  # a Reverse that found nothing to undo
                    result.state = pb.TRANSACTION_STATE_REVERSED
                    result.original_status = pb.STATUS_CODE_OK
                    return result
            else:
                ref = settlement_id
            row = conn.execute(select(TRANSACTIONS).where(TRANSACTIONS.c.ref == ref)).mappings().first()
            if row is None or (settlement_id is not None and row["institution_code"] != institution_code):
                return None
            undone = conn.execute(select(TRANSACTIONS.c.kind).where(
                TRANSACTIONS.c.original_ref == row["ref"],
                TRANSACTIONS.c.kind.in_([TransactionKind.REVOKE.value, TransactionKind.REVERSAL.value]))).scalar()
        return _transaction_result(row, undone, record)


def _transaction_result(row: Any, undone: str | None, record: Any) -> pb.TransactionResult:
    result = pb.TransactionResult(message_id=row["message_id"] or "", settlement_id=row["ref"],
                                  original_status=pb.STATUS_CODE_OK)
    kind = row["kind"]
    if kind == TransactionKind.SETTLEMENT.value:
        result.state = {TransactionKind.REVOKE.value: pb.TRANSACTION_STATE_REVOKED,
                        TransactionKind.REVERSAL.value: pb.TRANSACTION_STATE_REVERSED}.get(
            undone or "", pb.TRANSACTION_STATE_SETTLED)
    elif kind == TransactionKind.REVOKE.value:
        result.state = pb.TRANSACTION_STATE_REVOKED
    else:
        result.state = pb.TRANSACTION_STATE_REVERSED
    sign = -1 if row["total_fen"] < 0 else 1
    fill_split(result.split, FundSplit(sign * row["total_fen"], sign * row["pooled_fund_fen"],
                                       sign * row["current_year_fen"], sign * row["prior_years_fen"],
                                       sign * row["cash_fen"], sign * row["deductible_counted_fen"]))
    if row["recorded_at"] is not None:
        result.recorded_at.FromDatetime(row["recorded_at"])
    if record is not None:
        result.message_id = record["message_id"]
    return result
