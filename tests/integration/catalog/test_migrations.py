"""Catalog migrations: upgrade from empty, no drift from the models, downgrade to base, concurrent starts."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from plexsync.catalog.migrate import MIGRATIONS, migrate
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


def test_value_lists_move_into_items_and_back(database_url: str) -> None:
    """Migration 0004 moves tags, guids and artwork rows into columns of their item, in order; its downgrade
    moves them back."""
    migrate(database_url, "upgrade", "head")
    migrate(database_url, "downgrade", "0003")
    item = uuid.uuid4()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute("SET search_path TO catalog")
        source, library = uuid.uuid4(), uuid.uuid4()
        conn.execute("INSERT INTO media_sources (id, server_id) VALUES (%s, 'srv-0004')", (source,))
        conn.execute(
            "INSERT INTO libraries (id, media_source_id, plex_key, kind) VALUES (%s, %s, '1', 2)", (library, source)
        )
        conn.execute(
            "INSERT INTO items (id, library_id, kind, rating_key, content_hash) VALUES (%s, %s, 2, 'a', '\\x00')",
            (item, library),
        )
        conn.execute(
            "INSERT INTO item_tags (item_id, kind, name, position) VALUES "
            "(%(i)s, 2, 'Drama', 1), (%(i)s, 2, 'Comedy', 0), (%(i)s, 5, 'H\"B\\O', 0), (%(i)s, 1, 'Warner', 0)",
            {"i": item},
        )
        conn.execute(
            "INSERT INTO item_guids (item_id, uri, provider, external_id, position) VALUES "
            "(%(i)s, 'tmdb://9', 'tmdb', '9', 1), (%(i)s, 'imdb://tt1', 'imdb', 'tt1', 0)",
            {"i": item},
        )
        conn.execute(
            "INSERT INTO artwork (item_id, kind, url, source, source_updated_at, position) VALUES "
            "(%(i)s, 1, '/thumb', 'plex', '2023-11-14 22:13:20.25+00', 0), (%(i)s, 2, '/art', '', NULL, 1)",
            {"i": item},
        )
    migrate(database_url, "upgrade", "head")
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute(
            "SELECT genres, studios, labels, countries, networks, guids, artwork FROM catalog.items WHERE id = %s",
            (item,),
        ).fetchone()
    assert row is not None
    assert row[:5] == (["Comedy", "Drama"], ["Warner"], [], [], ['H"B\\O'])
    assert row[5] == [
        {"uri": "imdb://tt1", "provider": "imdb", "external_id": "tt1"},
        {"uri": "tmdb://9", "provider": "tmdb", "external_id": "9"},
    ]
    assert row[6] == [
        {"kind": 1, "url": "/thumb", "source": "plex", "updated_at": 1_700_000_000, "updated_nanos": 250_000_000},
        {"kind": 2, "url": "/art", "source": "", "updated_at": None},
    ]

    migrate(database_url, "downgrade", "0003")
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute("SET search_path TO catalog")
        tags = conn.execute("SELECT kind, name, position FROM item_tags ORDER BY kind, position").fetchall()
        guids = conn.execute("SELECT uri, provider, external_id, position FROM item_guids ORDER BY position").fetchall()
        art = conn.execute(
            "SELECT kind, url, source, extract(epoch FROM source_updated_at), position FROM artwork ORDER BY position"
        ).fetchall()
    assert tags == [(1, "Warner", 0), (2, "Comedy", 0), (2, "Drama", 1), (5, 'H"B\\O', 0)]
    assert guids == [("imdb://tt1", "imdb", "tt1", 0), ("tmdb://9", "tmdb", "9", 1)]
    assert [(k, u, s, float(t) if t is not None else None, p) for k, u, s, t, p in art] == [
        (1, "/thumb", "plex", 1_700_000_000.25, 0),
        (2, "/art", "", None, 1),
    ]
    migrate(database_url, "upgrade", "head")
