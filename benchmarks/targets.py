"""The figures to reach (DESIGN.md §4, which issue 15's table repeats): one place for both generated tables."""

from __future__ import annotations

SETTLE_ONLY_RATIO_TARGET = 0.33  # the Settle exchange alone ÷ heartbeat requests/s
COUNTER_FLOW_RATIO_TARGET = 0.14  # the whole counter flow (five exchanges) ÷ heartbeat requests/s
LEDGER_FLOOR_RATIO_TARGET = 0.5  # the ledger alone ÷ the same database's floor, batches of LEDGER_BATCH
LEDGER_BATCH = 100
P99_TARGET_MS = 10.0  # Settle p99 at P99_TERMINALS connected terminals, half the peak
P99_TERMINALS = 1000
TLS_RATIO_TARGET = 0.7  # heartbeat over TLS ÷ over plain TCP
IDLE_KB_TARGET = 5.0  # memory per idle connection at IDLE_CONNECTIONS, TLS included
IDLE_CONNECTIONS = 10_000
LARGE_LEDGER_SLOWDOWN_LIMIT = 0.10  # settlements/s on a 10-million-settlement ledger vs the empty one
PROCESSES_RATIO_TARGET = 1.6  # two gateway processes ÷ one, where cores allow
RECONCILE_SECONDS_TARGET = 10.0  # reconciling one business day of RECONCILE_SETTLEMENTS settlements
RECONCILE_SETTLEMENTS = 1_000_000
