"""Reading the ledger (blocking; the server runs these in its database thread pool). Only the writer writes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, bindparam, select

from gateway.ledger.models import RequestOutcome, TransactionKind
from gateway.ledger.outcomes import TransactionFound, TransactionState
from gateway.ledger.records import Recorded
from gateway.ledger.tables import RECORDS, TRANSACTIONS
from gateway.ledger.transactions import split_of, undone_by
from gateway.protocol.status import StatusCode

# Built once: the request path runs it before a card read or a VERIFY (gateway.serve.handlers).
_RECORD = select(RECORDS.c.outcome, RECORDS.c.content_hash, RECORDS.c.recorded_outcome).where(
    RECORDS.c.terminal_id == bindparam("terminal_id"), RECORDS.c.message_id == bindparam("message_id"))
_STATES = {TransactionKind.REVOKE.value: TransactionState.REVOKED,
           TransactionKind.REVERSAL.value: TransactionState.REVERSED}


class LedgerReader:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def find_request(self, terminal_id: str, message_id: str) -> Recorded | None:
        """What the ledger holds under the key, if anything."""
        with self._engine.connect() as conn:
            row = conn.execute(_RECORD, {"terminal_id": terminal_id, "message_id": message_id}).mappings().first()
        return Recorded.from_row(row) if row is not None else None

    def query_transaction(self, terminal_id: str, institution_code: str, message_id: str | None,
                          settlement_id: str | None) -> TransactionFound | None:
        """A terminal's own request by message id, or a settlement of its institution by id."""
        with self._engine.connect() as conn:
            record = None
            if message_id is not None:
                record = conn.execute(select(RECORDS).where(RECORDS.c.terminal_id == terminal_id,
                                                            RECORDS.c.message_id == message_id)).mappings().first()
                if record is None:
                    return None
                if record["outcome"] == RequestOutcome.TOMBSTONE.value:
                    return TransactionFound(message_id, TransactionState.REVERSED, None)
                ref = record["transaction_ref"]
                if ref is None:  # a Reverse that found nothing to undo
                    return TransactionFound(message_id, TransactionState.REVERSED, StatusCode.STATUS_CODE_OK)
            else:
                ref = settlement_id
            row = conn.execute(select(TRANSACTIONS).where(TRANSACTIONS.c.ref == ref)).mappings().first()
            if row is None or (settlement_id is not None and row["institution_code"] != institution_code):
                return None
            undoing = undone_by(conn, [row["ref"]]).get(row["ref"])
        return _found(row, undoing.kind if undoing is not None else None, record)


def _found(row: Any, undone: str | None, record: Any) -> TransactionFound:
    kind = row["kind"]
    if kind == TransactionKind.SETTLEMENT.value:
        state = _STATES.get(undone or "", TransactionState.SETTLED)
    elif kind == TransactionKind.REVOKE.value:
        state = TransactionState.REVOKED
    else:
        state = TransactionState.REVERSED
    split = split_of(row)
    message_id = record["message_id"] if record is not None else row["message_id"] or ""
    return TransactionFound(message_id, state, StatusCode.STATUS_CODE_OK, row["ref"], split, row["recorded_at"])
