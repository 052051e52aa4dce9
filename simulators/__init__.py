"""Simulators: virtual cards and terminals for development, tests and load."""
