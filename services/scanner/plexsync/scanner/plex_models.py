"""Typed models of Plex Media Server answers, parsed from JSON or XML into the same shapes.

Plex's JSON (``Accept: application/json``) and XML answers carry the same data in different shapes:
arrays vs repeated child elements, numbers vs attribute strings, ``true`` vs ``1``, ``Video`` /
``Directory`` elements vs a ``Metadata`` array. Both are first reduced to one "JSON-shaped" dict
(`xml_to_container`), then every model is built from that dict by readers that accept a value in either
representation and treat a missing attribute as "unknown", but refuse a value of the wrong type (a word where a
number belongs, a list where a string does) with `PlexParseError`: such an item is broken, not zero.
XML is parsed by expat with no DTD (so no entity can expand: no "billion laughs") and a depth limit. Nothing
here does I/O.
"""

from __future__ import annotations

import math
import xml.parsers.expat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

Raw = Mapping[str, Any]


class PlexParseError(ValueError):
    """An answer that is not a Plex MediaContainer (truncated, HTML error page, garbage), or an entry of one
    that cannot be read (a value of the wrong type, a required key missing)."""


MAX_XML_DEPTH = 64  # Plex nests MediaContainer > Video > Media > Part > Stream: 5 levels
VIDEO_TYPES = frozenset({"movie", "episode", "clip"})


# ----------------------------------------------------------------------------- value readers
def _str(d: Raw, key: str) -> str:
    v = d.get(key)
    if v.__class__ is str:  # the common case first (these readers run ~100 times per item)
        return v
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, str | int | float):
        return v if isinstance(v, str) else str(v)
    raise PlexParseError(f"{key} is {type(v).__name__}, not text")


def _int(d: Raw, key: str) -> int:
    v = d.get(key)
    if v.__class__ is int:
        return v
    if v is None or v == "":
        return 0
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    try:
        return int(v)
    except (TypeError, ValueError):
        try:
            return int(float(v))
        except (TypeError, ValueError, OverflowError):
            raise PlexParseError(f"{key} is {str(v)[:40]!r}, not a number") from None


def _opt_int(d: Raw, key: str) -> int | None:
    v = d.get(key)
    if v.__class__ is int:
        return v
    return None if v is None or v == "" else _int(d, key)


def _float(d: Raw, key: str) -> float:
    v = d.get(key)
    if v is None or v == "":
        return 0.0
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise PlexParseError(f"{key} is {str(v)[:40]!r}, not a number") from None
    if not math.isfinite(f):
        raise PlexParseError(f"{key} is {f}, not a finite number")
    return f


def _bool(d: Raw, key: str) -> bool:
    v = d.get(key)
    if isinstance(v, str):
        return v.lower() in ("1", "true", "yes")
    return bool(v)


def _num_text(d: Raw, key: str) -> str:
    """A number Plex may send as JSON number or XML string, as canonical text (``23.976``)."""
    v = d.get(key)
    if v is None or v == "":
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int | float):
        return repr(v) if isinstance(v, float) else str(v)
    try:
        f = float(v)
    except ValueError:
        return str(v)
    return repr(f) if ("." in v or "e" in v.lower()) else str(int(f))


def _list(d: Raw, key: str) -> list[Raw]:
    v = d.get(key)
    if not v:
        return []
    if v.__class__ is list and all(x.__class__ is dict for x in v):
        return v
    if isinstance(v, Mapping):
        return [v]
    if not isinstance(v, list):
        raise PlexParseError(f"{key} is {type(v).__name__}, not a list")
    return [x for x in v if isinstance(x, Mapping)]


# the readers, for code that works on raw entries (etag.raw_listing_fingerprint)
read_str, read_int, read_opt_int, read_bool, read_list = _str, _int, _opt_int, _bool, _list


def entry_key(d: Raw) -> str:
    """An entry's rating key, or "" when it has none usable (never raises: for reports about broken entries)."""
    v = d.get("ratingKey")
    return v if isinstance(v, str) else str(v) if isinstance(v, int) and not isinstance(v, bool) else ""


def check_entry(d: Raw) -> None:
    """Raise `PlexParseError` when a listing or metadata entry cannot stand for an item: no rating key, no type,
    a video without media."""
    if not entry_key(d):
        raise PlexParseError("the entry has no ratingKey")
    kind = d.get("type")
    if not kind or not isinstance(kind, str):
        raise PlexParseError("the entry has no type")
    if kind in VIDEO_TYPES and not _list(d, "Media"):
        raise PlexParseError(f"the {kind} has no Media")


