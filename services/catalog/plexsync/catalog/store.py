"""Access to PostgreSQL: the shared async SQLAlchemy engine, and psycopg cursors for set-based SQL.

Hot paths (WriteItems, GetItemEtags, reads of full items) use the psycopg connection under the engine's pool:
rows of new items go in with COPY (text payloads built in bulk, see `bulk`), diffs of changed items send
binary arrays to `unnest(...)`, so a batch of thousands of rows is a handful of statements.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from plexsync.catalog.models import SCHEMA
from plexsync.common.db import create_engine, wait_for_database
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Column = tuple[str, str]  # (name, PostgreSQL type)


class Store:
    """The catalog's connection pool."""

    def __init__(self, database_url: str, *, pool_size: int = 8) -> None:
        self.engine: AsyncEngine = create_engine(
            database_url, schema=SCHEMA, pool_size=pool_size, application_name="plexsync-catalog"
        )

    async def wait(self) -> None:
        await wait_for_database(self.engine)

    async def dispose(self) -> None:
        await self.engine.dispose()

    @asynccontextmanager
    async def cursor(self) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
        """A cursor inside one transaction: committed when the block ends, rolled back on error."""
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            pg: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
            async with pg.transaction(), pg.cursor() as cur:
                yield cur

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[tuple[psycopg.AsyncCursor[Any], AsyncConnection]]:
        """A cursor and the SQLAlchemy connection it runs on, in one transaction that SQLAlchemy owns: committed
        when the block ends, rolled back on error. What is written on either (an audit record and its outbox
        event through the connection, the change through the cursor) commits or rolls back together."""
        async with self.engine.begin() as conn:
            raw = await conn.get_raw_connection()
            pg: psycopg.AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
            async with pg.cursor() as cur:
                yield cur, conn


async def copy_text(cur: psycopg.AsyncCursor[Any], table: str, cols: Sequence[Column], data: bytes) -> None:
    """COPY a prepared text-format payload (rows of brand-new items, which cannot conflict) in one write."""
    names = ", ".join(f'"{c}"' for c, _ in cols)
    async with cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        await copy.write(memoryview(data))  # sent in slices: of a memoryview, without copying each one


def transpose(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Row tuples to column lists (the parameters of unnest)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]


def insert_sql(table: str, cols: Sequence[Column], *, conflict: Sequence[str] = (), update: bool = True) -> str:
    """INSERT ... SELECT FROM unnest(arrays); with `conflict`, an upsert that rewrites a row only when a
    value differs (unchanged rows keep their tuple, xmin and all)."""
    names = ", ".join(f'"{c}"' for c, _ in cols)
    arrays = ", ".join(f"%b::{t}[]" for _, t in cols)
    sql = f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays})"
    if conflict:
        rest = [c for c, _ in cols if c not in conflict]
        sql += f" ON CONFLICT ({', '.join(conflict)}) "
        if update and rest:
            sets = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in rest)
            old = ", ".join(f'{table}."{c}"' for c in rest)
            new = ", ".join(f'EXCLUDED."{c}"' for c in rest)
            sql += f"DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})"
        else:
            sql += "DO NOTHING"
    return sql


def delete_missing_sql(table: str, key_cols: Sequence[Column]) -> str:
    """Delete rows of the given items whose key is not among the incoming keys (first key column: item_id).

    Parameters: item ids, then one array per key column."""
    arrays = ", ".join(f"%b::{t}[]" for _, t in key_cols)
    names = ", ".join(f"k{i}" for i in range(len(key_cols)))
    match = " AND ".join(f't."{c}" = k.k{i}' for i, (c, _) in enumerate(key_cols))
    return (
        f"DELETE FROM {table} t WHERE t.item_id = ANY(%b::uuid[]) AND NOT EXISTS "
        f"(SELECT 1 FROM unnest({arrays}) AS k({names}) WHERE {match})"
    )
