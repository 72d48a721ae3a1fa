"""SQLAlchemy 2 typed models of the catalog schema.

Enums are stored as the proto enum numbers (smallint). Relationship tables of an item are keyed by the item
and a natural key (Plex ids, names, URIs), so WriteItems can diff them set-wise without surrogate-id lookups.
An item's short value lists (genres, studios, labels, countries, networks, guids, artwork) are columns of the
item itself: they have no identity of their own, are always read and written with their item, and as rows
they cost a new item more than the item row (see migration 0004).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from plexsync.common.audit_schema import AuditColumns
from plexsync.common.db import schema_metadata
from plexsync.common.outbox import OutboxColumns
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SCHEMA = "catalog"

# Entities recorded in scan_seen.
SEEN_ITEM = 0
SEEN_COLLECTION = 1


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()"))


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def _txt() -> Mapped[str]:
    return mapped_column(Text, nullable=False, server_default="")


def _texts() -> Mapped[list[str]]:
    return mapped_column(ARRAY(Text), nullable=False, server_default="{}")


def _json_list() -> Mapped[list[dict[str, Any]]]:
    return mapped_column(JSONB, nullable=False, server_default="[]")


def _int(big: bool = False) -> Mapped[int]:
    return mapped_column(BigInteger if big else Integer, nullable=False, server_default="0")


class Base(DeclarativeBase):
    metadata = schema_metadata(SCHEMA)


class MediaSource(Base):
    """A Plex server known to the catalog (from RegisterLibraries)."""

    __tablename__ = "media_sources"

    id: Mapped[uuid.UUID] = _uuid_pk()
    server_id: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    name: Mapped[str] = _txt()
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Library(Base):
    __tablename__ = "libraries"
    __table_args__ = (UniqueConstraint("media_source_id", "plex_key"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    media_source_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("media_sources.id", ondelete="CASCADE"), nullable=False
    )
    plex_key: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = _txt()
    kind: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    sync_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    refresh_interval_seconds: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    remote_streaming_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    realtime_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    # The canonical sync-rule expression ("" = sync everything).
    sync_rule: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    # FinishScan of a completed scan deletes EXCLUDED items (True) or keeps them (False, the default).
    prune_excluded: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    plex_uuid: Mapped[str] = _txt()
    agent: Mapped[str] = _txt()
    language: Mapped[str] = _txt()
    locations: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    removed: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    last_scan_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_deep_scan_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_scan_duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class PathReplacement(Base):
    __tablename__ = "path_replacements"
    __table_args__ = (UniqueConstraint("media_source_id", "position"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    media_source_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("media_sources.id", ondelete="CASCADE"), nullable=False
    )
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    plex_path: Mapped[str] = mapped_column(Text, nullable=False)
    local_path: Mapped[str] = mapped_column(Text, nullable=False)


def _children(target: str, keys: tuple[str, ...] = ("id:item_id",), parent: str = "Item") -> Any:
    """A one-to-many relationship joined on columns without a FOREIGN KEY constraint (used by the ORM baseline
    of the benchmark; the service itself writes with set-based SQL)."""
    join = ", ".join(f"{parent}.{k.split(':')[0]} == foreign({target}.{k.split(':')[1]})" for k in keys)
    return relationship(target, primaryjoin=f"and_({join})", cascade="all, delete-orphan", lazy="raise")


class Item(Base):
    """A movie, show, season, episode or other video. `state` is the file state the scanner last sent;
    the state callers see is FILE_NOT_FOUND while `missing_since` is set."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("library_id", "rating_key"),
        Index("ix_items_library_id_id", "library_id", "id"),
        Index("ix_items_library_id_kind_id", "library_id", "kind", "id"),
        # Orphans only (a parent key whose parent has not arrived yet): a handful of entries, probed for each
        # batch of new items, instead of one entry per item.
        Index(
            "ix_items_orphans",
            "library_id",
            "parent_rating_key",
            postgresql_where=text("parent_id IS NULL AND parent_rating_key <> ''"),
        ),
        Index("ix_items_parent_id_id", "parent_id", "id", postgresql_where=text("parent_id IS NOT NULL")),
        # Missing (FILE_NOT_FOUND) items only: which of a batch's unchanged keys went missing meanwhile.
        Index("ix_items_missing", "library_id", "rating_key", postgresql_where=text("missing_since IS NOT NULL")),
        Index("ix_items_library_id_updated_at_id", "library_id", "updated_at", "id"),
        Index("ix_items_updated_at_id", "updated_at", "id"),
        Index("ix_items_search_vector", "search_vector", postgresql_using="gin"),
        # Shows with networks only (ListNetworks counts them); movies and episodes have none.
        Index("ix_items_with_networks", "library_id", postgresql_where=text("networks <> '{}'::text[]")),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    library_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    rating_key: Mapped[str] = mapped_column(Text, nullable=False)
    parent_rating_key: Mapped[str] = _txt()
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("items.id", ondelete="SET NULL"))
    etag: Mapped[str] = _txt()
    state: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="1")
    missing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    content_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    title: Mapped[str] = _txt()
    sort_title: Mapped[str] = _txt()
    original_title: Mapped[str] = _txt()
    plot: Mapped[str] = _txt()
    tagline: Mapped[str] = _txt()
    year: Mapped[int] = _int()
    release_date: Mapped[date | None] = mapped_column(Date)
    content_rating: Mapped[str] = _txt()
    index: Mapped[int] = _int()
    parent_index: Mapped[int] = _int()
    duration_ms: Mapped[int] = _int(big=True)
    rating: Mapped[float] = mapped_column(Double, nullable=False, server_default="0")
    audience_rating: Mapped[float] = mapped_column(Double, nullable=False, server_default="0")
    child_count: Mapped[int] = _int()
    leaf_count: Mapped[int] = _int()
    plex_guid: Mapped[str] = _txt()
    plex_added_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    plex_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_seen_at: Mapped[datetime] = _now()
    last_seen_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    # Case-folded titles (exact-title rank and substring search) and the item's words for ranked full-text
    # search: title (weight A), people (B), genres (C), made by ingest.search_vector.
    search_title: Mapped[str] = _txt()
    search_vector: Mapped[Any] = mapped_column(TSVECTOR, nullable=False, server_default=text("''::tsvector"))
    # Value lists in their order (duplicates dropped). guids: [{"uri", "provider", "external_id"}]; artwork:
    # [{"kind", "url", "source", "updated_at": epoch seconds or null, "updated_nanos": only when not 0}].
    genres: Mapped[list[str]] = _texts()
    studios: Mapped[list[str]] = _texts()
    labels: Mapped[list[str]] = _texts()
    countries: Mapped[list[str]] = _texts()
    networks: Mapped[list[str]] = _texts()
    guids: Mapped[list[dict[str, Any]]] = _json_list()
    artwork: Mapped[list[dict[str, Any]]] = _json_list()

    credits: Mapped[list[Credit]] = _children("Credit")
    media: Mapped[list[MediaVersion]] = _children("MediaVersion")
    chapters: Mapped[list[Chapter]] = _children("Chapter")


