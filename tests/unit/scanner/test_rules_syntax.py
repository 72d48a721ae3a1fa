"""The sync-rule language and its two-stage evaluation (pure: no Plex, no catalog)."""

from __future__ import annotations

from typing import Any

import pytest
from plexsync.common.rule_syntax import RuleSyntaxError, from_proto, parse, render, to_proto
from plexsync.scanner.paths import FileStates, PathMapper
from plexsync.scanner.plex_models import PlexMetadata
from plexsync.scanner.rules.evaluate import SyncRules, listing_view, metadata_view
from plexsync.v1 import common_pb2

MOVIES = common_pb2.LIBRARY_KIND_MOVIES
STATES = FileStates(PathMapper([("/data/movies", "/mnt/films")]), remote_streaming=False)


@pytest.mark.parametrize(
    "text",
    [
        "rating not in (R, NC-17) and resolution >= 1080",
        "genre = 'Science Fiction' or (year = 1990..1999 and not label = kids)",
        "path matches '/mnt/films/A*' and codec in (hevc, av1)",
        "added > 2024-01-31 and kind != video",
        "collection != 'Marvel \\'Phase\\' One'",
    ],
)
def test_render_and_the_proto_form_round_trip(text: str) -> None:
    node = parse(text)
    assert node is not None
    assert parse(render(node)) == node
    assert from_proto(to_proto(node)) == node


def test_aliases_keywords_and_case_read_well() -> None:
    node = parse("Content_Rating NOT IN (r) AND added after 2024-01-01")
    assert node is not None and render(node) == "rating not in (r) and added > 2024-01-01"
    assert parse("") is None and parse("   ") is None


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        ("rating in (R, ", 15, "expected a value"),
        ("ratin = R", 1, "unknown field 'ratin'"),
        ("year >= 19x0", 9, "expected a year"),
        ("(genre = a", 11, "expected ')'"),
        ("genre = 'open", 9, "unterminated string"),
        ("rating = R year = 1", 12, "expected 'and', 'or'"),
        ("resolution = 1081", 14, "expected a resolution"),
        ("added = 2024-01-01", 7, "added does not take '='"),
        ("rating ~ R", 8, "expected an operator"),
        ("year >= 1990..1999", 9, "a year range goes with"),
    ],
)
def test_mistakes_name_their_position(text: str, position: int, words: str) -> None:
    with pytest.raises(RuleSyntaxError) as err:
        parse(text)
    assert err.value.position == position - 1
    assert str(err.value).startswith(f"at position {position}: ") and words in str(err.value)


def test_a_bad_structured_rule_names_the_offending_part() -> None:
    cond = common_pb2.SyncRuleCondition(
        field=common_pb2.SYNC_RULE_FIELD_PATH, operator=common_pb2.SYNC_RULE_OPERATOR_GE, values=["/x"]
    )
    rule = common_pb2.SyncRule(any=common_pb2.SyncRuleGroup(rules=[common_pb2.SyncRule(condition=cond)]))
    with pytest.raises(RuleSyntaxError, match=r"rule\.any\.rules\[0\]\.condition\.operator"):
        from_proto(rule)
    with pytest.raises(RuleSyntaxError, match="empty rule"):
        from_proto(common_pb2.SyncRule())


def _entry(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "ratingKey": "7",
        "key": "/library/metadata/7",
        "type": "movie",
        "title": "Seven",
        "contentRating": "PG-13",
        "year": 1995,
        "addedAt": 1_700_000_000,
        "Genre": [{"tag": "Drama"}, {"tag": "Crime"}],  # a listing shows two at most
        "Label": [{"tag": "Kids"}],
        "Media": [{"id": 1, "videoResolution": "4k", "videoCodec": "hevc",
                   "Part": [{"id": 2, "key": "/p/2", "file": "/data/movies/Seven (1995).mkv"}]}],
    }  # fmt: skip
    d.update(over)
    return d


@pytest.mark.parametrize(
    ("text", "listing", "full"),
    [
        ("rating not in (R, NC-17)", True, True),
        ("rating = r", False, False),
        ("genre = drama", True, True),
        ("genre = thriller", None, True),  # cut from the listing: only the metadata can tell
        ("genre != thriller", None, False),
        ("genre = western", None, False),
        ("label = kids and not label = 'adults only'", True, True),
        ("year = 1990..1999 and year < 2000", True, True),
        ("added > 2023-11-14", True, True),
        ("added > 2023-11-15", False, False),
        ("resolution >= 1080 and codec = HEVC", True, True),
        ("resolution < 720", False, False),
        ("path matches '/mnt/films/S*'", True, True),
        ("path not matches '/data/*'", True, True),  # compared after path replacement
        ("kind = movie", True, True),
        ("genre = thriller or rating = pg-13", True, True),  # decided despite an unknown part
        ("genre = thriller and rating = r", False, False),
    ],
)
def test_listing_decides_what_it_can_and_metadata_the_rest(text: str, listing: bool | None, full: bool) -> None:
    rules = SyncRules.compile(text)
    assert rules is not None
    entry = _entry()
    assert rules.verdict(listing_view(entry, STATES, MOVIES))[0] is listing
    meta = PlexMetadata.parse(_entry(Genre=[{"tag": "Drama"}, {"tag": "Crime"}, {"tag": "Thriller"}]))
    assert rules.verdict(metadata_view(meta, STATES, MOVIES))[0] is full


def test_exclusions_are_counted_under_the_first_top_level_part_that_fails() -> None:
    rules = SyncRules.compile("rating != pg-13 and resolution >= 1080")
    assert rules is not None
    assert rules.names == ("rating != pg-13", "resolution >= 1080")
    assert rules.verdict(listing_view(_entry(), STATES, MOVIES)) == (False, 0)
    low = _entry(contentRating="G", Media=[{"id": 1, "videoResolution": "sd", "Part": []}])
    assert rules.verdict(listing_view(low, STATES, MOVIES)) == (False, 1)


def test_an_undecided_etag_changes_with_the_rule() -> None:
    a, b = SyncRules.compile("genre = x"), SyncRules.compile("genre = y")
    assert a is not None and b is not None
    assert a.undecided_etag("e") != b.undecided_etag("e") != "e"
    assert a.undecided_etag("e") == SyncRules.compile("GENRE = x").undecided_etag("e")  # type: ignore[union-attr]
