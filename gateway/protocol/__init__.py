"""The terminal wire protocol: framing, the sans-IO session and the status catalogue."""
