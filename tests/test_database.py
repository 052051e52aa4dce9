"""Database bootstrap: engines, durability settings, migrations that match the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

import gateway.finance.models
import gateway.ledger.models
import gateway.registry.models  # noqa: F401  (and the registry's)
from gateway.db import migrate
from gateway.db.base import Base
from gateway.db.engine import DatabaseUrlError, make_engine, normalise_url, redact_url
from gateway.db.migrate import current_revision, head_revision, upgrade


def test_migrations_create_exactly_the_models(migrated_engine: Engine) -> None:
    with migrated_engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    assert current_revision(migrated_engine) == head_revision()


def test_upgrading_twice_is_harmless(migrated_engine: Engine) -> None:
    upgrade(migrated_engine)
    assert current_revision(migrated_engine) == head_revision()


def test_an_installation_without_its_migrations_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "versions").mkdir()
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", tmp_path)
    with pytest.raises(RuntimeError, match=r"no migrations in .*: this installation of the gateway is incomplete"):
        head_revision()


def test_sqlite_runs_in_wal_mode_with_full_fsync(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, busy_timeout_ms=1234)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 1234
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///var/gateway.db", "sqlite:///var/gateway.db"),
    ],
)
def test_database_urls_are_normalised_to_supported_drivers(given: str, expected: str) -> None:
    assert normalise_url(given) == expected


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url", "oracle://x"])
def test_unsupported_databases_are_refused_clearly(url: str) -> None:
    with pytest.raises(DatabaseUrlError):
        normalise_url(url)


def test_passwords_never_appear_in_printed_urls() -> None:
    assert "hunter2" not in redact_url("postgresql+psycopg://u:hunter2@h/db")


@pytest.mark.postgres
def test_postgresql_is_really_postgresql(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    upgrade(engine)
    with engine.connect() as connection:
        assert "PostgreSQL" in str(connection.execute(text("SELECT version()")).scalar())
        tables = set(connection.execute(text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )).scalars())
    assert {"institutions", "terminals", "alembic_version"} <= tables
    engine.dispose()
