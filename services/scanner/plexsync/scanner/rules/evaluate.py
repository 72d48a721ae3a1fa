"""Evaluating a rule: cheaply on a listing entry (three-valued), then, only if that cannot decide, on full metadata.

A listing page already carries an item's content rating, year, addedAt, labels, collections, its media versions
(resolution, codec) and their files, so most rules are decided there and an excluded item costs no metadata request.
Plex cuts a listing's genres short (two at most), so a genre the listing does not show is *unknown* until the full
metadata is read: `listing_verdict` answers True (keep), False (exclude) or None (fetch, then `metadata_verdict`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

from plexsync.common.rule_syntax import (
    NEGATED,
    RESOLUTIONS,
    RESOLUTIONS_8K,
    All,
    AnyOf,
    Cond,
    Node,
    Not,
    conjuncts,
    parse,
    render,
)
from plexsync.scanner.paths import FileStates
from plexsync.scanner.plex_models import PlexMetadata, PlexParseError, Raw, read_int, read_list, read_str
from plexsync.v1 import common_pb2

# field -> the values an item has for it, and whether that list is complete (False: only part of it is known)
Values = tuple[list[str] | list[int], bool]
View = Callable[[str], Values]

# In a show library an episode reads these fields from its show (it inherits the show's content rating, genres,
# labels and collections); every other field (year, added, resolution, codec, path, kind) from the episode itself.
SHOW_FIELDS = frozenset({"rating", "genre", "label", "collection"})
# field -> (values, complete) of one show, from its listing entry (genres completed from metadata when needed)
ShowFacts = dict[str, Values]

_KIND_BY_TYPE = {"movie": "movie", "show": "show", "season": "season", "episode": "episode", "clip": "video"}
_RES = {**RESOLUTIONS, **RESOLUTIONS_8K}


def _resolution(text: str) -> int:
    value = _RES.get(text.lower().removesuffix("p"))
    if value is not None:
        return value
    return int(text) if text.isdigit() else 0


def _kind(plex_type: str, library_kind: int) -> str:
    if library_kind == common_pb2.LIBRARY_KIND_OTHER_VIDEOS and plex_type in ("movie", "clip", "video"):
        return "video"
    return _KIND_BY_TYPE.get(plex_type, plex_type)


def listing_view(d: Raw, states: FileStates, library_kind: int) -> View:
    """What a raw listing entry says about each field (genres incomplete: Plex lists only the first few)."""

    def tags(key: str) -> list[str]:
        return [read_str(t, "tag").casefold() for t in read_list(d, key)]

    def view(name: str) -> Values:
        if name == "rating":
            rating = read_str(d, "contentRating").casefold()
            return ([rating] if rating else []), True
        if name == "genre":
            return tags("Genre"), False
        if name == "label":
            return tags("Label"), True
        if name == "collection":
            return tags("Collection"), True
        if name == "year":
            year = read_int(d, "year")
            return ([year] if year else []), True
        if name == "added":
            return [read_int(d, "addedAt")], True
        if name == "resolution":
            return [_resolution(read_str(m, "videoResolution")) for m in read_list(d, "Media")], True
        if name == "codec":
            return [read_str(m, "videoCodec").casefold() for m in read_list(d, "Media")], True
        if name == "path":
            files = [read_str(p, "file") for m in read_list(d, "Media") for p in read_list(m, "Part")]
            return [states.mapper.map(f) for f in files], True
        return [_kind(read_str(d, "type"), library_kind)], True

    return view


def metadata_view(meta: PlexMetadata, states: FileStates, library_kind: int) -> View:
    """What full metadata says about each field (everything complete)."""

    def view(name: str) -> Values:
        if name == "rating":
            return ([meta.content_rating.casefold()] if meta.content_rating else []), True
        if name in ("genre", "label", "collection"):
            tags = {"genre": meta.genres, "label": meta.labels, "collection": meta.collections}[name]
            return [t.tag.casefold() for t in tags], True
        if name == "year":
            return ([meta.year] if meta.year else []), True
        if name == "added":
            return [meta.added_at], True
        if name == "resolution":
            return [_resolution(m.video_resolution) for m in meta.media], True
        if name == "codec":
            return [m.video_codec.casefold() for m in meta.media], True
        if name == "path":
            return [states.mapper.map(p.file) for m in meta.media for p in m.parts], True
        return [_kind(meta.type, library_kind)], True

    return view


def show_facts(view: View) -> ShowFacts:
    """The show-level fields of a show, from a listing or metadata view of the show."""
    return {name: view(name) for name in sorted(SHOW_FIELDS)}


def _episode_view(view: View, facts: ShowFacts) -> View:
    """An episode's view in a show library: show-level fields from its show (a show the pre-pass did not list has
    none), the rest from the episode."""

    def combined(name: str) -> Values:
        if name in SHOW_FIELDS:
            values, _ = facts.get(name, ([], True))
            return values, True
        return view(name)

    return combined


def _show_only_view(facts: ShowFacts) -> View:
    """A show's own view: its show-level fields; the episode-level ones unknown (so Kleene evaluation answers
    False only when no episode of the show could match)."""

    def view(name: str) -> Values:
        if name in SHOW_FIELDS:
            return facts.get(name, ([], True))
        return [], False

    return view


def fields_of(node: Node) -> frozenset[str]:
    """The fields a rule names."""
    if isinstance(node, Cond):
        return frozenset({node.field})
    if isinstance(node, Not):
        return fields_of(node.part)
    return frozenset().union(*(fields_of(p) for p in node.parts))


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def _test(cond: Cond, value: str | int) -> bool:
    op = NEGATED.get(cond.op, cond.op)
    for want in cond.values:
        if op == "matches":
            if isinstance(value, str) and isinstance(want, str) and _glob(want).match(value):
                return True
        elif isinstance(want, tuple):
            if isinstance(value, int) and want[0] <= value <= want[1]:
                return True
        elif op in ("=", "in"):
            if value == want:
                return True
        elif (
            isinstance(value, int)
            and isinstance(want, int)
            and (
                (op == "<" and value < want)
                or (op == "<=" and value <= want)
                or (op == ">" and value > want)
                or (op == ">=" and value >= want)
            )
        ):
            return True
    return False


def _cond(cond: Cond, view: View) -> bool | None:
    """True when some value of the item passes (any version, any file, any tag); negated operators negate that."""
    values, complete = view(cond.field)
    hit: bool | None = any(_test(cond, v) for v in values)
    if not hit and not complete:
        hit = None
    if cond.op in NEGATED:
        return None if hit is None else not hit
    return hit


def evaluate(node: Node, view: View) -> bool | None:
    """Three-valued (Kleene) evaluation: None when the view cannot decide."""
    if isinstance(node, Cond):
        return _cond(node, view)
    if isinstance(node, Not):
        inner = evaluate(node.part, view)
        return None if inner is None else not inner
    unknown = False
    if isinstance(node, All):
        for part in node.parts:
            r = evaluate(part, view)
            if r is False:
                return False
            unknown |= r is None
        return None if unknown else True
    assert isinstance(node, AnyOf)
    for part in node.parts:
        r = evaluate(part, view)
        if r is True:
            return True
        unknown |= r is None
    return None if unknown else False


@dataclass(frozen=True, slots=True)
class SyncRules:
    """A library's rule, compiled: the tree, its top-level parts (what exclusions are counted under) and a digest
    folded into the ETag of an item the listing cannot decide, so a changed rule re-reads exactly those items."""

    expression: str
    root: Node
    parts: tuple[Node, ...]
    names: tuple[str, ...]
    digest: str
    # Show libraries: show rating key -> its show-level fields (`with_shows`), read by every episode of the show.
    shows: dict[str, ShowFacts] | None = None

    @classmethod
    def compile(cls, expression: str) -> SyncRules | None:
        """None for an empty expression (sync everything); raises `RuleSyntaxError`."""
        root = parse(expression)
        if root is None:
            return None
        canonical = render(root)
        parts = conjuncts(root)
        digest = hashlib.sha1(canonical.encode(), usedforsecurity=False).hexdigest()
        return cls(canonical, root, parts, tuple(render(p) for p in parts), digest)

    def verdict(self, view: View) -> tuple[bool | None, int]:
        """(keep?, index of the first top-level part that excludes the item, or -1)."""
        result = evaluate(self.root, view)
        if result is not False:
            return result, -1
        for i, part in enumerate(self.parts):
            if evaluate(part, view) is False:
                return False, i
        return False, 0

    def with_shows(self, shows: dict[str, ShowFacts]) -> SyncRules:
        """These rules for the episodes of a show library, whose shows are ``shows``."""
        return replace(self, shows=shows)

    def show_verdict(self, facts: ShowFacts) -> tuple[bool | None, int]:
        """`verdict` of a show on its show-level fields alone: False excludes the show and everything below it."""
        return self.verdict(_show_only_view(facts))

    def listing_verdict(self, d: Raw, states: FileStates, library_kind: int) -> tuple[bool | None, int]:
        """`verdict` on a raw listing entry; an entry that cannot be read is left undecided (the metadata decides).
        With `shows` (a show library's episodes), the show-level fields are the episode's show's."""
        try:
            view = listing_view(d, states, library_kind)
            if self.shows is not None:
                view = _episode_view(view, self.shows.get(read_str(d, "grandparentRatingKey"), {}))
            return self.verdict(view)
        except PlexParseError:
            return None, -1

    def metadata_verdict(self, meta: PlexMetadata, states: FileStates, library_kind: int) -> tuple[bool, int]:
        keep, rule = self.verdict(metadata_view(meta, states, library_kind))
        return keep is not False, rule

    def undecided_etag(self, etag: str) -> str:
        """The ETag of an item the listing could not decide: bound to the rule as well as to the entry."""
        return hashlib.sha1(f"{etag}\x1f{self.digest}".encode(), usedforsecurity=False).hexdigest()
