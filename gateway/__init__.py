"""Ningbo medical-settlement gateway."""

# The release, in one place: pyproject.toml takes it from here (setuptools dynamic version), `gateway --version`
# prints it, and docs/protocol.md names it (tests/test_docs.py keeps the three in step).
__version__ = "0.3.0"
