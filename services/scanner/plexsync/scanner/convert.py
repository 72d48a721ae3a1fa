"""Plex models -> catalog messages (Item, Collection), with local paths and file states applied."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias
from urllib.parse import urlparse

from google.protobuf.duration_pb2 import Duration
from plexsync.scanner.paths import NORMAL, FileStates, item_state
from plexsync.scanner.plex_models import PlexMetadata, PlexPart, PlexTag, Raw, read_int, read_list, read_str
from plexsync.v1 import common_pb2

Kind: TypeAlias = common_pb2.ItemKind.ValueType
KIND_BY_TYPE: dict[str, Kind] = {
    "movie": common_pb2.ITEM_KIND_MOVIE,
    "show": common_pb2.ITEM_KIND_SHOW,
    "season": common_pb2.ITEM_KIND_SEASON,
    "episode": common_pb2.ITEM_KIND_EPISODE,
    "clip": common_pb2.ITEM_KIND_OTHER_VIDEO,
}
_STREAM_KINDS: dict[int, common_pb2.StreamKind.ValueType] = {
    1: common_pb2.STREAM_KIND_VIDEO,
    2: common_pb2.STREAM_KIND_AUDIO,
    3: common_pb2.STREAM_KIND_SUBTITLE,
}
_CONTAINER_KINDS = (common_pb2.ITEM_KIND_SHOW, common_pb2.ITEM_KIND_SEASON)
# The catalog's limits (catalog/ingest.py MAX_TITLE, MAX_TEXT): a longer text would fail the whole batch.
MAX_TITLE, MAX_TEXT = 1000, 100_000


def capped(value: str, limit: int = MAX_TITLE) -> str:
    """``value`` cut to ``limit`` characters and without NULs (which the catalog refuses)."""
    if len(value) > limit:
        value = value[:limit]
    return value.replace("\x00", "") if "\x00" in value else value


_CHILD_KINDS = (common_pb2.ITEM_KIND_SEASON, common_pb2.ITEM_KIND_EPISODE)


def item_kind(meta: PlexMetadata, library_kind: int) -> Kind:
    if library_kind == common_pb2.LIBRARY_KIND_OTHER_VIDEOS and meta.type in ("movie", "clip", "video"):
        return common_pb2.ITEM_KIND_OTHER_VIDEO
    return KIND_BY_TYPE.get(meta.type, common_pb2.ITEM_KIND_UNSPECIFIED)


def ms(value: int) -> Duration:
    if value >= 0:  # what FromMilliseconds does, without its normalisation (the hot path: every stream, chapter)
        return Duration(seconds=value // 1000, nanos=(value % 1000) * 1_000_000)
    d = Duration()
    d.FromMilliseconds(value)
    return d


def _set_plex_times(message: common_pb2.Item | common_pb2.Collection, meta: PlexMetadata) -> None:
    """Plex's added/updated times onto an item or collection (left unset when Plex gave none)."""
    if meta.added_at:
        message.plex_added_at.FromSeconds(meta.added_at)
    if meta.updated_at:
        message.plex_updated_at.FromSeconds(meta.updated_at)


def artwork_source(url: str) -> str:
    if url.startswith("/"):
        return "plex"
    return urlparse(url).hostname or ""


def _art(kind: common_pb2.ArtworkKind.ValueType, url: str) -> common_pb2.Artwork:
    art = common_pb2.Artwork(kind=kind, url=url, source=artwork_source(url))
    if url.startswith("/"):
        last = url.rstrip("/").rsplit("/", 1)[-1]
        if last.isdigit():
            art.updated_at.FromSeconds(int(last))
    return art


def artwork(meta: PlexMetadata) -> list[common_pb2.Artwork]:
    out = []
    if meta.thumb:
        kind: common_pb2.ArtworkKind.ValueType = (
            common_pb2.ARTWORK_KIND_THUMBNAIL if meta.type == "episode" else common_pb2.ARTWORK_KIND_POSTER
        )
        out.append(_art(kind, meta.thumb))
    if meta.art:
        out.append(_art(common_pb2.ARTWORK_KIND_FAN_ART, meta.art))
    if meta.banner:
        out.append(_art(common_pb2.ARTWORK_KIND_BANNER, meta.banner))
    return out


def credits(meta: PlexMetadata) -> list[common_pb2.Credit]:
    item = common_pb2.Item()
    add_credits(item, meta)
    return list(item.credits)


def add_credits(item: common_pb2.Item, meta: PlexMetadata) -> None:
    """Append the item's credits in place (``add`` builds each one where it lives: no copy)."""
    add = item.credits.add
    groups: tuple[tuple[common_pb2.CreditRole.ValueType, list[PlexTag]], ...] = (
        (common_pb2.CREDIT_ROLE_ACTOR, meta.roles),
        (common_pb2.CREDIT_ROLE_DIRECTOR, meta.directors),
        (common_pb2.CREDIT_ROLE_WRITER, meta.writers),
        (common_pb2.CREDIT_ROLE_PRODUCER, meta.producers),
    )
    for role, tags in groups:
        actor = role == common_pb2.CREDIT_ROLE_ACTOR
        for order, t in enumerate(tags):
            add(
                role=role,
                name=t.tag,
                character=t.role if actor else "",
                order=order,
                thumb_url=t.thumb,
                plex_tag_id=t.id or 0,
            )


def guids(meta: PlexMetadata) -> list[common_pb2.ExternalGuid]:
    out = []
    for uri in meta.guids:
        provider, sep, ext = uri.partition("://")
        out.append(common_pb2.ExternalGuid(uri=uri, provider=provider if sep else "", external_id=ext if sep else uri))
    return out


