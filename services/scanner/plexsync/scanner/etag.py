"""Change detection: an ETag per item from what Plex reports in a listing, and roll-ups for parents.

An item's ETag is the SHA-1 of everything in its listing entry that changes when Plex's knowledge of
the item changes: identity (ratingKey, key, type, guid, parent), ``addedAt``, ``updatedAt``, titles,
indexes, dates, artwork paths, counts, external guids, every tag the listing carries (genre, label,
country, network, collection, director, writer, producer, role with character), and the identity of
every file — each Media id and each Part's id, key, file, size, duration, container and profiles,
plus stream ids when the listing carries streams. That is a superset of what ErsatzTV's ``PlexEtag``
hashes. The scanner also folds in where each file maps locally and whether it is there (`local`), so
a changed path-replacement rule or a file appearing on disk is noticed like a change in Plex.

Parents roll their children up: a season's ETag covers its own entry plus `Rollup` of its episodes'
(ratingKey, ETag) pairs, a show's covers its own entry plus its seasons' ETags, so an episode whose
file was replaced, added, moved or deleted changes its season's and show's ETags even when Plex does
not bump their ``updatedAt``. A `Rollup` is order-independent and constant-size (XOR of per-child
digests plus a count), so children can be folded in as they stream past.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from plexsync.scanner.plex_models import (
    PlexMetadata,
    PlexTag,
    Raw,
    read_bool,
    read_int,
    read_list,
    read_opt_int,
    read_str,
)

_SEP = "\x1f"
VERSION = "1"


def _tags(name: str, tags: list[PlexTag]) -> str:
    if not tags:
        return ""
    return name + "=" + "\x1e".join(f"{t.id}:{t.tag}:{t.role}:{t.rating_key}" for t in tags)


def listing_fingerprint(meta: PlexMetadata) -> list[str]:
    """The fields of a listing entry that take part in its ETag, as text."""
    m = meta
    parts: list[str] = [
        VERSION,
        m.rating_key,
        m.key,
        m.type,
        m.guid,
        m.parent_rating_key,
        str(m.added_at),
        str(m.updated_at),
        m.title,
        m.title_sort,
        m.original_title,
        str(m.index),
        str(m.parent_index),
        str(m.year),
        m.originally_available_at,
        m.thumb,
        m.art,
        m.banner,
        str(m.child_count),
        str(m.leaf_count),
        "1" if m.smart else "0",
        m.subtype,
        str(m.duration),
        "guids=" + ",".join(m.guids),
        _tags("genre", m.genres),
        _tags("label", m.labels),
        _tags("country", m.countries),
        _tags("network", m.networks),
        _tags("collection", m.collections),
        _tags("director", m.directors),
        _tags("writer", m.writers),
        _tags("producer", m.producers),
        _tags("role", m.roles),
    ]
    for media in m.media:
        parts.append(f"media={media.id}")
        for p in media.parts:
            parts.append(
                f"part={p.id}|{p.key}|{p.file}|{p.size}|{p.duration}|{p.container}|{p.video_profile}|{p.audio_profile}"
            )
            if p.streams:
                parts.append("streams=" + ",".join(str(s.id) for s in p.streams))
    return parts


_RAW_TAGS = (
    ("genre", "Genre"),
    ("label", "Label"),
    ("country", "Country"),
    ("network", "Network"),
    ("collection", "Collection"),
    ("director", "Director"),
    ("writer", "Writer"),
    ("producer", "Producer"),
    ("role", "Role"),
)


def _raw_tag(t: Raw) -> str:
    i, tag, role, rk = t.get("id"), t.get("tag"), t.get("role"), t.get("ratingKey")
    if (
        i.__class__ is int
        and tag.__class__ is str
        and (role is None or role.__class__ is str)
        and (rk is None or rk.__class__ is str)
    ):  # JSON's usual types: the same text as the readers give, without calling them
        return f"{i}:{tag}:{role or ''}:{rk or ''}"
    return f"{read_opt_int(t, 'id')}:{read_str(t, 'tag')}:{read_str(t, 'role')}:{read_str(t, 'ratingKey')}"


def _raw_tags(name: str, tags: list[Raw]) -> str:
    if not tags:
        return ""
    return name + "=" + "\x1e".join([_raw_tag(t) for t in tags])


def raw_listing_fingerprint(d: Raw) -> list[str]:
    """`listing_fingerprint` of a raw listing entry (JSON or XML-as-dict), without building a `PlexMetadata`.

    Exactly ``listing_fingerprint(PlexMetadata.parse(d))`` (tests/unit/scanner checks both on JSON and XML),
    at a fraction of the cost: an incremental scan reads every listing entry and fetches almost none.
    """
    s, i = read_str, read_int
    parts: list[str] = [
        VERSION,
        s(d, "ratingKey"),
        s(d, "key"),
        s(d, "type"),
        s(d, "guid"),
        s(d, "parentRatingKey"),
        str(i(d, "addedAt")),
        str(i(d, "updatedAt")),
        s(d, "title"),
        s(d, "titleSort"),
        s(d, "originalTitle"),
        str(read_opt_int(d, "index")),
        str(read_opt_int(d, "parentIndex")),
        str(i(d, "year")),
        s(d, "originallyAvailableAt"),
        s(d, "thumb"),
        s(d, "art"),
        s(d, "banner"),
        str(i(d, "childCount")),
        str(i(d, "leafCount")),
        "1" if read_bool(d, "smart") else "0",
        s(d, "subtype"),
        str(i(d, "duration")),
        "guids=" + ",".join(s(g, "id") for g in read_list(d, "Guid") if g.get("id")),
    ]
    for name, key in _RAW_TAGS:
        parts.append(_raw_tags(name, read_list(d, key)))
    for media in read_list(d, "Media"):
        parts.append(f"media={i(media, 'id')}")
        for p in read_list(media, "Part"):
            parts.append(
                f"part={i(p, 'id')}|{s(p, 'key')}|{s(p, 'file')}|{i(p, 'size')}|{i(p, 'duration')}|"
                f"{s(p, 'container')}|{s(p, 'videoProfile')}|{s(p, 'audioProfile')}"
            )
            streams = read_list(p, "Stream")
            if streams:
                parts.append("streams=" + ",".join(str(i(st, "id")) for st in streams))
    return parts


def raw_item_etag(d: Raw, *, local: Iterable[str] = (), children: Rollup | None = None) -> str:
    """`item_etag` of a raw listing entry."""
    return _etag(raw_listing_fingerprint(d), local, children)


def item_etag(meta: PlexMetadata, *, local: Iterable[str] = (), children: Rollup | None = None) -> str:
    """The ETag of one item: its listing entry, its files' local state, and its children's roll-up."""
    return _etag(listing_fingerprint(meta), local, children)


def _etag(fingerprint: list[str], local: Iterable[str], children: Rollup | None) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    h.update(_SEP.join(fingerprint).encode())
    for entry in local:
        h.update(b"\x1dlocal=" + entry.encode())
    if children is not None:
        h.update(b"\x1dchildren=" + children.digest().encode())
    return h.hexdigest()


class Rollup:
    """An order-independent fold of children's (ratingKey, ETag) pairs, in constant memory."""

    __slots__ = ("_acc", "count")

    def __init__(self) -> None:
        self._acc = 0
        self.count = 0

    def add(self, rating_key: str, etag: str) -> None:
        d = hashlib.sha1(f"{rating_key}{_SEP}{etag}".encode(), usedforsecurity=False).digest()
        self._acc ^= int.from_bytes(d, "big")
        self.count += 1

    def digest(self) -> str:
        return f"{self.count}:{self._acc:040x}"
