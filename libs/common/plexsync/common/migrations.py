"""Alembic migrations of one service's PostgreSQL schema, run the same way by every service.

Each service keeps its own schema, models and `migrations/` folder (with `alembic.ini` beside it) and
describes them with a `SchemaMigrations`; its `env.py` is one call to `run_env`, and start-up / the
`python -m plexsync.<service> migrate` command call `migrate`, which holds a PostgreSQL advisory lock so
replicas starting together do not race. Where a Job migrates instead (Kubernetes, `PLEXSYNC_MIGRATE_ON_START=false`),
start-up calls `prepare`, which only checks the schema is at the code's head and refuses to start when it is behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from plexsync.common.db import sqlalchemy_url
from sqlalchemy import Connection, MetaData, create_engine, pool, text

log = logging.getLogger(__name__)


class SchemaBehindError(RuntimeError):
    """The database schema is older than this code needs and start-up was told not to migrate it."""


@dataclass(frozen=True)
class SchemaMigrations:
    """A service's schema: its name, its models' metadata and the package folder holding alembic.ini."""

    schema: str
    metadata: MetaData
    package_dir: Path
    # Objects migrations create that the models do not describe (left out of autogenerate comparisons).
    unmodelled_indexes: frozenset[str] = field(default_factory=frozenset)

    @property
    def lock_key(self) -> str:
        return f"plexsync.{self.schema}.migrations"

    def config(self, database_url: str) -> Config:
        config = Config(str(self.package_dir / "alembic.ini"))
        config.set_main_option("script_location", str(self.package_dir / "migrations"))
        url = sqlalchemy_url(database_url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        return config

    def include_object(self, obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table" and getattr(obj, "schema", None) != self.schema:
            return False
        return not (type_ == "index" and name in self.unmodelled_indexes)

    def include_name(self, name: str | None, type_: str, parent_names: Any) -> bool:
        return name == self.schema if type_ == "schema" else True

    def comparison_options(self) -> dict[str, Any]:
        """MigrationContext options for comparing the database with the models (drift checks)."""
        return {
            "include_schemas": True,
            "include_object": self.include_object,
            "include_name": self.include_name,
            "version_table_schema": self.schema,
            "compare_type": True,
        }

    def run_env(self, context: Any) -> None:
        """The body of the service's Alembic env.py."""
        if context.is_offline_mode():
            context.configure(
                url=context.config.get_main_option("sqlalchemy.url"),
                target_metadata=self.metadata,
                version_table_schema=self.schema,
                include_schemas=True,
                literal_binds=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            return
        connection: Connection | None = context.config.attributes.get("connection")
        if connection is not None:
            self._run(context, connection)
            return
        engine = create_engine(context.config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                conn.commit()
                self._run(context, conn)
                conn.commit()
        finally:
            engine.dispose()

    def _run(self, context: Any, connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=self.metadata,
            **{k: v for k, v in self.comparison_options().items()},
        )
        with context.begin_transaction():
            context.run_migrations()

    def migrate(self, database_url: str, action: str = "upgrade", revision: str = "head") -> None:
        """Upgrade or downgrade the schema to `revision` while holding the schema's advisory lock."""
        if action not in {"upgrade", "downgrade"}:
            raise ValueError(f"action must be 'upgrade' or 'downgrade', not {action!r}")
        engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(hashtext(:key))"), {"key": self.lock_key})
                conn.commit()
                try:
                    conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                    conn.commit()
                    config = self.config(database_url)
                    config.attributes["connection"] = conn
                    if action == "upgrade":
                        command.upgrade(config, revision)
                    else:
                        command.downgrade(config, revision)
                    conn.commit()
                    log.info("migrations done", extra={"schema": self.schema, "action": action, "revision": revision})
                finally:
                    conn.rollback()
                    conn.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": self.lock_key})
                    conn.commit()
        finally:
            engine.dispose()

    def head_revision(self) -> str:
        """The newest revision this code's migrations know."""
        head = ScriptDirectory.from_config(self.config("postgresql://localhost/unused")).get_current_head()
        assert head is not None, f"{self.schema}: no migrations"
        return head

    def current_revision(self, database_url: str) -> str | None:
        """The revision the database's schema is at (None: never migrated)."""
        engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
        try:
            with engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"version_table_schema": self.schema})
                return context.get_current_revision()
        finally:
            engine.dispose()

    def check_current(self, database_url: str) -> None:
        """Raise SchemaBehindError, saying what to run, when the schema is older than this code's head.

        A revision this code does not know is newer (the code was rolled back past a migration, which plexsync's
        migrations allow: they only add): the service starts and logs it.
        """
        head = self.head_revision()
        current = self.current_revision(database_url)
        if current == head:
            return
        script = ScriptDirectory.from_config(self.config(database_url))
        known = {rev.revision for rev in script.walk_revisions()}
        if current is not None and current not in known:
            log.warning(
                "schema is newer than this code",
                extra={"schema": self.schema, "revision": current, "code_head": head},
            )
            return
        raise SchemaBehindError(
            f"the {self.schema} schema is at revision {current or 'none (empty)'} but this code needs {head}; "
            f"run the migrations first (`python -m plexsync.{self.schema} migrate`, the {self.schema}-migrate Job "
            "in Kubernetes) or set PLEXSYNC_MIGRATE_ON_START=true"
        )

    def prepare(self, database_url: str, migrate_on_start: bool) -> None:
        """At start-up: upgrade the schema to head, or (when a Job migrates) check that it is there."""
        if migrate_on_start:
            self.migrate(database_url)
        else:
            self.check_current(database_url)
