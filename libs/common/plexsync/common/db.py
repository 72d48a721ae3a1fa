"""Database engine set-up shared by the services that own a PostgreSQL schema."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import MetaData, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger(__name__)

# Constraint and index names every service's migrations rely on (Alembic compares by name).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def schema_metadata(schema: str) -> MetaData:
    """MetaData for a service's own schema, with the shared naming convention."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def sqlalchemy_url(database_url: str) -> URL:
    """Normalise postgres:// and postgresql:// URLs to the psycopg 3 driver."""
    url = make_url(database_url)
    if url.drivername in {"postgres", "postgresql"}:
        url = url.set(drivername="postgresql+psycopg")
    return url


def libpq_url(database_url: str) -> str:
    """The same database as a URL psycopg (libpq) understands: no SQLAlchemy driver suffix."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_engine(database_url: str, *, schema: str, pool_size: int = 10, application_name: str = "") -> AsyncEngine:
    """An async engine whose connections use `schema` first on the search path."""
    url = sqlalchemy_url(database_url)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={
            "options": f"-c search_path={schema},public",
            "application_name": application_name or f"plexsync-{schema}",
        },
    )
    return engine


async def wait_for_database(engine: AsyncEngine, *, attempts: int = 30, delay: float = 0.5) -> None:
    """Retry until PostgreSQL answers, with backoff; raise the last error if it never does."""
    for attempt in range(1, attempts + 1):
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning("database not ready, retrying", extra={"attempt": attempt, "error": type(exc).__name__})
            await asyncio.sleep(min(delay * attempt, 5.0))
