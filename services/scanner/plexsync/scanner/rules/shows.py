"""Sync rules in a show library: episodes are what a rule keeps or excludes; shows and seasons follow them.

Which level each field reads: ``rating``, ``genre``, ``label`` and ``collection`` are the show's (an episode
inherits its show's content rating, genres, labels and collections); ``year``, ``added``, ``resolution``,
``codec``, ``path`` and ``kind`` are the episode's own (``kind`` is ``episode``).

A scan (and a dry run) first lists the shows (`show_context`): a show whose show-level fields alone make the rule
false is excluded with everything below it, decided on the listing. Plex cuts a listing's genres short, so when the
rule names ``genre`` and a show's listing cannot decide, that show's full metadata is read (one request per 50
such shows; never an episode's). Every episode is then decided on its listing entry with its show's fields.

"Shows follow their episodes" (`follow`): a season, or a show, with at least one excluded episode and no kept one
is EXCLUDED (counted under `FOLLOW`); one with a kept episode is kept; one with no episodes at all is kept unless
its show is excluded. Seasons of an excluded show are excluded with it.
"""

from __future__ import annotations

from collections.abc import Mapping

from plexsync.scanner.paths import FileStates
from plexsync.scanner.plex_client import TYPE_SHOW, PlexClient, PlexError, PlexUnauthorizedError
from plexsync.scanner.plex_models import PlexParseError, read_str
from plexsync.scanner.rules.evaluate import ShowFacts, SyncRules, fields_of, listing_view, metadata_view, show_facts
from plexsync.v1 import common_pb2

FOLLOW = "(all its episodes are excluded)"
METADATA_BATCH = 50

# show rating key -> (keep?, rule part) on its show-level fields alone
ShowVerdicts = dict[str, tuple[bool | None, int]]


async def show_context(
    plex: PlexClient, section_key: str, rules: SyncRules, states: FileStates, page_size: int = 500
) -> tuple[SyncRules, ShowVerdicts]:
    """List the shows of a section: the rules bound to every show's fields, and each show's own verdict."""
    kind = common_pb2.LIBRARY_KIND_SHOWS
    facts: dict[str, ShowFacts] = {}
    async for page in plex.section_entries(section_key, TYPE_SHOW, page_size=page_size):
        for entry in page.entries:
            try:
                facts[read_str(entry, "ratingKey")] = show_facts(listing_view(entry, states, kind))
            except PlexParseError:
                continue  # the scan reports it as a broken entry
    verdicts: ShowVerdicts = {key: rules.show_verdict(f) for key, f in facts.items()}
    if "genre" in fields_of(rules.root):
        unsure = [key for key, (keep, _) in verdicts.items() if keep is None]
        for i in range(0, len(unsure), METADATA_BATCH):
            try:
                answer = await plex.metadata_page(unsure[i : i + METADATA_BATCH])
            except PlexUnauthorizedError:
                raise
            except PlexError:
                continue  # decided on the listing's genres
            for meta in answer.items:
                if meta.rating_key in facts:
                    facts[meta.rating_key] = show_facts(metadata_view(meta, states, kind))
                    verdicts[meta.rating_key] = rules.show_verdict(facts[meta.rating_key])
    return rules.with_shows(facts), verdicts


def follow(
    rules: SyncRules, verdict: tuple[bool | None, int], seasons: Mapping[str, tuple[bool, bool]]
) -> tuple[str | None, dict[str, str]]:
    """A show's fate from its own verdict and its seasons' (season -> (has a kept episode, has an excluded one)):
    (the rule the show is excluded under, or None when kept; excluded season -> the rule it is excluded under)."""
    keep, part = verdict
    if keep is False:
        name = rules.names[part]
        return name, dict.fromkeys(seasons, name)
    any_kept = any(kept for kept, _ in seasons.values())
    any_excluded = any(excluded for _, excluded in seasons.values())
    if any_excluded and not any_kept:
        return FOLLOW, dict.fromkeys(seasons, FOLLOW)
    return None, {s: FOLLOW for s, (kept, excluded) in seasons.items() if excluded and not kept}