# ----------------------------------------------------------------------------- models
@dataclass(slots=True)
class PlexTag:
    """A tag (genre, label, person, network, collection...)."""

    tag: str
    id: int | None = None
    role: str = ""  # an actor's character
    thumb: str = ""
    rating_key: str = ""  # collections carry the collection's ratingKey

    @classmethod
    def parse(cls, d: Raw) -> PlexTag:
        return cls(_str(d, "tag"), _opt_int(d, "id"), _str(d, "role"), _str(d, "thumb"), _str(d, "ratingKey"))


@dataclass(slots=True)
class PlexStream:
    id: int
    stream_type: int
    index: int | None
    codec: str
    language: str
    language_code: str
    title: str
    display_title: str
    default: bool
    forced: bool
    width: int
    height: int
    channels: int
    bitrate: int
    profile: str
    frame_rate: str
    audio_channel_layout: str
    key: str

    @classmethod
    def parse(cls, d: Raw) -> PlexStream:
        return cls(
            id=_int(d, "id"),
            stream_type=_int(d, "streamType"),
            index=_opt_int(d, "index"),
            codec=_str(d, "codec"),
            language=_str(d, "language"),
            language_code=_str(d, "languageCode"),
            title=_str(d, "title"),
            display_title=_str(d, "displayTitle"),
            default=_bool(d, "default"),
            forced=_bool(d, "forced"),
            width=_int(d, "width"),
            height=_int(d, "height"),
            channels=_int(d, "channels"),
            bitrate=_int(d, "bitrate"),
            profile=_str(d, "profile"),
            frame_rate=_num_text(d, "frameRate"),
            audio_channel_layout=_str(d, "audioChannelLayout"),
            key=_str(d, "key"),
        )


@dataclass(slots=True)
class PlexPart:
    id: int
    key: str
    file: str
    size: int
    duration: int
    container: str
    video_profile: str
    audio_profile: str
    streams: list[PlexStream]

    @classmethod
    def parse(cls, d: Raw) -> PlexPart:
        return cls(
            id=_int(d, "id"),
            key=_str(d, "key"),
            file=_str(d, "file"),
            size=_int(d, "size"),
            duration=_int(d, "duration"),
            container=_str(d, "container"),
            video_profile=_str(d, "videoProfile"),
            audio_profile=_str(d, "audioProfile"),
            streams=[PlexStream.parse(s) for s in _list(d, "Stream")],
        )


@dataclass(slots=True)
class PlexMedia:
    id: int
    duration: int
    bitrate: int
    width: int
    height: int
    aspect_ratio: float
    audio_channels: int
    audio_codec: str
    video_codec: str
    video_resolution: str
    container: str
    video_frame_rate: str
    video_profile: str
    parts: list[PlexPart]

    @classmethod
    def parse(cls, d: Raw) -> PlexMedia:
        return cls(
            id=_int(d, "id"),
            duration=_int(d, "duration"),
            bitrate=_int(d, "bitrate"),
            width=_int(d, "width"),
            height=_int(d, "height"),
            aspect_ratio=_float(d, "aspectRatio"),
            audio_channels=_int(d, "audioChannels"),
            audio_codec=_str(d, "audioCodec"),
            video_codec=_str(d, "videoCodec"),
            video_resolution=_str(d, "videoResolution"),
            container=_str(d, "container"),
            video_frame_rate=_str(d, "videoFrameRate"),
            video_profile=_str(d, "videoProfile"),
            parts=[PlexPart.parse(p) for p in _list(d, "Part")],
        )


@dataclass(slots=True)
class PlexChapter:
    index: int
    tag: str
    start: int
    end: int

    @classmethod
    def parse(cls, d: Raw) -> PlexChapter:
        return cls(_int(d, "index"), _str(d, "tag"), _int(d, "startTimeOffset"), _int(d, "endTimeOffset"))


