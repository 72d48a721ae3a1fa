"""The in-memory library: sections, items and their tree, in the exact shape Plex serves.

One model feeds both the JSON and the XML renderers and the Python API tests use, so the three can
never disagree. Items keep a small skeleton; full metadata is generated on demand (deterministically,
from the seed) and materialized only when a control call mutates it.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from plexsync.fakeplex import generate as gen

ItemType = Literal["movie", "show", "season", "episode", "collection"]
SectionKind = Literal["movie", "show", "other"]
SECTION_KINDS: tuple[str, ...] = ("movie", "show", "other")
TYPE_NUMBERS: dict[str, int] = {"movie": 1, "show": 2, "season": 3, "episode": 4, "collection": 18}
TYPE_NAMES: dict[int, str] = {v: k for k, v in TYPE_NUMBERS.items()}
LISTING_TAG_LIMITS = {"Genre": 2, "Country": 2, "Director": 1, "Writer": 1, "Role": 3}
_NEW_ID_BASE = 10_000_000_000


class LibraryError(Exception):
    """A control operation that cannot be applied (unknown item, wrong parent type...)."""


@dataclass(frozen=True, slots=True)
class SectionSpec:
    """One library section to generate. ``seasons``/``episodes`` are per show/per season."""

    kind: SectionKind
    title: str
    count: int = 0
    seasons: int = 0
    episodes: int = 0
    collections: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SectionSpec:
        """A section from JSON (``kind`` or ``type``); bad kinds and negative sizes are a ValueError, not a
        half-built library."""
        kind = data.get("kind", data.get("type"))
        if kind not in SECTION_KINDS:
            raise ValueError(f"kind must be one of {SECTION_KINDS}, not {kind!r}")
        title = data.get("title") or str(kind).title()
        if not isinstance(title, str):
            raise ValueError("title must be a string")
        sizes: dict[str, int] = {}
        for name in ("count", "seasons", "episodes", "collections"):
            raw = data.get(name, 0)
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise ValueError(f"{name} must be an integer")
            value = int(raw)
            if value < 0:
                raise ValueError(f"{name} must not be negative")
            sizes[name] = value
        return cls(kind=cast(SectionKind, kind), title=title, **sizes)


@dataclass(frozen=True, slots=True)
class LibrarySpec:
    seed: int = 1
    sections: tuple[SectionSpec, ...] = ()

    @classmethod
    def from_sizes(
        cls,
        *,
        movies: int = 50,
        shows: int = 5,
        seasons: int = 2,
        episodes: int = 5,
        other_videos: int = 5,
        seed: int = 1,
        movie_collections: int | None = None,
        show_collections: int | None = None,
    ) -> LibrarySpec:
        """Movies (key 1), TV Shows (key 2), Other Videos (key 3) — the usual three-section server."""
        mc = movie_collections if movie_collections is not None else min(10, max(1, movies // 10))
        sc = show_collections if show_collections is not None else min(5, max(1, shows // 3))
        return cls(
            seed=seed,
            sections=(
                SectionSpec("movie", "Movies", count=movies, collections=mc if movies else 0),
                SectionSpec(
                    "show", "TV Shows", count=shows, seasons=seasons, episodes=episodes, collections=sc if shows else 0
                ),
                SectionSpec("other", "Other Videos", count=other_videos),
            ),
        )

    @classmethod
    def from_json(cls, data: str | dict[str, Any]) -> LibrarySpec:
        """Accepts a dict, a JSON string, or a path to a JSON file."""
        if isinstance(data, str):
            text = data.strip()
            if not text.startswith("{"):
                text = Path(text).read_text(encoding="utf-8")
            data = json.loads(text)
        assert isinstance(data, dict)
        sections = tuple(SectionSpec.from_dict(s) for s in data.get("sections", []))
        return cls(seed=int(data.get("seed", 1)), sections=sections)


@dataclass(slots=True, eq=False)
class Section:
    key: int
    kind: SectionKind
    title: str
    uuid: str
    path: str
    created_at: int
    updated_at: int
    items: list[int] = field(default_factory=list)  # top-level rating keys (movies or shows), sorted
    collections: list[int] = field(default_factory=list)

    @property
    def type(self) -> str:
        return "show" if self.kind == "show" else "movie"

    @property
    def agent(self) -> str:
        return {"movie": "tv.plex.agents.movie", "show": "tv.plex.agents.series"}.get(
            self.kind, "com.plexapp.agents.none"
        )

    @property
    def scanner(self) -> str:
        return {"movie": "Plex Movie", "show": "Plex TV Series"}.get(self.kind, "Plex Video Files Scanner")

    def to_plex(self) -> dict[str, Any]:
        return {
            "allowSync": True,
            "art": "/:/resources/movie-fanart.jpg",
            "composite": f"/library/sections/{self.key}/composite/{self.updated_at}",
            "filters": True,
            "refreshing": False,
            "thumb": f"/:/resources/{self.type}.png",
            "key": str(self.key),
            "type": self.type,
            "title": self.title,
            "agent": self.agent,
            "scanner": self.scanner,
            "language": "en-US" if self.kind != "other" else "xn",
            "uuid": self.uuid,
            "updatedAt": self.updated_at,
            "createdAt": self.created_at,
            "scannedAt": self.updated_at,
            "content": True,
            "directory": True,
            "contentChangedAt": self.updated_at,
            "hidden": False,
            "Location": [{"id": self.key, "path": self.path}],
        }


@dataclass(slots=True, eq=False)
class Node:
    """Skeleton of one item; ``content`` is None until a mutation materializes it."""

    rating_key: int
    type: ItemType
    section_key: int
    title: str
    year: int | None = None
    network: int | None = None
    parent: int | None = None
    index: int | None = None
    added_at: int = 0
    updated_at: int = 0
    children: list[int] = field(default_factory=list)  # seasons/episodes, or collection members
    collections: list[int] = field(default_factory=list)
    content: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A change as Plex announces it on the notification websocket."""

    rating_key: int
    section_key: int
    type: str
    title: str
    state: int  # 0 created, 5 done, 9 deleted — Plex's timeline states
    metadata_state: str | None
    updated_at: int
    parent: int | None = None
    root: int | None = None


