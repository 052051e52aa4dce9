"""Card readers: the only code that speaks APDUs (the reader issue builds it)."""
