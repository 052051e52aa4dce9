"""Reading the ledger (blocking; the server runs these in its database thread pool). Only the writer writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from gateway.ledger.models import (
    RequestOutcome,
    TransactionKind,
)
from gateway.ledger.responses import fill_split
from gateway.ledger.tables import RECORDS, TRANSACTIONS
from gateway.protocol.messages import pb
from gateway.settlement.split import FundSplit


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
