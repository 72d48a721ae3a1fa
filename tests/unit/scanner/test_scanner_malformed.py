"""The scanner's Plex client and parsers against malformed answers (fakeplex's ``malformed`` variants)."""

from __future__ import annotations

import time

import pytest
from plexsync.fakeplex import FakePlex, FakePlexControl
from plexsync.fakeplex.faults import MalformedVariant
from plexsync.scanner.convert import MAX_TITLE, capped
from plexsync.scanner.plex_client import Listed, PlexClient, PlexCredentials, PlexMalformedError
from plexsync.scanner.plex_models import (
    MAX_XML_DEPTH,
    PlexMetadata,
    PlexParseError,
    parse_container,
    parse_page,
    plausible_total,
    total_size,
    xml_to_container,
)

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE MediaContainer [
 <!ENTITY a "aaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
]>
<MediaContainer size="1"><Video ratingKey="1" type="movie" title="&d;"/></MediaContainer>"""


def client(fp: FakePlex, fmt: str = "json", **kw: object) -> PlexClient:
    return PlexClient(PlexCredentials(fp.url, fp.token), fmt=fmt, backoff=0.01, **kw)  # type: ignore[arg-type]


def test_xml_with_a_dtd_is_refused_before_any_entity_expands() -> None:
    with pytest.raises(PlexParseError, match="document type declaration"):
        xml_to_container(BOMB)


def test_deep_xml_is_refused_at_the_depth_limit() -> None:
    nest = b"<Extras>" * 10_000 + b"</Extras>" * 10_000
    t0 = time.perf_counter()
    with pytest.raises(PlexParseError, match=f"deeper than {MAX_XML_DEPTH}"):
        xml_to_container(b"<MediaContainer>" + nest + b"</MediaContainer>")
    assert time.perf_counter() - t0 < 1.0
    shallow = b"<MediaContainer><Video ratingKey='1' type='movie'><Media id='2'><Part id='3'/></Media></Video>"
    mc = xml_to_container(shallow + b"</MediaContainer>")
    assert mc["Metadata"][0]["Media"][0]["Part"] == [{"id": "3"}]


@pytest.mark.parametrize("body", [b'{"MediaContainer": {"title": "\xff\xfe"}}', b'<MediaContainer title="\xff"/>'])
def test_invalid_utf8_does_not_parse(body: bytes) -> None:
    with pytest.raises(PlexParseError, match="does not parse"):
        parse_container(body, "")


def test_wrong_types_and_missing_keys_break_only_their_entry() -> None:
    good = {"ratingKey": "3", "type": "movie", "title": "Fine", "Media": [{"id": 1, "Part": [{"id": 2}]}]}
    page = parse_page(
        {
            "Metadata": [
                {**good, "ratingKey": "1", "addedAt": "yesterday"},
                {**good, "ratingKey": "2", "Genre": "Drama"},
                {**good, "ratingKey": "4", "rating": "nan"},
                {k: v for k, v in good.items() if k != "ratingKey"},
                {k: v for k, v in good.items() if k != "Media"} | {"ratingKey": "5"},
                {**good, "ratingKey": "6", "type": None},
                good,
                {**good, "ratingKey": "7", "Media": good["Media"][0]},  # an object for a list: read as one
            ]
        }
    )
    assert [m.rating_key for m in page.items] == ["3", "7"]
    assert [rk for rk, _ in page.broken] == ["1", "2", "4", "", "5", "6"]
    assert "addedAt is 'yesterday', not a number" in page.broken[0][1]
    assert page.items[1].media[0].parts[0].id == 2
    with pytest.raises(PlexParseError, match="title is dict"):
        PlexMetadata.parse({**good, "title": {"x": 1}})


def test_impossible_totals_are_unknown() -> None:
    assert [plausible_total(v) for v in (None, -1, 0, 30, 10**12)] == [None, None, 0, 30, None]
    assert total_size({"totalSize": -1}) == 0 and total_size({"totalSize": 10**12}) == 0
    assert total_size({"totalSize": "lots"}) == 0 and total_size({}, {"X-Plex-Container-Total-Size": "7"}) == 7


def test_listed_drops_repeats_and_stops_a_listing_that_does_not_advance() -> None:
    listed = Listed("/library/sections/1/all")
    assert listed.fresh([{"ratingKey": "1"}, {"ratingKey": "2"}, {"ratingKey": "1"}], 0, full=True) == [
        {"ratingKey": "1"},
        {"ratingKey": "2"},
    ]
    assert listed.repeated == 1
    with pytest.raises(PlexMalformedError, match="at offset 2 of /library/sections/1/all; paging does not advance"):
        listed.fresh([{"ratingKey": "2"}, {"ratingKey": "1"}], 2, full=True)


def test_titles_are_capped_at_the_catalogs_limit() -> None:
    assert capped("x" * 5000) == "x" * MAX_TITLE and capped("a\x00b") == "ab" and capped("ok") == "ok"


async def test_a_huge_answer_is_refused_unread_and_not_retried(fp: FakePlex, ctl: FakePlexControl) -> None:
    await ctl.add_fault("malformed", variant="huge_title", path_prefix="/library/metadata")
    async with client(fp, max_body_bytes=1024 * 1024) as plex:
        with pytest.raises(PlexMalformedError, match=r"/library/metadata/1: the answer is [0-9,]+ bytes") as info:
            await plex.metadata(["1"])
        assert plex.requests == 1 and fp.token not in str(info.value)


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize("variant", ["truncated_json", "truncated_xml", "invalid_utf8", "deep_xml", "entity_bomb"])
async def test_a_broken_body_is_retried_once_then_named(
    fp: FakePlex, ctl: FakePlexControl, variant: str, fmt: str
) -> None:
    await ctl.add_fault("malformed", variant=variant, path_prefix="/library/sections")  # type: ignore[arg-type]
    async with client(fp, fmt) as plex:
        with pytest.raises(PlexMalformedError, match="malformed answer for /library/sections") as info:
            await plex.sections()
        assert plex.requests == 2 and fp.token not in str(info.value)


async def test_listings_survive_duplicates_and_impossible_totals(fp: FakePlex, ctl: FakePlexControl) -> None:
    async with client(fp) as plex:
        want = [m.rating_key async for page in plex.section_items("1", 1, page_size=7) for m in page.items]
    variants: tuple[MalformedVariant, ...] = ("duplicate_keys", "negative_total", "absurd_total")
    for variant in variants:
        await ctl.add_fault("malformed", variant=variant, path_prefix="/library/sections/1/all")
        async with client(fp) as plex:
            got = [m.rating_key async for page in plex.section_items("1", 1, page_size=7) for m in page.items]
            assert got == want, variant
            assert plex.requests <= len(want) // 7 + 2, variant
        await ctl.clear_faults()


async def test_metadata_with_an_unreadable_entry_fails_rather_than_leave_it_out(
    fp: FakePlex, ctl: FakePlexControl
) -> None:
    await ctl.add_fault("malformed", variant="missing_keys", path_prefix="/library/metadata")
    async with client(fp) as plex:
        with pytest.raises(PlexMalformedError, match=r"/library/metadata/1,2: item \(no ratingKey\)"):
            await plex.metadata(["1", "2"])
        page = await plex.metadata_page(["1", "2"])
        assert [m.rating_key for m in page.items] == [] and [rk for rk, _ in page.broken] == ["", "2"]
