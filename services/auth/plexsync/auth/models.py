"""SQLAlchemy models of the ``auth`` schema: client identity, accounts, tokens, servers, connections, PINs."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from plexsync.common.audit_schema import AuditColumns
from plexsync.common.db import schema_metadata
from plexsync.common.outbox import OutboxColumns
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA = "auth"


class ServerStatus(StrEnum):
    UNKNOWN = "unknown"
    ONLINE = "online"
    OFFLINE = "offline"
    VANISHED = "vanished"
    TOKEN_INVALID = "token_invalid"


class ServerSource(StrEnum):
    PLEX_TV = "plex_tv"
    MANUAL = "manual"
    GDM = "gdm"


class PinStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Base(DeclarativeBase):
    metadata = schema_metadata(SCHEMA)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class ClientIdentity(Base):
    """The X-Plex-Client-Identifier this installation presents, generated once."""

    __tablename__ = "client_identity"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    client_identifier: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = _now()


class Token(Base):
    """An encrypted Plex token. Associated data = the row id, so a ciphertext is only valid in its own row."""

    __tablename__ = "tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    key_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    nonce: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    invalid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class Account(Base):
    """A plex.tv account that logged in with a PIN."""

    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    plex_id: Mapped[int | None] = mapped_column(BigInteger)
    plex_uuid: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    username: Mapped[str] = mapped_column(Text, nullable=False, default="")
    email: Mapped[str] = mapped_column(Text, nullable=False, default="")
    title: Mapped[str] = mapped_column(Text, nullable=False, default="")
    thumb_url: Mapped[str] = mapped_column(Text, nullable=False, default="")
    token_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tokens.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class Server(Base):
    """A Plex Media Server. Vanished servers are kept (status VANISHED), never deleted by discovery."""

    __tablename__ = "servers"
    __table_args__ = (Index("ix_servers_created_at_id", "created_at", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    machine_identifier: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(Text, nullable=False, default="")
    version: Mapped[str] = mapped_column(Text, nullable=False, default="")
    platform: Mapped[str] = mapped_column(Text, nullable=False, default="")
    owned: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False, default=ServerStatus.UNKNOWN.value)
    status_reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"), index=True)
    token_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tokens.id", ondelete="SET NULL"))
    preferred_uri: Mapped[str | None] = mapped_column(Text)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )

    connections: Mapped[list[Connection]] = relationship(
        back_populates="server",
        cascade="all, delete-orphan",
        lazy="selectin",
        order_by="Connection.created_at, Connection.uri",
    )


class Connection(Base):
    """One way to reach a server, with the result of its last probe."""

    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("server_id", "uri"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    server_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("servers.id", ondelete="CASCADE"), nullable=False)
    uri: Mapped[str] = mapped_column(Text, nullable=False)
    protocol: Mapped[str] = mapped_column(String(16), nullable=False, default="http")
    address: Mapped[str] = mapped_column(Text, nullable=False, default="")
    port: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    ipv6: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    reachable: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    last_check_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = _now()

    server: Mapped[Server] = relationship(back_populates="connections")


class PinLogin(Base):
    """A PIN login in progress (or finished), so Complete/Cancel work across calls and replicas."""

    __tablename__ = "pin_logins"

    pin_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    code: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=PinStatus.PENDING.value)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _now()


class OutboxRow(OutboxColumns, Base):
    """Events waiting to be published to NATS (plexsync.common.outbox), in id order."""


class AuditRow(AuditColumns, Base):
    """Who changed or was refused what (plexsync.common.audit); written and read as SQL by AuditLog."""
