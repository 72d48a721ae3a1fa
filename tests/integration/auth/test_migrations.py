"""The Alembic migrations create exactly what the models describe, and running them twice is harmless."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from plexsync.auth.migrate import MIGRATIONS
from plexsync.auth.models import Base
from plexsync.auth.repository import run_migrations
from plexsync.common.db import sqlalchemy_url
from sqlalchemy import create_engine


def test_migrations_match_the_models(database_url: str) -> None:
    run_migrations(database_url)
    run_migrations(database_url)
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts=MIGRATIONS.comparison_options())
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
