"""The registry: institutions and terminals (and, later, insured persons and cards)."""