def _item_fk() -> Mapped[uuid.UUID]:
    # No FOREIGN KEY constraint: relationship rows are written only by WriteItems, in the same transaction as
    # their item, and items are never deleted (FILE_NOT_FOUND keeps them); per-row RI triggers would cost more
    # than the whole COPY of a batch. See services/catalog/README.md.
    return mapped_column(UUID(as_uuid=True), primary_key=True)


class Person(Base):
    """A person, shared by every item crediting them."""

    __tablename__ = "people"
    __table_args__ = (UniqueConstraint("name", "plex_tag_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    plex_tag_id: Mapped[int] = _int(big=True)


class Credit(Base):
    __tablename__ = "credits"
    item_id: Mapped[uuid.UUID] = _item_fk()
    role: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    person_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    position: Mapped[int] = _int()
    character: Mapped[str] = _txt()
    thumb_url: Mapped[str] = _txt()

    person: Mapped[Person] = relationship(primaryjoin="foreign(Credit.person_id) == Person.id", lazy="raise")


class MediaVersion(Base):
    """A Plex Media (version) of an item."""

    __tablename__ = "media_versions"

    item_id: Mapped[uuid.UUID] = _item_fk()
    plex_media_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    position: Mapped[int] = _int()
    duration_ms: Mapped[int] = _int(big=True)
    bitrate: Mapped[int] = _int(big=True)
    width: Mapped[int] = _int()
    height: Mapped[int] = _int()
    aspect_ratio: Mapped[float] = mapped_column(Double, nullable=False, server_default="0")
    audio_channels: Mapped[int] = _int()
    audio_codec: Mapped[str] = _txt()
    video_codec: Mapped[str] = _txt()
    video_resolution: Mapped[str] = _txt()
    container: Mapped[str] = _txt()
    video_frame_rate: Mapped[str] = _txt()
    video_profile: Mapped[str] = _txt()

    parts: Mapped[list[MediaPart]] = _children(
        "MediaPart", ("item_id:item_id", "plex_media_id:plex_media_id"), parent="MediaVersion"
    )


class MediaPart(Base):
    """A file of a media version."""

    __tablename__ = "media_parts"

    item_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    plex_media_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    plex_part_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    position: Mapped[int] = _int()
    plex_key: Mapped[str] = _txt()
    plex_path: Mapped[str] = _txt()
    local_path: Mapped[str] = _txt()
    size_bytes: Mapped[int] = _int(big=True)
    duration_ms: Mapped[int] = _int(big=True)
    container: Mapped[str] = _txt()
    video_profile: Mapped[str] = _txt()
    audio_profile: Mapped[str] = _txt()
    state: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default="0")

    streams: Mapped[list[MediaStream]] = _children(
        "MediaStream",
        ("item_id:item_id", "plex_media_id:plex_media_id", "plex_part_id:plex_part_id"),
        parent="MediaPart",
    )


class MediaStream(Base):
    """A video, audio or subtitle stream of a file."""

    __tablename__ = "media_streams"

    item_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    plex_media_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    plex_part_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    plex_stream_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    position: Mapped[int] = _int()
    kind: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    index: Mapped[int] = _int()
    codec: Mapped[str] = _txt()
    language: Mapped[str] = _txt()
    language_code: Mapped[str] = _txt()
    title: Mapped[str] = _txt()
    display_title: Mapped[str] = _txt()
    is_default: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    forced: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    width: Mapped[int] = _int()
    height: Mapped[int] = _int()
    channels: Mapped[int] = _int()
    bitrate: Mapped[int] = _int(big=True)
    profile: Mapped[str] = _txt()
    frame_rate: Mapped[str] = _txt()
    audio_channel_layout: Mapped[str] = _txt()
    external_key: Mapped[str] = _txt()


class Chapter(Base):
    __tablename__ = "chapters"

    item_id: Mapped[uuid.UUID] = _item_fk()
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = _txt()
    start_ms: Mapped[int] = _int(big=True)
    end_ms: Mapped[int] = _int(big=True)


class Collection(Base):
    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("library_id", "rating_key"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    library_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"), nullable=False)
    rating_key: Mapped[str] = mapped_column(Text, nullable=False)
    title: Mapped[str] = _txt()
    sort_title: Mapped[str] = _txt()
    summary: Mapped[str] = _txt()
    smart: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    child_count: Mapped[int] = _int()
    etag: Mapped[str] = _txt()
    # [{"kind": int, "url": str, "source": str, "updated_at": float|None}]
    artwork: Mapped[Any] = mapped_column(JSONB, nullable=False, server_default="[]")
    plex_added_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    plex_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    content_hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class CollectionMember(Base):
    """A member of a collection, by Plex rating key (resolved to items at read time, so order of arrival
    does not matter)."""

    __tablename__ = "collection_members"

    collection_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    rating_key: Mapped[str] = mapped_column(Text, nullable=False)


class Scan(Base):
    """A scan the catalog has seen writes or a FinishScan for; the finish result is kept so a retried
    FinishScan is answered without marking anything twice."""

    __tablename__ = "scans"
    __table_args__ = (Index("ix_scans_library_id", "library_id"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    library_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("libraries.id", ondelete="CASCADE"), nullable=False)
    started_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    mode: Mapped[int] = _int()
    missing: Mapped[int] = _int()
    present: Mapped[int] = _int()
    collections_removed: Mapped[int] = _int()


class ScanSeen(Base):
    """Rating keys a running scan has written or seen unchanged: one row per batch with the keys as an array
    (one small insert per batch instead of one index entry per item); deleted when the scan finishes."""

    __tablename__ = "scan_seen"
    __table_args__ = (Index("ix_scan_seen_scan_id_entity", "scan_id", "entity"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    scan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), nullable=False)
    entity: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    rating_keys: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)


class ItemChange(Base):
    """One committed change to an item: the log WatchChanges reads. `seq` is taken from `item_changes_seq` under
    the change-log advisory lock as the transaction's last statement, so it grows in commit order (see
    `changes`). No foreign keys: the insert must never wait for another table's locks while holding that lock."""

    __tablename__ = "item_changes"
    __table_args__ = (
        Index("ix_item_changes_library_id_seq", "library_id", "seq"),
        # Append-only and in time order: a BRIN index finds what retention prunes for almost no space.
        Index("ix_item_changes_committed_at", "committed_at", postgresql_using="brin"),
    )

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    library_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    item_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    rating_key: Mapped[str] = mapped_column(Text, nullable=False)
    item_kind: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    kind: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    source: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    scan_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    state: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    title: Mapped[str] = _txt()
    committed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")
    )


class ChangeFeed(Base):
    """The change feed's one row: the key resume tokens are signed with, and the highest seq pruned."""

    __tablename__ = "change_feed"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    token_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    pruned_through: Mapped[int] = _int(big=True)


class OutboxRow(OutboxColumns, Base):
    """Audit events waiting to be published to NATS (plexsync.common.outbox), in id order."""


class AuditRow(AuditColumns, Base):
    """Who changed or was refused what (plexsync.common.audit); written and read as SQL by AuditLog."""
