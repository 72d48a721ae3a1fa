"""Alembic environment of the scheduler schema (version table inside the schema)."""

from alembic import context
from plexsync.scheduler.migrate import MIGRATIONS

MIGRATIONS.run_env(context)
