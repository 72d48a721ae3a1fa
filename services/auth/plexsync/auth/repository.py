"""Database access for auth: sessions, the token vault, the client identity, migrations and key rotation."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from plexsync.auth.crypto import Sealed, TokenCipher, TokenDecryptionError, token_aad
from plexsync.auth.migrate import MIGRATIONS
from plexsync.auth.models import ClientIdentity, Token
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)


def run_migrations(database_url: str) -> None:
    """Upgrade the auth schema to head (blocking; run it in a thread from async code)."""
    MIGRATIONS.migrate(database_url)


class Vault:
    """Seals and opens tokens in the ``tokens`` table; plaintext never leaves this process."""

    def __init__(self, cipher: TokenCipher) -> None:
        self.cipher = cipher

    def store(self, session: AsyncSession, plaintext: str) -> Token:
        """A new token row (added to the session) holding ``plaintext`` sealed under the primary key."""
        token_id = uuid.uuid4()
        sealed = self.cipher.encrypt(plaintext, token_aad(str(token_id)))
        row = Token(id=token_id, key_id=sealed.key_id, nonce=sealed.nonce, ciphertext=sealed.ciphertext)
        session.add(row)
        return row

    def reseal(self, row: Token, plaintext: str) -> None:
        """Put a new value (or the same value under the primary key) into an existing row; clears invalidity."""
        sealed = self.cipher.encrypt(plaintext, token_aad(str(row.id)))
        row.key_id, row.nonce, row.ciphertext = sealed.key_id, sealed.nonce, sealed.ciphertext
        row.invalid_at = None
        row.updated_at = datetime.now(UTC)

    def open(self, row: Token) -> str:
        return self.cipher.decrypt(Sealed(row.key_id, row.nonce, row.ciphertext), token_aad(str(row.id)))

    async def verify_all(self, sessions: async_sessionmaker[AsyncSession]) -> int:
        """Decrypt every stored token; raise TokenDecryptionError (a start-up failure) if any cannot be."""
        async with sessions() as session:
            rows = (await session.scalars(select(Token))).all()
        unknown = sorted({row.key_id for row in rows} - set(self.cipher.key_ids))
        if unknown:
            raise TokenDecryptionError(
                f"{sum(r.key_id in unknown for r in rows)} stored token(s) are encrypted under key id(s) "
                f"{', '.join(map(repr, unknown))}, which PLEXSYNC_TOKEN_KEYS does not contain (configured: "
                f"{', '.join(map(repr, self.cipher.key_ids))}); add the missing key(s) back after the primary one, "
                "or the tokens are lost and users must log in again"
            )
        for row in rows:
            self.open(row)
        return len(rows)

    async def rotate(self, sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
        """Re-encrypt every token not under the primary key, in one transaction. Returns (rotated, total)."""
        async with sessions() as session, session.begin():
            rows = (await session.scalars(select(Token).with_for_update())).all()
            rotated = 0
            for row in rows:
                plaintext = self.open(row)
                if self.cipher.needs_rotation(Sealed(row.key_id, row.nonce, row.ciphertext)):
                    self.reseal(row, plaintext)
                    rotated += 1
        return rotated, len(rows)


async def client_identifier(sessions: async_sessionmaker[AsyncSession]) -> str:
    """The installation's X-Plex-Client-Identifier, created on first start (safe with concurrent replicas)."""
    async with sessions() as session, session.begin():
        await session.execute(
            insert(ClientIdentity)
            .values(id=1, client_identifier=f"plexsync-{uuid.uuid4()}")
            .on_conflict_do_nothing(index_elements=["id"])
        )
        value = await session.scalar(select(ClientIdentity.client_identifier).where(ClientIdentity.id == 1))
    assert value is not None
    return value


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessions() as session, session.begin():
        yield session


async def migrate(database_url: str) -> None:
    await asyncio.to_thread(run_migrations, database_url)