def _now_after(previous: int) -> int:
    """Plex's updatedAt is in seconds; a change must still move it forward within one second."""
    return max(int(time.time()), previous + 1)


class Library:
    """All sections and items of one fake server. Thread-unsafe; used from one event loop."""

    def __init__(self, spec: LibrarySpec | None = None, *, machine_identifier: str = "") -> None:
        self.spec = spec or LibrarySpec.from_sizes()
        self.seed = self.spec.seed
        self.machine_identifier = machine_identifier
        self.sections: dict[int, Section] = {}
        self.nodes: dict[int, Node] = {}
        self.version = 0  # bumped by every mutation; response caches key on it
        self._next_rk = 1
        self._next_section = 1
        self._new_ids = itertools.count(_NEW_ID_BASE)
        self._content_cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._list_cache: dict[tuple[int, int], list[int]] = {}
        self._build()

    # ----------------------------------------------------------------- generation
    def _rk(self) -> int:
        rk = self._next_rk
        self._next_rk += 1
        return rk

    def _build(self) -> None:
        for spec in self.spec.sections:
            created = gen.BASE_TS - 86400 * (10 - min(self._next_section, 9))
            self._generate_section(spec, created, gen.BASE_TS + gen.SPAN_TS)

    def _generate_section(self, spec: SectionSpec, created_at: int, updated_at: int) -> Section:
        """Generate one section and its items. Section keys and rating keys only ever grow, as on Plex, so a
        section added at run time never reuses a key a deleted one had (clients' caches stay honest)."""
        seed = self.seed
        n = self._next_section
        self._next_section += 1
        path = {"movie": "/data/movies", "show": "/data/tv", "other": "/data/other"}[spec.kind]
        path = path if n <= 3 else f"{path}{n}"
        sec = Section(
            key=n,
            kind=spec.kind,
            title=spec.title,
            uuid=str(uuid.UUID(int=gen._rng(seed, "section", n).getrandbits(128), version=4)),
            path=path,
            created_at=created_at,
            updated_at=updated_at,
        )
        self.sections[n] = sec
        for _ in range(spec.count):
            rk = self._rk()
            kind = "other" if spec.kind == "other" else spec.kind
            sk = gen.skeleton(seed, kind, rk)
            added = gen.added_at(seed, rk)
            node = Node(
                rk,
                "show" if spec.kind == "show" else "movie",
                n,
                sk.title,
                sk.year,
                sk.network,
                added_at=added,
                updated_at=added + 3600,
            )
            self.nodes[rk] = node
            sec.items.append(rk)
            if spec.kind == "show":
                for s in range(1, spec.seasons + 1):
                    srk = self._rk()
                    season = Node(
                        srk,
                        "season",
                        n,
                        "Season " + str(s),
                        parent=rk,
                        index=s,
                        added_at=added,
                        updated_at=added + 3600,
                    )
                    self.nodes[srk] = season
                    node.children.append(srk)
                    for e in range(1, spec.episodes + 1):
                        erk = self._rk()
                        eadded = added + s * 86400 * 7 + e * 3600
                        etitle = gen.episode_title(seed, erk, e)
                        self.nodes[erk] = Node(
                            erk, "episode", n, etitle, parent=srk, index=e, added_at=eadded, updated_at=eadded + 600
                        )
                        season.children.append(erk)
                        season.updated_at = max(season.updated_at, eadded + 600)
                    node.updated_at = max(node.updated_at, season.updated_at)
        self._sort_section(sec)
        pool = list(sec.items)
        for _ in range(spec.collections):
            crk = self._rk()
            content = gen.collection_content(seed, crk, sec.type)
            added = gen.added_at(seed, crk)
            coll = Node(crk, "collection", n, content["title"], added_at=added, updated_at=added + 60)
            coll.children = gen.pick_members(seed, crk, pool, 2, 12)
            for member in coll.children:
                self.nodes[member].collections.append(crk)
            self.nodes[crk] = coll
            sec.collections.append(crk)
        return sec

    def _sort_key(self, rk: int) -> tuple[str, int]:
        return gen.sort_title(self.nodes[rk].title).casefold(), rk

    def _sort_section(self, sec: Section) -> None:
        sec.items.sort(key=self._sort_key)

    def _generated(self, node: Node) -> dict[str, Any]:
        seed, rk = self.seed, node.rating_key
        sec = self.sections[node.section_key]
        if node.type == "movie":
            sk = gen.Skeleton(node.title, node.year, None)
            if sec.kind == "other":
                return gen.other_content(seed, rk, sk, sec.path)
            return gen.movie_content(seed, rk, sk, sec.path)
        if node.type == "show":
            return gen.show_content(seed, rk, gen.Skeleton(node.title, node.year, node.network))
        if node.type == "season":
            return gen.season_content(seed, rk, node.index or 0)
        if node.type == "episode":
            season = self.nodes[node.parent or 0]
            show = self.nodes[season.parent or 0]
            show_title = gen.skeleton(seed, "show", show.rating_key).title
            return gen.episode_content(seed, rk, show_title, season.index or 0, node.index or 0, sec.path)
        return gen.collection_content(seed, rk, sec.type)

    def _content(self, node: Node) -> dict[str, Any]:
        if node.content is not None:
            return node.content
        cached = self._content_cache.get(node.rating_key)
        if cached is None:
            cached = self._generated(node)
            self._content_cache[node.rating_key] = cached
            if len(self._content_cache) > 4096:
                self._content_cache.popitem(last=False)
        return cached

    def _materialize(self, node: Node) -> dict[str, Any]:
        if node.content is None:
            node.content = copy.deepcopy(self._content(node))
            self._content_cache.pop(node.rating_key, None)
        return node.content

    # ----------------------------------------------------------------- queries
    def node(self, rating_key: int) -> Node:
        try:
            return self.nodes[rating_key]
        except KeyError:
            raise LibraryError(f"no item with ratingKey {rating_key}") from None

    def section(self, key: int) -> Section:
        try:
            return self.sections[key]
        except KeyError:
            raise LibraryError(f"no section {key}") from None

    def list_keys(self, section_key: int, type_num: int | None = None) -> list[int]:
        """Rating keys a section listing returns for ``type``, in Plex's default (title) order."""
        sec = self.section(section_key)
        tnum = type_num if type_num is not None else TYPE_NUMBERS[sec.type]
        cache_key = (section_key, tnum)
        hit = self._list_cache.get(cache_key)
        if hit is not None:
            return hit
        out: list[int]
        if tnum == 18:
            out = sorted(sec.collections, key=lambda rk: (self.nodes[rk].title.casefold(), rk))
        elif sec.kind == "show" and tnum in (2, 3, 4):
            if tnum == 2:
                out = list(sec.items)
            elif tnum == 3:
                out = [s for show in sec.items for s in self.nodes[show].children]
            else:
                out = [e for show in sec.items for s in self.nodes[show].children for e in self.nodes[s].children]
        elif sec.kind != "show" and tnum == 1:
            out = list(sec.items)
        else:
            out = []
        self._list_cache[cache_key] = out
        return out

    def children_keys(self, rating_key: int) -> list[int]:
        return list(self.node(rating_key).children)

    def leaf_keys(self, rating_key: int) -> list[int]:
        node = self.node(rating_key)
        if node.type == "show":
            return [e for s in node.children for e in self.nodes[s].children]
        if node.type == "season":
            return list(node.children)
        return []

    def networks(self) -> list[dict[str, Any]]:
        """Networks in use by shows, as ``/library/tags?type=319`` lists them."""
        used = sorted({n.network for n in self.nodes.values() if n.type == "show" and n.network is not None})
        return [
            {
                "id": gen.vocab_id(gen.NETWORK_BASE, i),
                "filter": f"network={gen.vocab_id(gen.NETWORK_BASE, i)}",
                "tag": gen.NETWORKS[i],
                "tagType": gen.TAG_NETWORK,
            }
            for i in used
        ]

    def network_index(self, tag_id: int) -> int | None:
        i = tag_id - gen.NETWORK_BASE
        return i if 0 <= i < len(gen.NETWORKS) else None

    def leaf_count(self, node: Node) -> int:
        if node.type == "show":
            return sum(len(self.nodes[s].children) for s in node.children)
        return len(node.children)

    def render(
        self,
        rating_key: int,
        *,
        full: bool = True,
        include_guids: bool = True,
        include_chapters: bool = False,
        include_section: bool = False,
    ) -> dict[str, Any]:
        """One item as Plex's JSON ``Metadata`` entry (``full`` = /library/metadata, else a listing)."""
        node = self.node(rating_key)
        content = self._content(node)
        sec = self.sections[node.section_key]
        rk = node.rating_key
        t = node.type
        up = node.updated_at
        d: dict[str, Any] = {"ratingKey": str(rk)}
        if t in ("show", "season"):
            d["key"] = f"/library/metadata/{rk}/children"
        elif t == "collection":
            d["key"] = f"/library/collections/{rk}/children"
        else:
            d["key"] = f"/library/metadata/{rk}"
        parent = self.nodes.get(node.parent) if node.parent is not None else None
        grand = self.nodes.get(parent.parent) if parent is not None and parent.parent is not None else None
        if parent is not None:
            d["parentRatingKey"] = str(parent.rating_key)
        if grand is not None:
            d["grandparentRatingKey"] = str(grand.rating_key)
        d["guid"] = content["guid"]
        if parent is not None:
            d["parentGuid"] = self._content(parent)["guid"]
        if grand is not None:
            d["grandparentGuid"] = self._content(grand)["guid"]
        if include_section or full:
            d["librarySectionID"] = sec.key
            d["librarySectionTitle"] = sec.title
            d["librarySectionKey"] = f"/library/sections/{sec.key}"
        d["type"] = t
        for k, v in content.items():
            if k[0] == "_" or isinstance(v, list):
                continue
            d[k] = v
        if grand is not None:
            d["grandparentKey"] = f"/library/metadata/{grand.rating_key}"
            d["grandparentTitle"] = self._content(grand)["title"]
        if parent is not None:
            d["parentKey"] = f"/library/metadata/{parent.rating_key}"
            d["parentTitle"] = self._content(parent)["title"]
        if t == "show":
            d["index"] = 1
        elif node.index is not None:
            d["index"] = node.index
        if t == "episode" and parent is not None and parent.index is not None:
            d["parentIndex"] = parent.index
        if t == "season" and parent is not None:
            d["parentIndex"] = 1
        d["thumb"] = f"/library/metadata/{rk}/thumb/{up}"
        if content.get("_art"):
            d["art"] = f"/library/metadata/{rk}/art/{up}"
        if content.get("_banner"):
            d["banner"] = f"/library/metadata/{rk}/banner/{up}"
        if parent is not None:
            d["parentThumb"] = f"/library/metadata/{parent.rating_key}/thumb/{parent.updated_at}"
        if grand is not None:
            d["grandparentThumb"] = f"/library/metadata/{grand.rating_key}/thumb/{grand.updated_at}"
            if self._content(grand).get("_art"):
                d["grandparentArt"] = f"/library/metadata/{grand.rating_key}/art/{grand.updated_at}"
        if t in ("show", "season"):
            d["leafCount"] = self.leaf_count(node)
            d["viewedLeafCount"] = 0
        if t in ("show", "collection"):
            d["childCount"] = len(node.children)
        d["addedAt"] = node.added_at
        d["updatedAt"] = up
        for k, v in content.items():
            if not isinstance(v, list) or k[0] == "_":
                continue
            if k == "Guid" and not (full or include_guids):
                continue
            if k == "Chapter" and not (full and include_chapters):
                continue
            if not v:
                continue
            if k == "Media":
                d[k] = v if full else [_strip_streams(m) for m in v]
                continue
            limit = LISTING_TAG_LIMITS.get(k)
            d[k] = v if full or limit is None else v[:limit]
        if node.collections and t != "collection":
            d["Collection"] = [self._collection_tag(c) for c in node.collections]
        return d

    def _collection_tag(self, crk: int) -> dict[str, Any]:
        c = self.nodes[crk]
        return {"id": crk, "filter": f"collection={crk}", "tag": c.title, "ratingKey": str(crk)}

    def items(self, *, include_chapters: bool = True) -> Iterator[dict[str, Any]]:
        """Every item (sections in key order; shows followed by their seasons and episodes; then
        collections), each as the full metadata ``/library/metadata/{ratingKey}`` would return."""
        for sec in self.sections.values():
            for rk in sec.items:
                yield self.render(rk, include_chapters=include_chapters)
                for s in self.nodes[rk].children:
                    yield self.render(s, include_chapters=include_chapters)
                    for e in self.nodes[s].children:
                        yield self.render(e, include_chapters=include_chapters)
            for c in sec.collections:
                yield self.render(c, include_chapters=include_chapters)

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in TYPE_NUMBERS}
        for n in self.nodes.values():
            out[n.type] += 1
        return out

    # ----------------------------------------------------------------- mutations
    def _touch(self, node: Node) -> list[Event]:
        """Bump an item and, as Plex does, the season and show above it."""
        events = []
        cur: Node | None = node
        first = True
        while cur is not None:
            cur.updated_at = _now_after(cur.updated_at)
            if first:
                events.append(self._event(cur, 5, None))
                first = False
            cur = self.nodes.get(cur.parent) if cur.parent is not None else None
        self.sections[node.section_key].updated_at = _now_after(self.sections[node.section_key].updated_at)
        self._changed()
        return events

    def _changed(self) -> None:
        self.version += 1
        self._list_cache.clear()

    def _event(self, node: Node, state: int, metadata_state: str | None) -> Event:
        parent = self.nodes.get(node.parent) if node.parent is not None else None
        root = self.nodes.get(parent.parent) if parent is not None and parent.parent is not None else parent
        return Event(
            node.rating_key,
            node.section_key,
            node.type,
            node.title,
            state,
            metadata_state,
            node.updated_at,
            parent.rating_key if parent else None,
            root.rating_key if root else None,
        )

    def add_item(
        self,
        section_key: int,
        *,
        type: str | None = None,
        parent: int | None = None,
        index: int | None = None,
        fields: dict[str, Any] | None = None,
    ) -> tuple[int, list[Event]]:
        """Add a movie/show to a section, a season to a show, an episode to a season, or a collection."""
        sec = self.section(section_key)
        t = type or ("episode" if parent is not None and self.node(parent).type == "season" else None)
        t = t or ("season" if parent is not None else sec.type)
        if t not in TYPE_NUMBERS:
            raise LibraryError(f"unknown type {t!r}")
        rk = self._rk()
        now = int(time.time())
        if t in ("season", "episode"):
            if parent is None:
                raise LibraryError(f"a {t} needs a parent")
            par = self.node(parent)
            want = "show" if t == "season" else "season"
            if par.type != want or par.section_key != section_key:
                raise LibraryError(f"parent {parent} is not a {want} in section {section_key}")
            idx = index if index is not None else max([self.nodes[c].index or 0 for c in par.children] + [0]) + 1
            node = Node(rk, cast(ItemType, t), section_key, "", parent=parent, index=idx, added_at=now, updated_at=now)
            self.nodes[rk] = node
            par.children.append(rk)
            par.children.sort(key=lambda c: (self.nodes[c].index or 0, c))
        elif t == "collection":
            node = Node(rk, "collection", section_key, "", added_at=now, updated_at=now)
            self.nodes[rk] = node
            sec.collections.append(rk)
        else:
            if t != sec.type:
                raise LibraryError(f"section {section_key} holds {sec.type}s, not {t}s")
            kind = "other" if sec.kind == "other" else t
            sk = gen.skeleton(self.seed, kind, rk)
            node = Node(rk, cast(ItemType, t), section_key, sk.title, sk.year, sk.network, added_at=now, updated_at=now)
            self.nodes[rk] = node
        content = self._materialize(node)
        if fields:
            self._apply_fields(node, content, fields)
        node.title = content["title"]
        if t in ("movie", "show"):
            # The items are kept sorted: insert in place (a bulk import of thousands must not re-sort each time).
            bisect.insort(sec.items, rk, key=self._sort_key)
        events = [self._event(node, 0, "created")]
        events += self._touch(node)
        return rk, events

    def add_section(self, spec: SectionSpec) -> Section:
        """Add a library section with generated items, as when a Plex user adds a library and it is scanned:
        the same generator as the initial sections, new section and rating keys."""
        now = int(time.time())
        sec = self._generate_section(spec, now, now)
        self._changed()
        return sec

    def remove_section(self, key: int) -> list[Event]:
        """Delete a section and every item in it (a library removed in Plex)."""
        sec = self.section(key)
        doomed = [rk for rk, n in self.nodes.items() if n.section_key == key]
        events = [self._event(self.nodes[rk], 9, "deleted") for rk in sec.items + sec.collections]
        for rk in doomed:
            del self.nodes[rk]
            self._content_cache.pop(rk, None)
        del self.sections[key]
        self._changed()
        return events

    def section_counts(self, key: int) -> dict[str, int]:
        """Items of one section by type (the control API's answer to a new section)."""
        self.section(key)
        out = {k: 0 for k in TYPE_NUMBERS}
        for n in self.nodes.values():
            if n.section_key == key:
                out[n.type] += 1
        return out

    def _apply_fields(self, node: Node, content: dict[str, Any], fields: dict[str, Any]) -> None:
        for k, v in fields.items():
            if k in ("ratingKey", "key", "type", "addedAt", "updatedAt"):
                raise LibraryError(f"{k} is managed by the server")
            if v is None:
                content.pop(k, None)
            else:
                content[k] = v
        if "year" in fields:
            node.year = fields["year"]

    def change_item(self, rating_key: int, fields: dict[str, Any]) -> list[Event]:
        """Edit metadata fields (scalar attributes or whole tag arrays like ``Genre``); None removes."""
        node = self.node(rating_key)
        content = self._materialize(node)
        self._apply_fields(node, content, fields)
        if "title" in fields:
            node.title = content["title"]
            if node.type in ("movie", "show"):
                self._sort_section(self.sections[node.section_key])
        return self._touch(node)

    def delete_item(self, rating_key: int) -> list[Event]:
        """Delete an item with everything below it; parents are bumped as on Plex."""
        node = self.node(rating_key)
        sec = self.sections[node.section_key]
        events: list[Event] = []
        doomed = [node.rating_key]
        if node.type != "collection":
            doomed += self.leaf_keys(rating_key) if node.type == "show" else []
            doomed += list(node.children) if node.type in ("show", "season") else []
        for rk in doomed:
            n = self.nodes[rk]
            events.append(self._event(n, 9, "deleted"))
            for c in n.collections:
                self.nodes[c].children.remove(rk)
        if node.type == "collection":
            for m in node.children:
                self.nodes[m].collections.remove(rating_key)
            sec.collections.remove(rating_key)
        elif node.parent is not None:
            par = self.nodes[node.parent]
            par.children.remove(rating_key)
            events += self._touch(par)
        else:
            sec.items.remove(rating_key)
        for rk in doomed:
            del self.nodes[rk]
            self._content_cache.pop(rk, None)
        sec.updated_at = _now_after(sec.updated_at)
        self._changed()
        return events

    def move_item(self, rating_key: int, new_parent: int, index: int | None = None) -> list[Event]:
        """Move an episode to another season (or a season to another show) of the same section."""
        node = self.node(rating_key)
        target = self.node(new_parent)
        want = {"episode": "season", "season": "show"}.get(node.type)
        if want is None or target.type != want or target.section_key != node.section_key:
            raise LibraryError(f"cannot move a {node.type} under a {target.type}")
        self._materialize(node)
        if node.parent is not None:
            old = self.nodes[node.parent]
            old.children.remove(rating_key)
            old_events = self._touch(old)
        else:
            old_events = []
        node.parent = new_parent
        if index is not None:
            node.index = index
        target.children.append(rating_key)
        target.children.sort(key=lambda c: (self.nodes[c].index or 0, c))
        return self._touch(node) + old_events

    def add_media(self, rating_key: int, *, file: str | None = None, size: int | None = None) -> list[Event]:
        """Add a Media version (one Part) to a movie or episode, as when a second file is found."""
        node = self.node(rating_key)
        content = self._materialize(node)
        media = content.get("Media")
        if not media:
            raise LibraryError(f"{node.type} {rating_key} has no media")
        new = copy.deepcopy(media[0])
        new["id"] = next(self._new_ids)
        new["Part"] = new["Part"][:1]
        part = new["Part"][0]
        self._renumber_part(part)
        base = part["file"].rsplit(".", 1)[0]
        part["file"] = file or f"{base} - version {len(media) + 1}.{part['container']}"
        if size is not None:
            part["size"] = size
        media.append(new)
        return self._touch(node)

    def _renumber_part(self, part: dict[str, Any]) -> None:
        part["id"] = next(self._new_ids)
        part["key"] = f"/library/parts/{part['id']}/{int(time.time())}/file.{part['container']}"
        for s in part.get("Stream", []):
            s["id"] = next(self._new_ids)
            s["key"] = f"/library/streams/{s['id']}"

    def replace_file(
        self,
        rating_key: int,
        *,
        media_index: int = 0,
        part_index: int = 0,
        file: str | None = None,
        size: int | None = None,
    ) -> list[Event]:
        """Swap the file behind a Part: new Part id/key/file/size, as Plex does on an upgrade."""
        node = self.node(rating_key)
        content = self._materialize(node)
        try:
            part = content["Media"][media_index]["Part"][part_index]
        except (KeyError, IndexError):
            raise LibraryError(f"no media {media_index} part {part_index} on {rating_key}") from None
        self._renumber_part(part)
        if file is not None:
            part["file"] = file
        else:
            base, ext = part["file"].rsplit(".", 1)
            part["file"] = f"{base} (replaced).{ext}"
        part["size"] = size if size is not None else part["size"] + 1_048_576
        return self._touch(node)


def _strip_streams(media: dict[str, Any]) -> dict[str, Any]:
    m = dict(media)
    m["Part"] = [{k: v for k, v in p.items() if k != "Stream"} for p in media.get("Part", [])]
    return m
