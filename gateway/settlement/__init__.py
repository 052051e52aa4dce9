"""Settlement rules: pure functions over facts and versioned policy data (the rules issue)."""