@dataclass(slots=True)
class PlexMetadata:
    """A movie, show, season, episode, clip or collection, from a listing or from full metadata."""

    rating_key: str
    key: str
    type: str
    guid: str = ""
    title: str = ""
    title_sort: str = ""
    original_title: str = ""
    summary: str = ""
    tagline: str = ""
    studio: str = ""
    content_rating: str = ""
    year: int = 0
    originally_available_at: str = ""
    index: int | None = None
    parent_index: int | None = None
    parent_rating_key: str = ""
    grandparent_rating_key: str = ""
    duration: int = 0
    rating: float = 0.0
    audience_rating: float = 0.0
    child_count: int = 0
    leaf_count: int = 0
    added_at: int = 0
    updated_at: int = 0
    thumb: str = ""
    art: str = ""
    banner: str = ""
    smart: bool = False
    subtype: str = ""
    genres: list[PlexTag] = field(default_factory=list)
    labels: list[PlexTag] = field(default_factory=list)
    countries: list[PlexTag] = field(default_factory=list)
    networks: list[PlexTag] = field(default_factory=list)
    directors: list[PlexTag] = field(default_factory=list)
    writers: list[PlexTag] = field(default_factory=list)
    producers: list[PlexTag] = field(default_factory=list)
    roles: list[PlexTag] = field(default_factory=list)
    collections: list[PlexTag] = field(default_factory=list)
    guids: list[str] = field(default_factory=list)
    media: list[PlexMedia] = field(default_factory=list)
    chapters: list[PlexChapter] = field(default_factory=list)
    library_section_id: str = ""  # full metadata says which section an item is in

    @classmethod
    def parse(cls, d: Raw) -> PlexMetadata:
        """Raises `PlexParseError` for an entry that cannot be read (see `check_entry`)."""
        check_entry(d)

        def tags(key: str) -> list[PlexTag]:
            return [PlexTag.parse(t) for t in _list(d, key)]

        return cls(
            rating_key=_str(d, "ratingKey"),
            key=_str(d, "key"),
            type=_str(d, "type"),
            guid=_str(d, "guid"),
            title=_str(d, "title"),
            title_sort=_str(d, "titleSort"),
            original_title=_str(d, "originalTitle"),
            summary=_str(d, "summary"),
            tagline=_str(d, "tagline"),
            studio=_str(d, "studio"),
            content_rating=_str(d, "contentRating"),
            year=_int(d, "year"),
            originally_available_at=_str(d, "originallyAvailableAt"),
            index=_opt_int(d, "index"),
            parent_index=_opt_int(d, "parentIndex"),
            parent_rating_key=_str(d, "parentRatingKey"),
            grandparent_rating_key=_str(d, "grandparentRatingKey"),
            duration=_int(d, "duration"),
            rating=_float(d, "rating"),
            audience_rating=_float(d, "audienceRating"),
            child_count=_int(d, "childCount"),
            leaf_count=_int(d, "leafCount"),
            added_at=_int(d, "addedAt"),
            updated_at=_int(d, "updatedAt"),
            thumb=_str(d, "thumb"),
            art=_str(d, "art"),
            banner=_str(d, "banner"),
            smart=_bool(d, "smart"),
            subtype=_str(d, "subtype"),
            genres=tags("Genre"),
            labels=tags("Label"),
            countries=tags("Country"),
            networks=tags("Network"),
            directors=tags("Director"),
            writers=tags("Writer"),
            producers=tags("Producer"),
            roles=tags("Role"),
            collections=tags("Collection"),
            guids=[_str(g, "id") for g in _list(d, "Guid") if g.get("id")],
            media=[PlexMedia.parse(m) for m in _list(d, "Media")],
            chapters=[PlexChapter.parse(c) for c in _list(d, "Chapter")],
            library_section_id=_str(d, "librarySectionID"),
        )


@dataclass(slots=True)
class PlexSection:
    """A library section from ``/library/sections``."""

    key: str
    type: str
    title: str
    agent: str
    scanner: str
    language: str
    uuid: str
    locations: list[str]

    @classmethod
    def parse(cls, d: Raw) -> PlexSection:
        return cls(
            key=_str(d, "key"),
            type=_str(d, "type"),
            title=_str(d, "title"),
            agent=_str(d, "agent"),
            scanner=_str(d, "scanner"),
            language=_str(d, "language"),
            uuid=_str(d, "uuid"),
            locations=[_str(loc, "path") for loc in _list(d, "Location")],
        )


@dataclass(slots=True)
class MetadataPage:
    """One page of a listing: its items, the entries that could not be read (rating key or "", why), and where it
    sits in the whole."""

    items: list[PlexMetadata]
    offset: int
    total_size: int | None
    broken: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class ServerInfo:
    friendly_name: str
    machine_identifier: str
    version: str


