"""Alembic environment of the catalog schema (version table inside the schema)."""

from __future__ import annotations

from alembic import context
from plexsync.catalog.migrate import run_migrations_online
from plexsync.catalog.models import SCHEMA, Base

if context.is_offline_mode():
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        version_table_schema=SCHEMA,
        include_schemas=True,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online(context)
