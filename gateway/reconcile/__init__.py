"""Finance: reconciling a day of the ledger against the insurance center's statement, and closing days."""
