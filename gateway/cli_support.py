"""What every database command of the `gateway` CLI says the same way."""

from __future__ import annotations

import sys

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.db.engine import redact_url
from gateway.db.migrate import current_revision, head_revision


def schema_is_current(engine: Engine) -> bool:
    """True, or False after telling the operator what to run."""
    if current_revision(engine) == head_revision():
        return True
    print("gateway: the database schema is not current: run `gateway db upgrade` first", file=sys.stderr)
    return False


def database_error(url: str, exc: SQLAlchemyError) -> str:
    """The message for a database failure: which database (without its password) and what the driver said."""
    cause = getattr(exc, "orig", None) or exc
    return f"gateway: database error on {redact_url(url)}: {exc.__class__.__name__}: {cause}"
