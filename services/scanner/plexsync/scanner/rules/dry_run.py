"""`TestRules`: what a scan would keep and exclude under a rule, without writing anything.

It reads Plex the way a scan does: the section listing decides every item it can (`SyncRules.listing_verdict`),
and only the items it cannot decide get a full-metadata request, 50 at a time; so its counts are the scan's.
"""

from __future__ import annotations

from plexsync.common.errors import FailedPreconditionError, InvalidArgumentError, UnavailableError, parse_uuid
from plexsync.common.rule_syntax import RuleSyntaxError
from plexsync.scanner.manager import ScanManager
from plexsync.scanner.paths import FileStates, PathMapper
from plexsync.scanner.plex_client import TYPE_MOVIE, PlexClient, PlexError, PlexUnauthorizedError
from plexsync.scanner.plex_models import PlexParseError, read_str
from plexsync.scanner.rules.evaluate import SyncRules
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
        r = self.reply
        if keep:
            r.kept += 1
            if len(r.kept_samples) < self.samples:
                r.kept_samples.add(rating_key=rating_key, title=title)
            return
        r.excluded += 1
        name = self.rules.names[part]
        self.by_rule[name] = self.by_rule.get(name, 0) + 1
        if len(r.excluded_samples) < self.samples:
            r.excluded_samples.add(rating_key=rating_key, title=title, rule=name)


async def _run(plex: PlexClient, library: common_pb2.Library, states: FileStates, tally: _Tally) -> None:
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
    if library.kind == common_pb2.LIBRARY_KIND_SHOWS:
        raise FailedPreconditionError(
            f"library {library.name!r} is a show library; sync rules apply to movie and other-video libraries"
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
