"""What the ledger raises when it finds itself about to break a rule it must always keep."""

from __future__ import annotations


class LedgerInvariantBroken(RuntimeError):
    """A bug: the ledger was about to write what must never be written (unbalanced entries, a personal account
    below zero, a settlement without its split). Raised before anything is written; the writer rolls the batch
    back and writes its intents alone, so that only the intent that met it is answered INTERNAL_ERROR."""
