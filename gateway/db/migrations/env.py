"""Alembic environment: runs on the connection `gateway.db.migrate` hands it.

The migrations are written by hand and need no metadata to run. Autogenerate and the schema test compare the
models with the migrations: they import the models (gateway.ledger.models, gateway.registry.models,
gateway.finance.models), which register their tables on `Base.metadata`; the database layer itself imports none
of them.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from gateway.db.base import Base

target_metadata = Base.metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.begin() as own_connection:
        context.configure(connection=own_connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
