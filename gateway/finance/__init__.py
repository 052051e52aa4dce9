"""Finance: reconciliation, the center's statement, the report, day close, payouts."""
