"""Alembic environment of the auth schema (version table inside the schema)."""

from alembic import context
from plexsync.auth.migrate import MIGRATIONS

MIGRATIONS.run_env(context)
