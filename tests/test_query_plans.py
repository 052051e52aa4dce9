"""No statement a terminal's request runs scans a table that grows with the ledger or the registry.

A scan costs nothing on a test's ledger and everything on a year's: 10 million request records read for
every batch. Every statement of a day at the counter (read, pre-settle, settle, balance, revoke, reverse,
query) is captured and SQLite's plan for it checked.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Engine, event

from gateway.protocol.messages import pb
from tests.test_adapter import Harness
from tests.test_settlement_flow import Counter

OK = pb.STATUS_CODE_OK
GROWING = {"ledger_transactions", "ledger_entries", "request_records", "year_totals", "ledger_accounts",
           "persons", "cards", "filings", "lookup_problems", "opening_balances"}


def _scans(engine: Engine, statement: str, parameters: Any) -> list[str]:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
        plan = [row[-1] for row in cursor.fetchall()]
    finally:
        raw.close()
    return [line for line in plan if (m := re.match(r"SCAN (?:TABLE )?(\w+)", line)) and m.group(1) in GROWING]


def test_a_day_at_the_counter_uses_indexes_only(demo_engine: Engine) -> None:
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            statements.append((statement, parameters[0] if executemany else parameters))

    event.listen(demo_engine, "before_cursor_execute", capture)
    try:
        harness = Harness(demo_engine)
        counter = Counter(harness, "H33020300001-01", "N00000001")
        assert counter.run("read_card").status == OK
        assert counter.run("query_balance").status == OK
        assert counter.run("pre_settle", medical_type=11, total_fen=12_345).status == OK
        settled = counter.run("settle", "s-1", medical_type=11, total_fen=12_345)
        assert settled.status == OK
        assert counter.run("settle", "s-1", medical_type=11, total_fen=12_345).status == OK  # a retry
        assert counter.run("query_transaction", message_id="s-1").status == OK
        assert counter.run("revoke", settlement_id=settled.settle.settlement_id).status == OK
        assert counter.run("settle", "s-2", medical_type=11, total_fen=1_000).status == OK
        assert counter.run("reverse", original_message_id="s-2").status == OK
        elsewhere = Counter(harness, "H33020300001-02", "Z00000101")  # filed holder from another city: PIN
        assert elsewhere.run("settle", medical_type=11, total_fen=1_000, pin="000000").status == OK
    finally:
        event.remove(demo_engine, "before_cursor_execute", capture)
    assert len(statements) > 10
    scanning = {statement: scans for statement, parameters in statements
                if (scans := _scans(demo_engine, statement, parameters))}
    assert not scanning, "\n\n".join(f"{scans}: {statement}" for statement, scans in scanning.items())
