"""Running the scanner's Alembic migrations: at start-up (under an advisory lock, so replicas do not race)
and from the `python -m plexsync.scanner migrate` CLI."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from plexsync.common.db import sqlalchemy_url
from plexsync.scanner.models import SCHEMA, Base
from sqlalchemy import Connection, create_engine, pool, text

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
# pg_advisory_lock key: "plexsync scanner migrations" (any constant shared by all replicas).
MIGRATION_LOCK_KEY = 0x706C_6578_7363_6E01
# Objects created by migrations but not described by the models (optional extension indexes).
UNMODELLED_INDEXES: frozenset[str] = frozenset()


def alembic_config(database_url: str) -> Config:
    config = Config(str(PACKAGE_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(PACKAGE_DIR / "migrations"))
    url = sqlalchemy_url(database_url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    if type_ == "table" and getattr(obj, "schema", None) != SCHEMA:
        return False
    return not (type_ == "index" and name in UNMODELLED_INDEXES)


def _include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    if type_ == "schema":
        return name == SCHEMA
    return True


def configure_context(context: Any, connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table_schema=SCHEMA,
        include_schemas=True,
        include_object=_include_object,
        include_name=_include_name,
        compare_type=True,
    )


def run_migrations_online(context: Any) -> None:
    """Alembic env.py body: use the caller's locked connection if given, else connect."""
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is not None:
        configure_context(context, connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        conn.commit()
        configure_context(context, conn)
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()
    engine.dispose()


def migrate(database_url: str, action: str = "upgrade", revision: str = "head") -> None:
    """Upgrade or downgrade the scanner schema to `revision`, holding the migration advisory lock."""
    if action not in {"upgrade", "downgrade"}:
        raise ValueError(f"action must be 'upgrade' or 'downgrade', not {action!r}")
    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
            try:
                conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
                conn.commit()
                config = alembic_config(database_url)
                config.attributes["connection"] = conn
                if action == "upgrade":
                    command.upgrade(config, revision)
                else:
                    command.downgrade(config, revision)
                conn.commit()
                log.info("scanner migrations done", extra={"action": action, "revision": revision})
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()