def part_message(part: PlexPart, states: FileStates) -> common_pb2.MediaPart:
    version = common_pb2.MediaVersion()
    add_part(version, part, states)
    return version.parts[0]


def add_part(version: common_pb2.MediaVersion, part: PlexPart, states: FileStates) -> common_pb2.MediaPart:
    """Append a MediaPart (built in place, streams too) to a media version."""
    local, state = states.resolve(part.file)
    msg = version.parts.add(
        plex_part_id=part.id,
        plex_key=part.key,
        plex_path=part.file,
        local_path=local,
        size_bytes=part.size,
        duration=ms(part.duration),
        container=part.container,
        video_profile=part.video_profile,
        audio_profile=part.audio_profile,
        state=state,
    )
    add = msg.streams.add
    for s in part.streams:
        add(
            plex_stream_id=s.id,
            kind=_STREAM_KINDS.get(s.stream_type, common_pb2.STREAM_KIND_UNSPECIFIED),
            index=s.index or 0,
            codec=s.codec,
            language=s.language,
            language_code=s.language_code,
            title=s.title,
            display_title=s.display_title,
            is_default=s.default,
            forced=s.forced,
            width=s.width,
            height=s.height,
            channels=s.channels,
            bitrate=s.bitrate,
            profile=s.profile,
            frame_rate=s.frame_rate,
            audio_channel_layout=s.audio_channel_layout,
            external_key=s.key if s.stream_type == 3 else "",
        )
    return msg


def local_signature(meta: PlexMetadata, states: FileStates) -> list[str]:
    """Where each file of a listing entry maps locally and its state (part of the ETag)."""
    out = []
    for media in meta.media:
        for part in media.parts:
            local, state = states.resolve(part.file)
            out.append(f"{part.id}|{local}|{state}")
    return out


def raw_local_signature(d: Raw, states: FileStates) -> list[str]:
    """`local_signature` of a raw listing entry."""
    out = []
    for media in read_list(d, "Media"):
        for part in read_list(media, "Part"):
            local, state = states.resolve(read_str(part, "file"))
            out.append(f"{read_int(part, 'id')}|{local}|{state}")
    return out


def to_item(
    meta: PlexMetadata,
    *,
    library_id: str,
    library_kind: int,
    etag: str,
    states: FileStates,
    new: Callable[..., common_pb2.Item] = common_pb2.Item,
) -> common_pb2.Item:
    """A catalog Item from full metadata; ``new(**fields)`` makes the message (e.g. a request's ``items.add``)."""
    kind = item_kind(meta, library_kind)
    item = new(
        library_id=library_id,
        kind=kind,
        rating_key=meta.rating_key,
        parent_rating_key=meta.parent_rating_key if kind in _CHILD_KINDS else "",
        etag=etag,
        title=capped(meta.title),
        sort_title=capped(meta.title_sort or meta.title),
        original_title=capped(meta.original_title),
        plot=capped(meta.summary, MAX_TEXT),
        tagline=capped(meta.tagline),
        year=meta.year,
        release_date=meta.originally_available_at,
        content_rating=meta.content_rating,
        index=(meta.index or 0) if kind in _CHILD_KINDS else 0,
        parent_index=(meta.parent_index or 0) if kind == common_pb2.ITEM_KIND_EPISODE else 0,
        duration=ms(meta.duration),
        rating=meta.rating,
        audience_rating=meta.audience_rating,
        child_count=meta.child_count,
        leaf_count=meta.leaf_count,
        studios=[meta.studio] if meta.studio else [],
        genres=[t.tag for t in meta.genres],
        labels=[t.tag for t in meta.labels],
        countries=[t.tag for t in meta.countries],
        networks=[t.tag for t in meta.networks],
        guids=guids(meta),
        artwork=artwork(meta),
        plex_guid=meta.guid,
    )
    add_credits(item, meta)
    add_chapter = item.chapters.add
    for c in meta.chapters:
        add_chapter(index=c.index, title=c.tag, start=ms(c.start), end=ms(c.end))
    version_states: list[list[common_pb2.ItemState.ValueType]] = []
    for m in meta.media:
        version = common_pb2.MediaVersion(
            plex_media_id=m.id,
            duration=ms(m.duration),
            bitrate=m.bitrate,
            width=m.width,
            height=m.height,
            aspect_ratio=m.aspect_ratio,
            audio_channels=m.audio_channels,
            audio_codec=m.audio_codec,
            video_codec=m.video_codec,
            video_resolution=m.video_resolution,
            container=m.container,
            video_frame_rate=m.video_frame_rate,
            video_profile=m.video_profile,
        )
        for p in m.parts:
            add_part(version, p, states)
        version_states.append([p.state for p in version.parts])
        item.media.append(version)
    item.state = NORMAL if kind in _CONTAINER_KINDS else item_state(version_states)
    _set_plex_times(item, meta)
    return item


def to_collection(meta: PlexMetadata, *, library_id: str, etag: str, members: list[str]) -> common_pb2.Collection:
    coll = common_pb2.Collection(
        library_id=library_id,
        rating_key=meta.rating_key,
        title=capped(meta.title),
        sort_title=capped(meta.title_sort or meta.title),
        summary=capped(meta.summary, MAX_TEXT),
        smart=meta.smart,
        child_count=meta.child_count,
        etag=etag,
        artwork=artwork(meta),
        member_rating_keys=members,
    )
    _set_plex_times(coll, meta)
    return coll
