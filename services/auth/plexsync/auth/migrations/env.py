"""Alembic environment for the auth schema; a PostgreSQL advisory lock serialises concurrent replicas."""

from __future__ import annotations

import os

from alembic import context
from plexsync.auth.models import SCHEMA, Base
from plexsync.common.db import sqlalchemy_url
from sqlalchemy import create_engine, pool, text

config = context.config
_LOCK = "SELECT pg_advisory_lock(hashtext('plexsync.auth.migrations'))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext('plexsync.auth.migrations'))"


def _url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL", "")
    if not url:
        raise RuntimeError("DATABASE_URL is not set")
    return str(url)


def run_offline() -> None:
    context.configure(
        url=sqlalchemy_url(_url()).render_as_string(hide_password=False),
        target_metadata=Base.metadata,
        version_table_schema=SCHEMA,
        include_schemas=True,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = create_engine(sqlalchemy_url(_url()), poolclass=pool.NullPool)
    with engine.connect() as conn:
        conn.execute(text(_LOCK))
        try:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
            conn.commit()
            context.configure(
                connection=conn,
                target_metadata=Base.metadata,
                version_table_schema=SCHEMA,
                include_schemas=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            conn.commit()
        finally:
            conn.execute(text(_UNLOCK))
            conn.commit()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
