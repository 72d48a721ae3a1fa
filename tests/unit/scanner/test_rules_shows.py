"""Sync rules in a show library: which level each field reads, show verdicts, and shows following their episodes."""

from __future__ import annotations

from typing import Any

import pytest
from plexsync.scanner.paths import FileStates, PathMapper
from plexsync.scanner.rules.evaluate import SyncRules, fields_of, listing_view, show_facts
from plexsync.scanner.rules.shows import FOLLOW, follow
from plexsync.v1 import common_pb2

SHOWS = common_pb2.LIBRARY_KIND_SHOWS
STATES = FileStates(PathMapper(()), remote_streaming=False)
SHOW: dict[str, Any] = {
    "ratingKey": "1",
    "type": "show",
    "title": "A Show",
    "contentRating": "TV-14",
    "Genre": [{"tag": "Drama"}],
    "Label": [{"tag": "Kids"}],
}
EPISODE: dict[str, Any] = {
    "ratingKey": "11",
    "parentRatingKey": "10",
    "grandparentRatingKey": "1",
    "type": "episode",
    "title": "Pilot",
    "contentRating": "TV-MA",  # the show's rating is the one a rule reads
    "year": 2001,
    "addedAt": 1_000_000,
    "Media": [{"videoResolution": "1080", "videoCodec": "h264", "Part": [{"file": "/tv/A Show/S01E01.mkv"}]}],
}


def _rules(text: str) -> SyncRules:
    rules = SyncRules.compile(text)
    assert rules is not None
    return rules.with_shows({"1": show_facts(listing_view(SHOW, STATES, SHOWS))})


@pytest.mark.parametrize(
    ("text", "keep"),
    [
        ("rating = TV-14", True),  # the show's, not the episode's TV-MA
        ("rating = TV-MA", False),
        ("label = kids", True),
        ("genre = drama", True),
        ("year >= 2000 and resolution >= 1080", True),
        ("year < 2000", False),
        ("kind = episode", True),
        ("path matches '/tv/A Show/*' and label != kids", False),
    ],
)
def test_an_episode_reads_show_fields_from_its_show_and_the_rest_from_itself(text: str, keep: bool) -> None:
    assert _rules(text).listing_verdict(EPISODE, STATES, SHOWS)[0] is keep


def test_an_episode_of_a_show_not_listed_has_no_show_fields() -> None:
    orphan = {**EPISODE, "grandparentRatingKey": "999"}
    assert _rules("label = kids").listing_verdict(orphan, STATES, SHOWS) == (False, 0)
    assert _rules("label != kids").listing_verdict(orphan, STATES, SHOWS)[0] is True


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("label = kids", True),
        ("label != kids", False),  # decided on the show: the whole show goes
        ("year >= 2000", None),  # episode fields: the episodes decide
        ("label != kids or year >= 2000", None),
        ("label != kids and year >= 2000", False),
        ("genre = comedy", None),  # the listing's genres are cut short: the show's metadata decides
        ("genre = drama", True),
    ],
)
def test_a_show_verdict_reads_only_show_level_fields(text: str, verdict: bool | None) -> None:
    rules = _rules(text)
    assert rules.show_verdict(show_facts(listing_view(SHOW, STATES, SHOWS)))[0] is verdict


def test_fields_of_names_every_field() -> None:
    rules = _rules("not (genre = a or year > 2000) and label = b")
    assert fields_of(rules.root) == {"genre", "year", "label"}


def test_shows_and_seasons_follow_their_episodes() -> None:
    rules = _rules("label = kids and year >= 2000")
    # kept show: a season with only excluded episodes goes, an empty season and a mixed one stay
    show, seasons = follow(rules, (None, -1), {"a": (False, True), "b": (False, False), "c": (True, True)})
    assert (show, seasons) == (None, {"a": FOLLOW})
    # every episode excluded: the show and all its seasons, the empty one too
    assert follow(rules, (None, -1), {"a": (False, True), "b": (False, False)}) == (FOLLOW, {"a": FOLLOW, "b": FOLLOW})
    # excluded by its own fields: under that rule part, with everything below
    assert follow(rules, (False, 0), {"a": (False, True)}) == ("label = kids", {"a": "label = kids"})
    # a show with no episodes at all is kept
    assert follow(rules, (True, -1), {}) == (None, {})
