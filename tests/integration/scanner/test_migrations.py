"""The scanner's Alembic migrations create exactly what its models describe, and go down and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from plexsync.common.db import sqlalchemy_url
from plexsync.scanner.migrate import MIGRATIONS, migrate
from plexsync.scanner.models import Base
from sqlalchemy import create_engine


def test_migrations_match_the_models_and_downgrade(database_url: str) -> None:
    migrate(database_url)
    migrate(database_url, "downgrade", "0001")
    migrate(database_url)
    migrate(database_url)
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts=MIGRATIONS.comparison_options())
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