# ----------------------------------------------------------------------------- containers
def xml_to_container(body: bytes) -> dict[str, Any]:
    """Parse Plex XML into the dict JSON's ``MediaContainer`` would hold.

    Attributes become string values; child elements become lists keyed by tag; under the container
    ``Video`` and ``Directory`` elements are also listed under ``Metadata``, as JSON has them. A document
    type declaration (Plex sends none; it is how entities are declared) or nesting deeper than
    `MAX_XML_DEPTH` is refused, so a hostile answer cannot expand or recurse.
    """
    parser = xml.parsers.expat.ParserCreate()
    stack: list[dict[str, Any]] = []
    root: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        d: dict[str, Any] = attrs
        if stack:
            if len(stack) >= MAX_XML_DEPTH:
                raise PlexParseError(f"Plex answered XML nested deeper than {MAX_XML_DEPTH} levels")
            parent = stack[-1]
            parent.setdefault(tag, []).append(d)
            if len(stack) == 1 and tag in ("Video", "Directory", "Photo", "Track"):
                root[0][2].append(d)
        else:
            root.append((tag, d, []))
        stack.append(d)

    def end(tag: str) -> None:
        stack.pop()

    def refuse_dtd(*args: object) -> None:
        raise PlexParseError("Plex answered XML with a document type declaration (entities are refused)")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.buffer_text = True
    try:
        parser.Parse(body, True)
    except xml.parsers.expat.ExpatError as exc:
        raise PlexParseError(f"Plex answered XML that does not parse: {exc}") from None
    tag, out, meta = root[0]
    if tag != "MediaContainer":
        raise PlexParseError(f"Plex answered <{tag[:40]}>, not a MediaContainer")
    if meta:
        out["Metadata"] = meta
    return out


def json_to_container(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PlexParseError(f"Plex answered JSON that does not parse: {str(exc)[:200]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("MediaContainer"), dict):
        raise PlexParseError("Plex answered JSON without a MediaContainer")
    container: dict[str, Any] = data["MediaContainer"]
    return container


def parse_container(body: bytes, content_type: str) -> dict[str, Any]:
    """The MediaContainer of an answer, whichever format it came in."""
    head = body.lstrip()[:1]
    if "json" in content_type or head == b"{":
        return json_to_container(body)
    if "xml" in content_type or head == b"<":
        return xml_to_container(body)
    raise PlexParseError(f"Plex answered {content_type or 'an unknown content type'}, expected JSON or XML")


def parse_page(container: Raw) -> MetadataPage:
    """The page's items; an entry that cannot be read goes to ``broken`` (the others are unaffected)."""
    items: list[PlexMetadata] = []
    broken: list[tuple[str, str]] = []
    for m in _list(container, "Metadata"):
        try:
            items.append(PlexMetadata.parse(m))
        except PlexParseError as exc:
            broken.append((entry_key(m), str(exc)))
    return MetadataPage(items, _int(container, "offset"), plausible_total(_opt_int(container, "totalSize")), broken)


MAX_TOTAL = 50_000_000  # entries in one listing; a larger totalSize is a lie, not a library


def plausible_total(value: int | None) -> int | None:
    """A listing's ``totalSize`` if it can be true, else None (unknown: page until a short page)."""
    return value if value is not None and 0 <= value <= MAX_TOTAL else None


def parse_sections(container: Raw) -> list[PlexSection]:
    return [PlexSection.parse(d) for d in _list(container, "Directory")]


def parse_server_info(container: Raw) -> ServerInfo:
    return ServerInfo(_str(container, "friendlyName"), _str(container, "machineIdentifier"), _str(container, "version"))


def parse_tags(container: Raw) -> list[PlexTag]:
    return [PlexTag.parse(d) for d in _list(container, "Directory")]


def total_size(container: Raw, headers: Mapping[str, str] | None = None) -> int:
    """How many entries a listing says it holds: ``totalSize``, else the header, else ``size``; 0 when what it
    says is negative, absurd or not a number."""
    try:
        value = plausible_total(_opt_int(container, "totalSize"))
        if value is None and headers is not None:
            raw = headers.get("X-Plex-Container-Total-Size")
            value = plausible_total(int(raw)) if raw and raw.isdigit() else None
        return value if value is not None else plausible_total(_int(container, "size")) or 0
    except PlexParseError:
        return 0


def first(items: Sequence[PlexMetadata]) -> PlexMetadata | None:
    return items[0] if items else None
