"""Catalog migrations: upgrade from empty, no drift from the models, downgrade to base, concurrent starts."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from plexsync.catalog.migrate import MIGRATIONS
from plexsync.catalog.models import SCHEMA, Base
from plexsync.common.db import libpq_url, sqlalchemy_url
from sqlalchemy import create_engine, pool


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "PLEXSYNC_LOG_FORMAT": "text"}
    return subprocess.run(
        [sys.executable, "-m", "plexsync.catalog", "migrate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def tables(database_url: str) -> set[str]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (SCHEMA,)).fetchall()
    return {r[0] for r in rows}


def test_upgrade_matches_models_and_downgrade_empties(database_url: str) -> None:
    # Two replicas migrating at once: the advisory lock serialises them and both succeed.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "plexsync.catalog", "migrate", "upgrade", "head"],
            env={**os.environ, "DATABASE_URL": database_url},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    assert {"items", "libraries", "credits", "people", "media_streams", "scan_seen", "alembic_version"} <= tables(
        database_url
    )

    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts=MIGRATIONS.comparison_options(),
        )
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()

    down = cli(database_url, "downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert tables(database_url) == {"alembic_version"}
    up = cli(database_url, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    assert "items" in tables(database_url)


def test_cli_needs_a_database_and_a_target() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "plexsync.catalog", "migrate", "upgrade", "head"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "DATABASE_URL" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "plexsync.catalog", "migrate", "downgrade"],
        env={**env, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "target revision" in result.stderr
