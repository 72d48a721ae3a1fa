"""Pure-Python half of WriteItems: content hashes, validation, and flattening items into table rows.

Nothing here talks to the database. `prepare_batch` checks the cheap request-level rules for every item and
computes its content hash; `flatten_items` validates the items that must be written (new or changed) and
turns them into row tuples per table, which `writer` sends to PostgreSQL as arrays. An item's value lists
(genres and the other tags, guids, artwork) and its search vector are columns of its row: PostgreSQL array,
JSON and `tsvector` literals made by `text_array`, `json_list` (of `guid_entry` and `artwork_entry` elements)
and `search_vector`, the same for both flattening paths.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from plexsync.common.errors import FieldViolation, InvalidArgumentError
from plexsync.v1 import catalog_pb2, common_pb2

MAX_KEY = 255
MAX_TITLE = 1000
MAX_SHORT = 255
MAX_URL = 4096
MAX_TEXT = 100_000
MAX_LIST = 10_000
MAX_SEEN = 200_000

ITEM_KINDS = frozenset(v for v in common_pb2.ItemKind.values() if v)
WRITABLE_STATES = frozenset(
    {common_pb2.ITEM_STATE_NORMAL, common_pb2.ITEM_STATE_REMOTE_ONLY, common_pb2.ITEM_STATE_UNAVAILABLE}
)
PART_STATES = frozenset({common_pb2.ITEM_STATE_UNSPECIFIED, *WRITABLE_STATES})
# A scan writes an item its library's sync rules leave out (decided on full metadata) as EXCLUDED.
ITEM_STATES = frozenset({*WRITABLE_STATES, common_pb2.ITEM_STATE_EXCLUDED})
CREDIT_ROLES = frozenset(v for v in common_pb2.CreditRole.values() if v)
ARTWORK_KINDS = frozenset(v for v in common_pb2.ArtworkKind.values() if v)
STREAM_KINDS = frozenset(v for v in common_pb2.StreamKind.values() if v)


ItemId = uuid.UUID | str  # new items' ids are made as text (see uuid7_texts), stored ones come as UUIDs


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): new rows land at the end of the primary-key index."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def uuid7_texts(n: int) -> list[str]:
    """`n` new item ids as text (the form COPY sends), from one clock reading and one call for random bits:
    a UUID object and an entropy syscall per id cost more than the rest of creating a row's id."""
    ms = (time.time_ns() // 1_000_000 & ((1 << 48) - 1)).to_bytes(6, "big")
    rand = os.urandom(10 * n)
    out = []
    for i in range(0, 10 * n, 10):
        h = (ms + bytes((0x70 | rand[i] & 0x0F, rand[i + 1], 0x80 | rand[i + 2] & 0x3F)) + rand[i + 3 : i + 10]).hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def parse_uuid(value: str, field_name: str, *, required: bool = True) -> uuid.UUID | None:
    """A UUID from a request field; INVALID_ARGUMENT naming the field when it is empty or malformed."""
    if not value:
        if required:
            raise InvalidArgumentError.single(field_name, "is required")
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgumentError.single(field_name, f"must be a UUID, got {value[:64]!r}") from None


def to_datetime(ts: Timestamp) -> datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


def to_ms(d: Duration) -> int:
    return d.seconds * 1000 + d.nanos // 1_000_000


def content_hash(message: Any) -> bytes:
    return digest_of(message.SerializeToString(deterministic=True))


def digest_of(wire: bytes) -> bytes:
    return hashlib.blake2b(wire, digest_size=16).digest()


@dataclass
class Incoming:
    """One item of a batch after the cheap checks: its message, position, state and content hash, and the
    serialized message the hash was computed from (sent on to the ingest worker, see `frame_items`)."""

    position: int
    item: common_pb2.Item
    state: int
    digest: bytes
    wire: bytes = b""


_ITEMS_TAG = b"\x22"  # WriteItemsRequest.items: field 4, length-delimited
_ETAG_TAG = b"\x3a"  # Item.etag: field 7, length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _etag_field(etag: str) -> bytes:
    """Item.etag in wire format, appended after the other fields (a parser takes fields in any order)."""
    if not etag:
        return b""
    raw = etag.encode()
    return _ETAG_TAG + _varint(len(raw)) + raw


def frame_items(wires: list[bytes]) -> bytes:
    """A WriteItemsRequest holding only these serialized items, in protobuf wire format (each item is a
    length-delimited field 4): cheaper than serializing the request again, the items already are."""
    out = []
    for wire in wires:
        out.append(_ITEMS_TAG + _varint(len(wire)))
        out.append(wire)
    return b"".join(out)


def prepare_batch(request: catalog_pb2.WriteItemsRequest, max_items: int) -> list[Incoming]:
    """Request-level checks for every item, and content hashes.

    The hash covers everything the scanner sends except `state` (compared on its own, so an item that comes
    back from FILE_NOT_FOUND with the same content is a state change only), `etag` (compared on its own too: a
    scan that confirms what the real-time watcher wrote under its own etag changes nothing but the etag) and
    the output-only fields (id, library_id, parent_id, first/last seen, update time), which are cleared on the
    request's messages.
    """
    violations: list[FieldViolation] = []
    if len(request.items) > max_items:
        raise InvalidArgumentError.single("items", f"at most {max_items} items per batch, got {len(request.items)}")
    if len(request.seen_rating_keys) > MAX_SEEN:
        raise InvalidArgumentError.single("seen_rating_keys", f"at most {MAX_SEEN} per batch")
    library_id = request.library_id
    seen_keys: dict[str, int] = {}
    out: list[Incoming] = []
    for i, item in enumerate(request.items):
        key = item.rating_key
        if not key:
            violations.append(FieldViolation(f"items[{i}].rating_key", "is required"))
        elif len(key) > MAX_KEY or "\x00" in key:
            violations.append(FieldViolation(f"items[{i}].rating_key", f"must be at most {MAX_KEY} characters"))
        elif key in seen_keys:
            violations.append(
                FieldViolation(f"items[{i}].rating_key", f"duplicates items[{seen_keys[key]}] in this batch")
            )
        else:
            seen_keys[key] = i
        if item.library_id and item.library_id != library_id:
            violations.append(FieldViolation(f"items[{i}].library_id", "must be empty or equal to library_id"))
        state = item.state or common_pb2.ITEM_STATE_NORMAL
        if state not in ITEM_STATES:
            violations.append(
                FieldViolation(
                    f"items[{i}].state",
                    "must be NORMAL, REMOTE_ONLY, UNAVAILABLE or EXCLUDED (FILE_NOT_FOUND is set by FinishScan)"
                    if state == common_pb2.ITEM_STATE_FILE_NOT_FOUND
                    else f"unknown item state {state}",
                )
            )
        for name in ("id", "library_id", "parent_id", "state", "first_seen_at", "last_seen_at", "update_time"):
            item.ClearField(name)
        etag = item.etag
        item.ClearField("etag")
        content = item.SerializeToString(deterministic=True)
        item.etag = etag
        out.append(Incoming(i, item, state, digest_of(content), content + _etag_field(etag)))
    for j, key in enumerate(request.seen_rating_keys):
        if not key or len(key) > MAX_KEY or "\x00" in key:
            violations.append(FieldViolation(f"seen_rating_keys[{j}]", f"must be 1 to {MAX_KEY} characters"))
    if len(request.excluded_rating_keys) > MAX_SEEN:
        violations.append(FieldViolation("excluded_rating_keys", f"at most {MAX_SEEN} per batch"))
    for j, key in enumerate(request.excluded_rating_keys):
        if not key or len(key) > MAX_KEY or "\x00" in key:
            violations.append(FieldViolation(f"excluded_rating_keys[{j}]", f"must be 1 to {MAX_KEY} characters"))
    if violations:
        raise InvalidArgumentError(violations)
    return out


@dataclass
class Rows:
    """Row tuples per table for the items being written (item id first in every child row)."""

    items: list[tuple[Any, ...]] = field(default_factory=list)
    credits: list[tuple[Any, ...]] = field(default_factory=list)  # person key (name, tag id) in place of id
    versions: list[tuple[Any, ...]] = field(default_factory=list)
    parts: list[tuple[Any, ...]] = field(default_factory=list)
    streams: list[tuple[Any, ...]] = field(default_factory=list)
    chapters: list[tuple[Any, ...]] = field(default_factory=list)


class Checker:
    """Collects field violations with their full paths."""

    __slots__ = ("violations",)

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    # Paths are passed as (prefix, suffix) and joined only when a violation is recorded: building an f-string
    # for each of the ~150 checked fields of an item would cost more than the checks.
    def text(self, value: str, base: str, name: str, limit: int, *, required: bool = False) -> str:
        if len(value) > limit or (required and not value) or "\x00" in value:
            if required and not value:
                why = "is required"
            elif len(value) > limit:
                why = f"must be at most {limit} characters, got {len(value)}"
            else:
                why = "must not contain NUL characters"
            self.violations.append(FieldViolation(base + name, why))
        return value

    def texts(self, message: Any, base: str, names: tuple[str, ...], limit: int) -> None:
        for name in names:
            value = getattr(message, name)
            if len(value) > limit or "\x00" in value:
                self.text(value, base, "." + name, limit)

    def non_negative(self, value: float, base: str, name: str) -> None:
        if value < 0 or value != value:
            self.violations.append(FieldViolation(base + name, f"must not be negative, got {value}"))

    def non_negatives(self, message: Any, base: str, names: tuple[str, ...]) -> None:
        for name in names:
            value = getattr(message, name)
            if value < 0 or value != value:
                self.non_negative(value, base, "." + name)

    def enum(self, value: int, allowed: frozenset[int], base: str, name: str, what: str) -> None:
        if value not in allowed:
            self.violations.append(FieldViolation(base + name, f"unknown or unspecified {what} {value}"))

    def add(self, path: str, why: str) -> None:
        self.violations.append(FieldViolation(path, why))

    def plex_id(self, value: int, seen: set[int], path: str, what: str, scope: str) -> None:
        """A Plex id: not negative and unique within its parent (recorded in `seen`)."""
        if value < 0:
            self.add(path, f"must not be negative, got {value}")
        if value in seen:
            self.add(path, f"duplicate {what} id {value} in this {scope}")
        seen.add(value)


def text_array(values: Sequence[str]) -> str:
    """A PostgreSQL text[] literal: every value quoted, quotes and backslashes in values escaped."""
    if not values:
        return "{}"
    raw = "".join(values)
    if '"' in raw or "\\" in raw:
        values = [v.replace("\\", "\\\\").replace('"', '\\"') for v in values]
    return '{"' + '","'.join(values) + '"}'


# Search words: runs of letters, digits and underscores of case-folded text, the same rule for item texts here
# and for queries (repository.search), so what is stored is what a query can find.
SEARCH_WORDS = re.compile(r"\w+")
MAX_LEXEME_CHARS = 511  # a longer word may reach PostgreSQL's 2,047-byte lexeme limit (4 bytes per character)
# People and genre texts beyond this many characters are not indexed: with the title, at most ~800 KB of
# lexemes, inside PostgreSQL's 1 MB per tsvector (only items with thousands of long names reach it).
MAX_SEARCH_TEXT = 100_000
_VECTOR_TEMPLATES: dict[tuple[int, int, int], str] = {}


def search_words(text: str) -> list[str]:
    """The search words of case-folded text (plain words split on spaces without the regular expression)."""
    if text.replace(" ", "").isalnum():  # str.isalnum is what \w matches, less the underscore
        return text.split()
    return SEARCH_WORDS.findall(text)


def search_vector(title: str, people: str, genres: str) -> str:
    """The `tsvector` literal of an item's case-folded title, people and genre texts: every word a lexeme at
    its position, weighted A (title), B (people), C (genres), as `setweight(to_tsvector('simple', ...))` of
    each concatenated would, but split by `search_words` (computed here, where the words are at hand, instead
    of by PostgreSQL's text-search parser for each new item). Words cannot hold quotes or backslashes."""
    if len(people) > MAX_SEARCH_TEXT:
        people = people[: MAX_SEARCH_TEXT + 1].rpartition(" ")[0]
    if len(genres) > MAX_SEARCH_TEXT:
        genres = genres[: MAX_SEARCH_TEXT + 1].rpartition(" ")[0]
    if (title + people + genres).replace(" ", "").isalnum():  # plain words: see search_words
        a, b, c = title.split(), people.split(), genres.split()
    else:
        a, b, c = SEARCH_WORDS.findall(title), SEARCH_WORDS.findall(people), SEARCH_WORDS.findall(genres)
    words = a + b + c
    if max(len(title), len(people), len(genres)) > MAX_LEXEME_CHARS and max(map(len, words)) > MAX_LEXEME_CHARS:
        a, b, c = _indexable(a), _indexable(b), _indexable(c)  # to_tsvector skips such words too
        words = a + b + c
    key = (len(a), len(b), len(c))
    template = _VECTOR_TEMPLATES.get(key)
    if template is None:
        weights = "A" * len(a) + "B" * len(b) + "C" * len(c)
        # Positions beyond 16,383 are what PostgreSQL would clamp them to anyway.
        template = " ".join(f"'%s':{min(n, 16383)}{w}" for n, w in enumerate(weights, 1))
        if len(_VECTOR_TEMPLATES) < 4096:
            _VECTOR_TEMPLATES[key] = template
    return template % tuple(words)


def _indexable(words: list[str]) -> list[str]:
    return [w for w in words if len(w) <= MAX_LEXEME_CHARS or len(w.encode()) < 2047]


def guid_entry(uri: str, provider: str, external_id: str) -> dict[str, str]:
    """One element of an item's guids column."""
    return {"uri": uri, "provider": provider, "external_id": external_id}


def artwork_entry(kind: int, url: str, source: str, updated_at: Timestamp) -> dict[str, Any]:
    """One element of an item's artwork column (the shape of collections' artwork, plus sub-second time)."""
    entry: dict[str, Any] = {"kind": kind, "url": url, "source": source, "updated_at": updated_at.seconds or None}
    if updated_at.nanos:
        entry["updated_at"] = updated_at.seconds
        entry["updated_nanos"] = updated_at.nanos
    return entry


def json_list(entries: Sequence[dict[str, Any]]) -> str:
    """The JSON text of a guids or artwork column."""
    return orjson.dumps(entries).decode() if entries else "[]"


def _tag_list(chk: Checker, values: Any, path: str) -> list[str]:
    """The distinct values of a tag list in order, each checked."""
    if len(values) > MAX_LIST:
        chk.add(path, f"at most {MAX_LIST} values")
        return []
    unique = list(dict.fromkeys(values))
    for value in unique:
        if not value or len(value) > MAX_SHORT or "\x00" in value:
            chk.text(value, path, f"[{list(values).index(value)}]", MAX_SHORT, required=True)
    return unique


_ITEM_TITLES = ("title", "sort_title", "original_title", "tagline")
_ITEM_NUMBERS = ("index", "parent_index", "child_count", "leaf_count", "rating", "audience_rating")
_MEDIA_NUMBERS = ("bitrate", "width", "height", "aspect_ratio", "audio_channels")
_MEDIA_TEXTS = ("audio_codec", "video_codec", "video_resolution", "container", "video_frame_rate", "video_profile")
_PART_URLS = ("plex_key", "plex_path", "local_path")
_PART_TEXTS = ("container", "video_profile", "audio_profile")
_STREAM_NUMBERS = ("index", "width", "height", "channels", "bitrate")
_STREAM_TEXTS = (
    "codec", "language", "language_code", "title", "display_title", "profile", "frame_rate", "audio_channel_layout",
)  # fmt: skip


def flatten_item(chk: Checker, inc: Incoming, item_id: ItemId, library_id: uuid.UUID, rows: Rows) -> None:
    """Validate one item and append its rows; violations go to `chk`."""
    it = inc.item
    p = f"items[{inc.position}]"
    chk.enum(it.kind, ITEM_KINDS, p, ".kind", "item kind")
    if it.parent_rating_key:
        chk.text(it.parent_rating_key, p, ".parent_rating_key", MAX_KEY)
        if it.parent_rating_key == it.rating_key:
            chk.add(f"{p}.parent_rating_key", "must not equal the item's own rating_key")
    chk.texts(it, p, _ITEM_TITLES, MAX_TITLE)
    chk.text(it.plot, p, ".plot", MAX_TEXT)
    chk.text(it.etag, p, ".etag", MAX_KEY)
    chk.text(it.content_rating, p, ".content_rating", MAX_SHORT)
    chk.text(it.plex_guid, p, ".plex_guid", MAX_URL)
    if it.year and not 1800 <= it.year <= 3000:
        chk.add(f"{p}.year", f"must be 0 (unknown) or between 1800 and 3000, got {it.year}")
    release: date | None = None
    if it.release_date:
        try:
            release = date.fromisoformat(it.release_date)
        except ValueError:
            chk.add(f"{p}.release_date", f"must be an ISO 8601 date (YYYY-MM-DD), got {it.release_date[:40]!r}")
    chk.non_negatives(it, p, _ITEM_NUMBERS)
    duration_ms = to_ms(it.duration)
    chk.non_negative(duration_ms, p, ".duration")

    genres = _tag_list(chk, it.genres, f"{p}.genres") if it.genres else []
    studios = _tag_list(chk, it.studios, f"{p}.studios") if it.studios else []
    labels = _tag_list(chk, it.labels, f"{p}.labels") if it.labels else []
    countries = _tag_list(chk, it.countries, f"{p}.countries") if it.countries else []
    networks = _tag_list(chk, it.networks, f"{p}.networks") if it.networks else []

    people: list[str] = []
    credit_keys: set[tuple[int, str, int]] = set()
    credits_append = rows.credits.append
    for j, c in enumerate(it.credits):
        name, character, thumb = c.name, c.character, c.thumb_url
        if (
            c.role not in CREDIT_ROLES or not name or len(name) > MAX_SHORT or len(character) > MAX_SHORT
            or len(thumb) > MAX_URL or c.order < 0 or "\x00" in name or "\x00" in character or "\x00" in thumb
        ):  # fmt: skip
            cp = f"{p}.credits[{j}]"
            chk.enum(c.role, CREDIT_ROLES, cp, ".role", "credit role")
            chk.text(name, cp, ".name", MAX_SHORT, required=True)
            chk.text(character, cp, ".character", MAX_SHORT)
            chk.text(thumb, cp, ".thumb_url", MAX_URL)
            if c.order < 0:
                chk.add(f"{cp}.order", f"must not be negative, got {c.order}")
        key = (c.role, name, c.plex_tag_id)
        if key in credit_keys:  # Plex repeats people now and then; the first credit wins
            continue
        credit_keys.add(key)
        people.append(name)
        credits_append((item_id, c.role, (name, c.plex_tag_id), c.order, character, thumb))

    guids: dict[str, dict[str, str]] = {}
    for j, g in enumerate(it.guids):
        uri = g.uri
        gp = f"{p}.guids[{j}]"
        chk.text(uri, gp, ".uri", MAX_URL, required=True)
        chk.text(g.provider, gp, ".provider", MAX_SHORT)
        chk.text(g.external_id, gp, ".external_id", MAX_URL)
        if uri not in guids:  # the first of a repeated URI wins
            provider, _, ext = uri.partition("://")
            guids[uri] = guid_entry(uri, g.provider or provider, g.external_id or ext)

    artwork: dict[tuple[int, str], dict[str, Any]] = {}
    for j, a in enumerate(it.artwork):
        ap = f"{p}.artwork[{j}]"
        chk.enum(a.kind, ARTWORK_KINDS, ap, ".kind", "artwork kind")
        url = chk.text(a.url, ap, ".url", MAX_URL, required=True)
        chk.text(a.source, ap, ".source", MAX_SHORT)
        if (a.kind, url) not in artwork:
            artwork[a.kind, url] = artwork_entry(a.kind, url, a.source, a.updated_at)

    media_ids: set[int] = set()
    streams_append = rows.streams.append
    for j, m in enumerate(it.media):
        mp = f"{p}.media[{j}]"
        mid = m.plex_media_id
        chk.plex_id(mid, media_ids, f"{mp}.plex_media_id", "media", "item")
        m_ms = to_ms(m.duration)
        chk.non_negative(m_ms, mp, ".duration")
        chk.non_negatives(m, mp, _MEDIA_NUMBERS)
        chk.texts(m, mp, _MEDIA_TEXTS, MAX_SHORT)
        rows.versions.append(
            (
                item_id, mid, j, m_ms, m.bitrate, m.width, m.height, m.aspect_ratio, m.audio_channels,
                m.audio_codec, m.video_codec, m.video_resolution, m.container, m.video_frame_rate, m.video_profile,
            )
        )  # fmt: skip
        part_ids: set[int] = set()
        for k, part in enumerate(m.parts):
            pp = f"{mp}.parts[{k}]"
            pid = part.plex_part_id
            chk.plex_id(pid, part_ids, f"{pp}.plex_part_id", "part", "media version")
            chk.non_negative(part.size_bytes, pp, ".size_bytes")
            p_ms = to_ms(part.duration)
            chk.non_negative(p_ms, pp, ".duration")
            chk.texts(part, pp, _PART_URLS, MAX_URL)
            chk.texts(part, pp, _PART_TEXTS, MAX_SHORT)
            chk.enum(part.state, PART_STATES, pp, ".state", "part state")
            rows.parts.append(
                (
                    item_id, mid, pid, k, part.plex_key, part.plex_path, part.local_path, part.size_bytes, p_ms,
                    part.container, part.video_profile, part.audio_profile, part.state,
                )
            )  # fmt: skip
            stream_ids: set[int] = set()
            for n, s in enumerate(part.streams):
                sid = s.plex_stream_id
                row = (
                    item_id, mid, pid, sid, n, s.kind, s.index, s.codec, s.language, s.language_code, s.title,
                    s.display_title, s.is_default, s.forced, s.width, s.height, s.channels, s.bitrate,
                    s.profile, s.frame_rate, s.audio_channel_layout, s.external_key,
                )  # fmt: skip
                if (
                    sid < 0 or sid in stream_ids or s.kind not in STREAM_KINDS
                    or min(row[14:18]) < 0 or s.index < 0 or len(s.external_key) > MAX_URL
                    or max(map(len, row[7:12])) > MAX_SHORT or max(map(len, row[18:21])) > MAX_SHORT
                    or "\x00" in "".join((*row[7:12], *row[18:22]))
                ):  # fmt: skip
                    sp = f"{pp}.streams[{n}]"
                    chk.plex_id(sid, stream_ids, f"{sp}.plex_stream_id", "stream", "part")
                    chk.enum(s.kind, STREAM_KINDS, sp, ".kind", "stream kind")
                    chk.non_negatives(s, sp, _STREAM_NUMBERS)
                    chk.texts(s, sp, _STREAM_TEXTS, MAX_SHORT)
                    chk.text(s.external_key, sp, ".external_key", MAX_URL)
                stream_ids.add(sid)
                streams_append(row)

    chapter_idx: set[int] = set()
    for j, ch in enumerate(it.chapters):
        cp = f"{p}.chapters[{j}]"
        if ch.index in chapter_idx:
            chk.add(f"{cp}.index", f"duplicate chapter index {ch.index}")
        chapter_idx.add(ch.index)
        chk.text(ch.title, cp, ".title", MAX_TITLE)
        start, end = to_ms(ch.start), to_ms(ch.end)
        chk.non_negative(start, cp, ".start")
        chk.non_negative(end, cp, ".end")
        rows.chapters.append((item_id, ch.index, ch.title, start, end))

    title, sort_title, original_title = it.title, it.sort_title, it.original_title
    search_title = " ".join(t for t in (title, original_title, sort_title if sort_title != title else "") if t)
    rows.items.append(
        (
            item_id, library_id, it.kind, it.rating_key, it.parent_rating_key, it.etag, inc.state, inc.digest,
            title, sort_title, original_title, it.plot, it.tagline, it.year, release, it.content_rating, it.index,
            it.parent_index, duration_ms, it.rating, it.audience_rating, it.child_count, it.leaf_count, it.plex_guid,
            to_datetime(it.plex_added_at), to_datetime(it.plex_updated_at),
            search_title.casefold(),
            search_vector(search_title.casefold(), " ".join(people).casefold(), " ".join(genres).casefold()),
            text_array(genres), text_array(studios), text_array(labels), text_array(countries),
            text_array(networks), json_list(list(guids.values())), json_list(list(artwork.values())),
        )
    )  # fmt: skip


def flatten_items(batch: Sequence[tuple[Incoming, ItemId]], library_id: uuid.UUID) -> Rows:
    """Validate and flatten the items to write; the whole batch is rejected on any violation, every offending
    field named by its path (e.g. items[3].media[0].parts[0].size_bytes)."""
    chk = Checker()
    rows = Rows()
    for inc, item_id in batch:
        flatten_item(chk, inc, item_id, library_id, rows)
    if chk.violations:
        raise InvalidArgumentError(chk.violations)
    return rows


@dataclass
class CollectionIn:
    position: int
    message: common_pb2.Collection
    digest: bytes


def prepare_collections(request: catalog_pb2.WriteItemsRequest) -> list[CollectionIn]:
    chk = Checker()
    keys: dict[str, int] = {}
    out: list[CollectionIn] = []
    for i, col in enumerate(request.collections):
        p = f"collections[{i}]"
        key = chk.text(col.rating_key, p, ".rating_key", MAX_KEY, required=True)
        if key in keys:
            chk.add(f"{p}.rating_key", f"duplicates collections[{keys[key]}] in this batch")
        keys[key] = i
        if col.library_id and col.library_id != request.library_id:
            chk.add(f"{p}.library_id", "must be empty or equal to library_id")
        chk.texts(col, p, ("title", "sort_title"), MAX_TITLE)
        chk.text(col.summary, p, ".summary", MAX_TEXT)
        chk.text(col.etag, p, ".etag", MAX_KEY)
        if col.child_count < 0:
            chk.add(f"{p}.child_count", f"must not be negative, got {col.child_count}")
        for j, a in enumerate(col.artwork):
            chk.enum(a.kind, ARTWORK_KINDS, f"{p}.artwork[{j}]", ".kind", "artwork kind")
            chk.text(a.url, f"{p}.artwork[{j}]", ".url", MAX_URL, required=True)
        if len(col.member_rating_keys) > MAX_SEEN:
            chk.add(f"{p}.member_rating_keys", f"at most {MAX_SEEN} members")
        for j, member in enumerate(col.member_rating_keys):
            if not member or len(member) > MAX_KEY or "\x00" in member:
                chk.text(member, f"{p}.member_rating_keys", f"[{j}]", MAX_KEY, required=True)
        col.ClearField("id")
        col.ClearField("library_id")
        out.append(CollectionIn(i, col, content_hash(col)))
    if chk.violations:
        raise InvalidArgumentError(chk.violations)
    return out
