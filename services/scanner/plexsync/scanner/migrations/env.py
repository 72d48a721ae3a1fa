"""Alembic environment of the scanner schema (version table inside the schema)."""

from __future__ import annotations

from alembic import context
from plexsync.scanner.migrate import run_migrations_online
from plexsync.scanner.models import SCHEMA, Base

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
