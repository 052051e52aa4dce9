"""Database bootstrap: engines, the declarative base the models hang off, and the Alembic migrations."""
