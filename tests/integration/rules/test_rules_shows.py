"""Sync rules in a show library, end to end: real catalog, auth and scanner processes against fakeplex.

Episodes are what a rule decides; an episode reads rating/genre/label/collection from its show and the other fields
from itself; a season or show with an excluded episode and no kept one is EXCLUDED (see rules/shows.py). The truth is
computed here from fakeplex's full metadata by code of its own. The tests run in order on one library.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from plexsync.fakeplex import FakePlexControl
from plexsync.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    scanner_pb2,
    scanner_pb2_grpc,
)

from tests.integration.scanner.support import catalog_items, fakeplex_items, fakeplex_process, run_scan
from tests.support.stack import ServiceStack

pytestmark = pytest.mark.timeout(300)

EXCLUDED, FNF = common_pb2.ITEM_STATE_EXCLUDED, common_pb2.ITEM_STATE_FILE_NOT_FOUND
SCANNER_ENV = {
    "PLEXSYNC_SCAN_PAGE_SIZE": "20",
    "PLEXSYNC_SCAN_CONCURRENCY": "4",
    "PLEXSYNC_SCAN_BATCH_SIZE": "25",
    "PLEXSYNC_SCAN_METADATA_BATCH": "10",
    "PLEXSYNC_PLEX_BACKOFF_SECONDS": "0.05",
    "PLEXSYNC_REALTIME_ENABLED": "false",
}
Meta = dict[str, Any]


@dataclass
class Truth:
    shows: dict[str, Meta]
    seasons: dict[str, Meta]
    episodes: dict[str, Meta]

    def keys(self) -> set[str]:
        return set(self.shows) | set(self.seasons) | set(self.episodes)

    def kept(self, keep_episode: Callable[[Meta, Meta], bool], keep_show: Callable[[Meta], bool]) -> set[str]:
        """What a rule keeps: episodes by ``keep_episode(episode, its show)``; a show whose own fields fail the
        rule goes with everything below it; a season or show with excluded episodes and none kept goes too."""
        kept_eps = {rk for rk, e in self.episodes.items() if keep_episode(e, self.shows[e["grandparentRatingKey"]])}
        out = set(kept_eps)
        for show_key, show in self.shows.items():
            seasons = [k for k, s in self.seasons.items() if s["parentRatingKey"] == show_key]
            eps = {k: e["parentRatingKey"] for k, e in self.episodes.items() if e["grandparentRatingKey"] == show_key}
            if not keep_show(show) or (eps and not set(eps) & kept_eps):
                continue
            out.add(show_key)
            for season in seasons:
                season_eps = {k for k, p in eps.items() if p == season}
                if not season_eps or season_eps & kept_eps:
                    out.add(season)
        return out


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    args = ["--movies", "3", "--shows", "12", "--seasons", "2", "--episodes", "3", "--other-videos", "2"]
    with fakeplex_process(tmp_path_factory.mktemp("fakeplex"), *args, "--seed", "23") as info:
        yield info


@pytest.fixture(scope="module")
def stack(service_stack: ServiceStack, fake: dict[str, Any]) -> ServiceStack:
    service_stack.start_plex_services(fake["url"], SCANNER_ENV)
    return service_stack


@pytest.fixture(scope="module")
async def channels(stack: ServiceStack) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    chans = {name: stack.channel(name) for name in ("catalog", "auth", "scanner")}
    yield chans
    for c in chans.values():
        await c.close()


@pytest.fixture(scope="module")
async def ctl(fake: dict[str, Any]) -> AsyncIterator[FakePlexControl]:
    async with FakePlexControl(fake["url"]) as c:
        yield c


@pytest.fixture(scope="module")
async def library(channels: dict[str, grpc.aio.Channel], fake: dict[str, Any]) -> common_pb2.Library:
    auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    server = (await auth.AddServer(auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"], name="P"))).server
    scanner = scanner_pb2_grpc.ScannerServiceStub(channels["scanner"])
    resp = await scanner.SyncServer(scanner_pb2.SyncServerRequest(server_id=server.id))
    shows: list[common_pb2.Library] = [lib for lib in resp.libraries if lib.kind == common_pb2.LIBRARY_KIND_SHOWS]
    assert len(shows) == 1
    return shows[0]


@pytest.fixture(scope="module")
def truth(fake: dict[str, Any], library: common_pb2.Library) -> Truth:
    def items(type_num: int) -> dict[str, Meta]:
        return {d["ratingKey"]: d for d in fakeplex_items(fake["url"], fake["token"], library.plex_key, type_num)}

    return Truth(items(2), items(3), items(4))


def _catalog(channels: dict[str, grpc.aio.Channel]) -> catalog_pb2_grpc.CatalogServiceStub:
    return catalog_pb2_grpc.CatalogServiceStub(channels["catalog"])


def _scanner(channels: dict[str, grpc.aio.Channel]) -> scanner_pb2_grpc.ScannerServiceStub:
    return scanner_pb2_grpc.ScannerServiceStub(channels["scanner"])


def _tags(m: Meta, key: str) -> set[str]:
    return {t["tag"].casefold() for t in m.get(key, [])}


async def _fetched_keys(ctl: FakePlexControl) -> set[str]:
    out: set[str] = set()
    for r in await ctl.requests(path_prefix="/library/metadata/"):
        if r["template"] == "/library/metadata/{ids}":
            out.update(r["path"].removeprefix("/library/metadata/").split(","))
    return out


async def _apply(
    channels: dict[str, grpc.aio.Channel], lib: common_pb2.Library, ctl: FakePlexControl, expression: str
) -> tuple[scanner_pb2.TestRulesResponse, common_pb2.Scan, dict[str, common_pb2.Item], set[str]]:
    """Dry run, set the rule, scan: (dry run, scan, catalog items, rating keys whose metadata the scan fetched)."""
    dry = await _scanner(channels).TestRules(scanner_pb2.TestRulesRequest(library_id=lib.id, expression=expression))
    await _catalog(channels).SetLibraryRules(
        catalog_pb2.SetLibraryRulesRequest(library_id=lib.id, expression=expression)
    )
    await ctl.clear_requests()
    scan, _ = await run_scan(channels["scanner"], lib.id)
    assert scan.status == common_pb2.SCAN_STATUS_COMPLETED, scan.error
    fetched = await _fetched_keys(ctl)
    return dry, scan, await catalog_items(channels["catalog"], lib.id), fetched


def _check(
    dry: scanner_pb2.TestRulesResponse,
    scan: common_pb2.Scan,
    got: dict[str, common_pb2.Item],
    want_kept: set[str],
    truth: Truth,
    ids: dict[str, str],
) -> None:
    kept = {rk for rk, i in got.items() if i.state not in (EXCLUDED, FNF)}
    excluded = {rk for rk, i in got.items() if i.state == EXCLUDED}
    assert kept == want_kept
    assert excluded == truth.keys() - want_kept
    assert {rk: i.id for rk, i in got.items()} == ids, "ids changed"
    assert (dry.kept, dry.excluded) == (len(want_kept), len(truth.keys()) - len(want_kept))
    assert (scan.counts.excluded, len(kept)) == (dry.excluded, dry.kept)
    assert {r.rule: r.count for r in dry.excluded_by_rule} == dict(scan.stats.excluded_by_rule)
    assert {s.rating_key for s in dry.kept_samples} <= want_kept
    assert not {s.rating_key for s in dry.excluded_samples} & want_kept


# ----------------------------------------------------------------------------- tests
async def test_first_scan_without_rules(
    channels: dict[str, grpc.aio.Channel], library: common_pb2.Library, truth: Truth
) -> None:
    scan, _ = await run_scan(channels["scanner"], library.id)
    assert scan.status == common_pb2.SCAN_STATUS_COMPLETED and scan.counts.added == len(truth.keys())
    assert all(e.get("grandparentRatingKey") in truth.shows for e in truth.episodes.values())


async def test_an_episode_field_rule_excludes_episodes_and_shows_follow_them(
    channels: dict[str, grpc.aio.Channel], library: common_pb2.Library, truth: Truth, ctl: FakePlexControl
) -> None:
    ids = {rk: i.id for rk, i in (await catalog_items(channels["catalog"], library.id)).items()}
    by_show: dict[str, list[int]] = collections.defaultdict(list)
    for e in truth.episodes.values():
        by_show[e["grandparentRatingKey"]].append(e.get("year", 0))
    cut = min(max(ys) for ys in by_show.values()) + 1  # at least one show has every episode before it
    want = truth.kept(lambda e, _s: e.get("year", 0) >= cut, lambda _s: True)
    gone_shows = set(truth.shows) - want
    assert gone_shows and 0 < len(want & set(truth.episodes)) < len(truth.episodes)
    dry, scan, got, fetched = await _apply(channels, library, ctl, f"year >= {cut}")
    _check(dry, scan, got, want, truth, ids)
    assert dry.decided_by_metadata == 0
    assert not fetched & (truth.keys() - want), "the listing decided: no metadata request for an excluded item"
    # the same rule again: nothing to fetch, nothing changes
    await ctl.clear_requests()
    again, _ = await run_scan(channels["scanner"], library.id)
    assert again.counts.fetched == 0 and again.counts.excluded == scan.counts.excluded
    assert not await _fetched_keys(ctl)
    # the rule changes back: every show, season and episode is back with its id (incremental scan)
    await _catalog(channels).SetLibraryRules(catalog_pb2.SetLibraryRulesRequest(library_id=library.id))
    back, _ = await run_scan(channels["scanner"], library.id)
    assert back.status == common_pb2.SCAN_STATUS_COMPLETED and back.counts.excluded == 0
    after = await catalog_items(channels["catalog"], library.id)
    assert {rk: i.id for rk, i in after.items()} == ids
    assert not any(i.state in (EXCLUDED, FNF) for i in after.values())


async def test_a_show_field_rule_excludes_whole_shows_from_the_show_listing(
    channels: dict[str, grpc.aio.Channel], library: common_pb2.Library, truth: Truth, ctl: FakePlexControl
) -> None:
    ids = {rk: i.id for rk, i in (await catalog_items(channels["catalog"], library.id)).items()}
    ratings = collections.Counter(s.get("contentRating", "") for s in truth.shows.values() if s.get("contentRating"))
    rating = ratings.most_common(1)[0][0]
    want = truth.kept(
        lambda _e, s: s.get("contentRating", "") != rating, lambda s: s.get("contentRating", "") != rating
    )
    assert 0 < len(want & set(truth.shows)) < len(truth.shows)
    dry, scan, got, fetched = await _apply(channels, library, ctl, f"rating != '{rating}'")
    _check(dry, scan, got, want, truth, ids)
    assert not fetched & (truth.keys() - want), "decided on the show listing: no metadata request"
    assert dry.decided_by_metadata == 0


async def test_a_genre_rule_reads_the_shows_genres(
    channels: dict[str, grpc.aio.Channel], library: common_pb2.Library, truth: Truth, ctl: FakePlexControl
) -> None:
    ids = {rk: i.id for rk, i in (await catalog_items(channels["catalog"], library.id)).items()}
    genres = collections.Counter(g for s in truth.shows.values() for g in _tags(s, "Genre"))
    genre = genres.most_common(1)[0][0]
    want = truth.kept(lambda _e, s: genre in _tags(s, "Genre"), lambda s: genre in _tags(s, "Genre"))
    assert 0 < len(want & set(truth.shows)) < len(truth.shows)
    dry, scan, got, fetched = await _apply(channels, library, ctl, f"genre = '{genre}'")
    _check(dry, scan, got, want, truth, ids)
    assert not fetched & (set(truth.episodes) - want), "no excluded episode's metadata is read"
    await _catalog(channels).SetLibraryRules(catalog_pb2.SetLibraryRulesRequest(library_id=library.id))
    back, _ = await run_scan(channels["scanner"], library.id)
    assert back.counts.excluded == 0


async def test_prune_deletes_excluded_items_and_a_match_comes_back_new(
    channels: dict[str, grpc.aio.Channel], library: common_pb2.Library, truth: Truth, ctl: FakePlexControl
) -> None:
    catalog = _catalog(channels)
    ids = {rk: i.id for rk, i in (await catalog_items(channels["catalog"], library.id)).items()}
    assert set(ids) == truth.keys()
    assert not (await catalog.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=library.id))).library.prune_excluded
    updated = await catalog.UpdateLibrary(
        catalog_pb2.UpdateLibraryRequest(
            library=common_pb2.Library(id=library.id, prune_excluded=True),
            update_mask=field_mask_pb2.FieldMask(paths=["prune_excluded"]),
        )
    )
    assert updated.library.prune_excluded
    ratings = collections.Counter(s["contentRating"] for s in truth.shows.values() if s.get("contentRating"))
    rating = ratings.most_common(1)[0][0]

    def other(show: Meta) -> bool:
        return bool(show.get("contentRating", "") != rating)

    want = truth.kept(lambda _e, s: other(s), other)
    assert 0 < len(want & set(truth.shows)) < len(truth.shows)
    dry, scan, got, _ = await _apply(channels, library, ctl, f"rating != '{rating}'")
    assert set(got) == want, "the excluded shows, seasons and episodes are gone"
    assert {rk: i.id for rk, i in got.items()} == {rk: ids[rk] for rk in want}
    assert (scan.counts.excluded, dry.excluded, dry.kept) == (len(truth.keys() - want),) * 2 + (len(want),)
    again, _ = await run_scan(channels["scanner"], library.id)
    assert again.counts.fetched == 0 and again.counts.excluded == scan.counts.excluded
    assert set(await catalog_items(channels["catalog"], library.id)) == want
    # the rule is cleared: the pruned items come back as new items (new ids), the others keep theirs
    await catalog.SetLibraryRules(catalog_pb2.SetLibraryRulesRequest(library_id=library.id))
    back, _ = await run_scan(channels["scanner"], library.id)
    assert back.status == common_pb2.SCAN_STATUS_COMPLETED and back.counts.added == len(truth.keys() - want)
    after = {rk: i.id for rk, i in (await catalog_items(channels["catalog"], library.id)).items()}
    assert set(after) == truth.keys()
    assert all(after[rk] == ids[rk] for rk in want)
    assert all(after[rk] != ids[rk] for rk in truth.keys() - want)
    await catalog.UpdateLibrary(
        catalog_pb2.UpdateLibraryRequest(
            library=common_pb2.Library(id=library.id, prune_excluded=False),
            update_mask=field_mask_pb2.FieldMask(paths=["prune_excluded"]),
        )
    )
