"""BatchApplier against an in-process fakeplex and the in-memory catalog: a batch of notifications leaves the
catalog as a full scan would, in few Plex requests; a deletion is checked with Plex before anything is marked."""

from __future__ import annotations

from plexsync.fakeplex import FakePlex, FakePlexControl
from plexsync.scanner.paths import FileStates, PathMapper
from plexsync.scanner.plex_client import PlexClient, PlexCredentials
from plexsync.scanner.realtime.applier import REALTIME_ETAG, BatchApplier
from plexsync.scanner.realtime.batcher import SectionBatch
from plexsync.scanner.realtime.notifications import TimelineEntry
from plexsync.v1 import common_pb2

from tests.unit.scanner.fakes import MemoryCatalog
from tests.unit.scanner.test_library_scanner import catalog_for, scan

METADATA = "GET /library/metadata/{ids}"
FNF = common_pb2.ITEM_STATE_FILE_NOT_FOUND


def batch(section: str, upserts: list[str], deletes: list[str] = [], type_num: int = 1) -> SectionBatch:  # noqa: B006
    b = SectionBatch(section)
    for rk in upserts:
        b.upserts[rk] = TimelineEntry(section, rk, type_num, 5, 0)
    for rk in deletes:
        b.deletes[rk] = TimelineEntry(section, rk, type_num, 9, 0)
    return b


def content(cat: MemoryCatalog) -> dict[str, common_pb2.Item]:
    """Items as a comparison needs them: everything but the ETag (a real-time write stores its own)."""
    out = {}
    for rk, item in cat.present().items():
        copy = common_pb2.Item()
        copy.CopyFrom(item)
        copy.ClearField("etag")
        out[rk] = copy
    return out


async def apply(fp: FakePlex, cat: MemoryCatalog, b: SectionBatch) -> list[common_pb2.ItemChange]:
    states = FileStates(PathMapper(), remote_streaming=cat.library.remote_streaming_enabled)
    async with PlexClient(PlexCredentials(fp.url, fp.token), backoff=0.01) as plex:
        applied = await BatchApplier(plex, cat).apply(cat.library, states, b)
    assert not applied.failed
    return applied.changes


async def test_a_batch_leaves_the_catalog_as_a_full_scan_would(fp: FakePlex, ctl: FakePlexControl) -> None:
    cat = catalog_for("1")
    await scan(fp, cat)
    movies = sorted(cat.items, key=int)
    new = await ctl.add_item(1, title="Arrived Just Now")
    await ctl.change(movies[0], title="Renamed Just Now")
    await ctl.add_media(movies[1])
    await ctl.delete(movies[2])
    await ctl.reset_stats()
    # movies[3] is announced deleted but Plex still has it (a stale or mistaken entry): it must stay.
    changes = await apply(fp, cat, batch("1", [new, movies[0], movies[1]], [movies[2], movies[3]]))
    kinds = {c.rating_key: c.kind for c in changes}
    assert kinds[new] == common_pb2.CHANGE_KIND_ADDED
    assert kinds[movies[0]] == kinds[movies[1]] == common_pb2.CHANGE_KIND_UPDATED
    assert kinds[movies[2]] == common_pb2.CHANGE_KIND_MISSING
    assert cat.items[movies[2]].state == FNF and cat.items[movies[3]].state != FNF
    assert cat.items[new].etag.startswith(REALTIME_ETAG)
    requests = (await ctl.stats()).get(METADATA, 0)
    # The three upserts in one request; the two deletions in one, which 404s, then one each to tell them apart.
    assert requests == 4, requests

    truth = catalog_for("1")
    await scan(fp, truth)
    assert content(cat) == content(truth)


async def test_the_next_incremental_scan_confirms_only_what_the_watcher_wrote(
    fp: FakePlex, ctl: FakePlexControl
) -> None:
    cat = catalog_for("1")
    await scan(fp, cat)
    keys = sorted(cat.items, key=int)[:3]
    for rk in keys:
        await ctl.change(rk, summary="edited in Plex")
    await apply(fp, cat, batch("1", keys))
    after_watcher = content(cat)
    counters = await scan(fp, cat)
    assert counters.fetched == 3 and counters.failed == 0
    assert content(cat) == after_watcher
    assert not any(i.etag.startswith(REALTIME_ETAG) for i in cat.items.values())
    assert (await scan(fp, cat)).fetched == 0


async def test_an_episode_edit_with_its_parents_keeps_the_tree(fp: FakePlex, ctl: FakePlexControl) -> None:
    cat = catalog_for("2")
    await scan(fp, cat)
    episode = next(i for i in cat.items.values() if i.kind == common_pb2.ITEM_KIND_EPISODE)
    season = cat.items[episode.parent_rating_key]
    await ctl.change(episode.rating_key, title="An Edited Episode")
    b = batch("2", [season.parent_rating_key], type_num=2)
    b.upserts[season.rating_key] = TimelineEntry("2", season.rating_key, 3, 5, 0)
    b.upserts[episode.rating_key] = TimelineEntry("2", episode.rating_key, 4, 5, 0)
    await apply(fp, cat, b)  # the in-memory catalog refuses a child written before its parent
    assert cat.items[episode.rating_key].title == "An Edited Episode"
    assert cat.items[episode.rating_key].parent_rating_key == season.rating_key
    truth = catalog_for("2")
    await scan(fp, truth)
    assert content(cat) == content(truth)


async def test_deleting_a_show_marks_everything_below_it(fp: FakePlex, ctl: FakePlexControl) -> None:
    cat = catalog_for("2")
    await scan(fp, cat)
    show = next(i for i in cat.items.values() if i.kind == common_pb2.ITEM_KIND_SHOW)
    await ctl.delete(show.rating_key)
    changes = await apply(fp, cat, batch("2", [], [show.rating_key], type_num=2))
    below = {rk for rk, i in cat.items.items() if i.state == FNF}
    assert show.rating_key in below and len(below) > 1 and {c.rating_key for c in changes} == below
    truth = catalog_for("2")
    await scan(fp, truth)
    assert content(cat) == content(truth)
