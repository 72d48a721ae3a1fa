"""`TestRules`: what a scan would keep and exclude under a rule, without writing anything.

It reads Plex the way a scan does: the section listing decides every item it can (`SyncRules.listing_verdict`),
and only the items it cannot decide get a full-metadata request, 50 at a time; so its counts are the scan's. In a
show library it lists the shows, the episodes and the seasons, and counts shows, seasons and episodes the way a scan
decides them (rules/shows.py).
"""

from __future__ import annotations

from plexsync.common.errors import FailedPreconditionError, InvalidArgumentError, UnavailableError, parse_uuid
from plexsync.common.rule_syntax import RuleSyntaxError
from plexsync.scanner.manager import ScanManager
from plexsync.scanner.paths import FileStates, PathMapper
from plexsync.scanner.plex_client import (
    TYPE_EPISODE,
    TYPE_MOVIE,
    TYPE_SEASON,
    TYPE_SHOW,
    PlexClient,
    PlexError,
    PlexUnauthorizedError,
)
from plexsync.scanner.plex_models import PlexParseError, read_str
from plexsync.scanner.rules.evaluate import SyncRules
from plexsync.scanner.rules.shows import follow, show_context
from plexsync.v1 import common_pb2, scanner_pb2

DEFAULT_SAMPLE = 10
MAX_SAMPLE = 100
METADATA_BATCH = 50


class _Tally:
    def __init__(self, rules: SyncRules, samples: int) -> None:
        self.rules = rules
        self.samples = samples
        self.reply = scanner_pb2.TestRulesResponse(expression=rules.expression)
        self.by_rule: dict[str, int] = {}

    def add(self, rating_key: str, title: str, keep: bool, part: int) -> None:
        self.add_as(rating_key, title, None if keep else self.rules.names[part])

    def add_as(self, rating_key: str, title: str, name: str | None) -> None:
        """Kept (``name`` None) or excluded under the rule ``name``."""
        r = self.reply
        if name is None:
            r.kept += 1
            if len(r.kept_samples) < self.samples:
                r.kept_samples.add(rating_key=rating_key, title=title)
            return
        r.excluded += 1
        self.by_rule[name] = self.by_rule.get(name, 0) + 1
        if len(r.excluded_samples) < self.samples:
            r.excluded_samples.add(rating_key=rating_key, title=title, rule=name)


async def _run_shows(plex: PlexClient, library: common_pb2.Library, states: FileStates, tally: _Tally) -> None:
    key = library.plex_key
    rules, verdicts = await show_context(plex, key, tally.rules, states)
    kept_seasons: set[str] = set()
    excluded_seasons: set[str] = set()
    async for page in plex.section_entries(key, TYPE_EPISODE, page_size=500):
        for entry in page.entries:
            try:
                rating_key, title = read_str(entry, "ratingKey"), read_str(entry, "title")
                parent = read_str(entry, "parentRatingKey")
            except PlexParseError:
                continue
            keep, part = rules.listing_verdict(entry, states, library.kind)
            (kept_seasons if keep is not False else excluded_seasons).add(parent)
            tally.add(rating_key, title, keep is not False, part)
    seasons_of: dict[str, dict[str, str]] = {}
    async for page in plex.section_entries(key, TYPE_SEASON, page_size=500):
        for entry in page.entries:
            try:
                season_key, title = read_str(entry, "ratingKey"), read_str(entry, "title")
                seasons_of.setdefault(read_str(entry, "parentRatingKey"), {})[season_key] = title
            except PlexParseError:
                continue
    async for page in plex.section_entries(key, TYPE_SHOW, page_size=500):
        for entry in page.entries:
            try:
                show_key, title = read_str(entry, "ratingKey"), read_str(entry, "title")
            except PlexParseError:
                continue
            seasons = seasons_of.pop(show_key, {})
            flags = {s: (s in kept_seasons, s in excluded_seasons) for s in seasons}
            show_rule, season_rules = follow(rules, verdicts.get(show_key, (None, -1)), flags)
            tally.add_as(show_key, title, show_rule)
            for season_key, season_title in seasons.items():
                tally.add_as(season_key, season_title, season_rules.get(season_key))


async def _run(plex: PlexClient, library: common_pb2.Library, states: FileStates, tally: _Tally) -> None:
    if library.kind == common_pb2.LIBRARY_KIND_SHOWS:
        await _run_shows(plex, library, states, tally)
        return
    undecided: list[tuple[str, str]] = []
    async for page in plex.section_entries(library.plex_key, TYPE_MOVIE, page_size=500):
        for entry in page.entries:
            try:
                rating_key, title = read_str(entry, "ratingKey"), read_str(entry, "title")
            except PlexParseError:
                continue  # a scan skips it too
            keep, part = tally.rules.listing_verdict(entry, states, library.kind)
            if keep is None:
                undecided.append((rating_key, title))
            else:
                tally.add(rating_key, title, keep, part)
    for i in range(0, len(undecided), METADATA_BATCH):
        chunk = undecided[i : i + METADATA_BATCH]
        answer = await plex.metadata_page([rk for rk, _ in chunk])
        titles = dict(chunk)
        for meta in answer.items:
            if meta.rating_key in titles:
                keep_meta, part = tally.rules.metadata_verdict(meta, states, library.kind)
                tally.add(meta.rating_key, titles[meta.rating_key], keep_meta, part)
                tally.reply.decided_by_metadata += 1


async def test_rules(
    manager: ScanManager, library_id: str, expression: str, sample_size: int
) -> scanner_pb2.TestRulesResponse:
    """Count what ``expression`` (or the library's stored rule when empty) keeps and excludes, with samples."""
    parse_uuid(library_id, "library_id")
    if not 0 <= sample_size <= MAX_SAMPLE:
        raise InvalidArgumentError.single("sample_size", f"must be between 0 (= {DEFAULT_SAMPLE}) and {MAX_SAMPLE}")
    try:
        candidate = SyncRules.compile(expression) if expression else None
    except RuleSyntaxError as exc:
        raise InvalidArgumentError.single("expression", str(exc)) from None
    library = await manager.catalog.get_library(library_id)
    if library.removed:
        raise FailedPreconditionError(
            f"library {library.name!r} ({library_id}) is gone from its server; run SyncServer to refresh libraries"
        )
    rules = candidate or SyncRules.compile(library.sync_rules.expression)
    if rules is None:
        raise InvalidArgumentError.single("expression", "is required: the library has no sync rules to test")
    path_rules = await manager.catalog.list_path_replacements(library.server_id)
    states = FileStates(
        PathMapper((r.plex_path, r.local_path) for r in path_rules), remote_streaming=library.remote_streaming_enabled
    )
    tally = _Tally(rules, sample_size or DEFAULT_SAMPLE)
    creds = await manager.credentials.credentials(library.server_id)
    async with manager.plex_client(creds, library.server_id) as plex:
        try:
            await _run(plex, library, states, tally)
        except PlexUnauthorizedError as exc:
            raise UnavailableError("the Plex server refused its token (401); log in again or re-add it") from exc
        except PlexError as exc:
            raise UnavailableError(f"the Plex server could not list library {library.name!r}: {exc}") from exc
        tally.reply.plex_requests = plex.requests
    for name, count in sorted(tally.by_rule.items(), key=lambda kv: -kv[1]):
        tally.reply.excluded_by_rule.add(rule=name, count=count)
    return tally.reply
