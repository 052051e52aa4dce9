"""Ningbo medical-settlement gateway."""

__version__ = "0.2.0"
