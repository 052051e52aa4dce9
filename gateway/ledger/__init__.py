"""The double-entry ledger: the only place that writes money (the ledger issue)."""
