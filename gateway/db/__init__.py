"""Database bootstrap: the engine, the schema's metadata and its Alembic migrations."""
