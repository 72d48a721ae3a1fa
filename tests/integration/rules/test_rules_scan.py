"""Sync rules end to end: real catalog, auth and scanner processes against fakeplex.

One module-scoped stack; the tests run in order and build on each other's library state. The truth each rule is
checked against is computed here from fakeplex's full metadata, by code of its own (not the scanner's evaluator).
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
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
    "PLEXSYNC_SCAN_PAGE_SIZE": "40",
    "PLEXSYNC_SCAN_CONCURRENCY": "4",
    "PLEXSYNC_SCAN_BATCH_SIZE": "25",
    "PLEXSYNC_SCAN_METADATA_BATCH": "10",
    "PLEXSYNC_PLEX_BACKOFF_SECONDS": "0.05",
    "PLEXSYNC_REALTIME_ENABLED": "false",
}
MOVIE_ROOT, LOCAL_ROOT = "/data/movies", "/mnt/films"
Movie = dict[str, Any]


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    args = ["--movies", "120", "--shows", "2", "--seasons", "1", "--episodes", "2", "--other-videos", "6"]
    with fakeplex_process(tmp_path_factory.mktemp("fakeplex"), *args, "--seed", "11") as info:
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
async def libraries(channels: dict[str, grpc.aio.Channel], fake: dict[str, Any]) -> dict[str, common_pb2.Library]:
    auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    server = (await auth.AddServer(auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"], name="P"))).server
    scanner = scanner_pb2_grpc.ScannerServiceStub(channels["scanner"])
    resp = await scanner.SyncServer(scanner_pb2.SyncServerRequest(server_id=server.id))
    catalog = catalog_pb2_grpc.CatalogServiceStub(channels["catalog"])
    await catalog.SetPathReplacements(
        catalog_pb2.SetPathReplacementsRequest(
            server_id=server.id, rules=[common_pb2.PathReplacement(plex_path=MOVIE_ROOT, local_path=LOCAL_ROOT)]
        )
    )
    return {lib.plex_key: lib for lib in resp.libraries}


@pytest.fixture(scope="module")
def movies(fake: dict[str, Any]) -> dict[str, Movie]:
    return {d["ratingKey"]: d for d in fakeplex_items(fake["url"], fake["token"], "1", 1)}


def _catalog(channels: dict[str, grpc.aio.Channel]) -> catalog_pb2_grpc.CatalogServiceStub:
    return catalog_pb2_grpc.CatalogServiceStub(channels["catalog"])


def _scanner(channels: dict[str, grpc.aio.Channel]) -> scanner_pb2_grpc.ScannerServiceStub:
    return scanner_pb2_grpc.ScannerServiceStub(channels["scanner"])


def _bad_request(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """The google.rpc.BadRequest field violations of an error, as (field, description)."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return [(v.field, v.description) for v in bad.field_violations]
    return []


# ----------------------------------------------------------------------------- the truth, from fakeplex
def _tags(m: Movie, key: str) -> set[str]:
    return {t["tag"].casefold() for t in m.get(key, [])}


def _res(text: str) -> int:
    return {"sd": 480, "4k": 2160}.get(text, int(text) if text.isdigit() else 0)


def _files(m: Movie) -> list[str]:
    files = [p["file"] for v in m.get("Media", []) for p in v.get("Part", [])]
    return [LOCAL_ROOT + f.removeprefix(MOVIE_ROOT) if f.startswith(MOVIE_ROOT + "/") else f for f in files]


def _hd(m: Movie) -> bool:
    return any(_res(v["videoResolution"]) >= 1080 for v in m["Media"])


def _common(values: list[str]) -> str:
    return collections.Counter(values).most_common(1)[0][0]


def cases(movies: dict[str, Movie]) -> list[tuple[str, str, Callable[[Movie], bool], bool]]:
    """(kind, expression, keep(movie), decided by the listing alone) with values picked from the library."""
    ms = list(movies.values())
    genre = _common([t for m in ms for t in _tags(m, "Genre")])
    label = _common([t for m in ms for t in _tags(m, "Label")])
    coll = _common([t for m in ms for t in _tags(m, "Collection")])
    codec = _common([v["videoCodec"] for m in ms for v in m["Media"]])
    years = sorted(m["year"] for m in ms if m.get("year"))
    lo, hi = years[len(years) // 4], years[3 * len(years) // 4]
    added = sorted(m["addedAt"] for m in ms)[len(ms) // 2]
    day = datetime.fromtimestamp(added, UTC).date()
    cut = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    initial = _common([_files(m)[0][len(LOCAL_ROOT) + 1] for m in ms if _files(m)])
    prefix = f"{LOCAL_ROOT}/{initial}"
    return [
        ("rating", "rating not in (R, NC-17)", lambda m: m.get("contentRating", "") not in ("R", "NC-17"), True),
        ("genre", f"genre = '{genre}'", lambda m: genre in _tags(m, "Genre"), False),
        ("label", f"label = '{label}'", lambda m: label in _tags(m, "Label"), True),
        ("collection", f"collection != '{coll}'", lambda m: coll not in _tags(m, "Collection"), True),
        ("year", f"year = {lo}..{hi}", lambda m: lo <= m.get("year", 0) <= hi, True),
        ("added", f"added after {day.isoformat()}", lambda m: m["addedAt"] > cut, True),
        ("resolution", "resolution >= 1080", _hd, True),
        ("codec", f"codec = {codec}", lambda m: any(v["videoCodec"] == codec for v in m["Media"]), True),
        ("path", f"path matches '{prefix}*'", lambda m: any(f.startswith(prefix) for f in _files(m)), True),
        ("kind", "kind = movie and not kind = video", lambda m: True, True),
        ("kind", "kind != movie", lambda m: False, True),
        (
            "combined",
            "rating not in (R, NC-17) and resolution >= 1080",
            lambda m: m.get("contentRating", "") not in ("R", "NC-17") and _hd(m),
            True,
        ),
    ]  # fmt: skip


async def _fetched_keys(ctl: FakePlexControl) -> set[str]:
    """Rating keys of every full-metadata request fakeplex received since the log was cleared."""
    out: set[str] = set()
    for r in await ctl.requests(path_prefix="/library/metadata/"):
        if r["template"] == "/library/metadata/{ids}":
            out.update(r["path"].removeprefix("/library/metadata/").split(","))
    return out


# ----------------------------------------------------------------------------- tests
async def test_bad_rules_are_invalid_argument_with_the_position(
    channels: dict[str, grpc.aio.Channel], libraries: dict[str, common_pb2.Library]
) -> None:
    catalog, scanner = _catalog(channels), _scanner(channels)
    lib = libraries["1"]
    for expression, position in [("rating in (R, ", 15), ("ratin = R", 1), ("year >= 19x0", 9), ("(genre = a", 11)]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await catalog.SetLibraryRules(catalog_pb2.SetLibraryRulesRequest(library_id=lib.id, expression=expression))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        [(field, description)] = _bad_request(err.value)
        assert field == "expression" and description.startswith(f"at position {position}:"), description
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await scanner.TestRules(scanner_pb2.TestRulesRequest(library_id=lib.id, expression=expression))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and f"at position {position}" in (
            err.value.details() or ""
        )
    bad = common_pb2.SyncRule(
        all=common_pb2.SyncRuleGroup(
            rules=[
                common_pb2.SyncRule(
                    condition=common_pb2.SyncRuleCondition(
                        field=common_pb2.SYNC_RULE_FIELD_YEAR, operator=common_pb2.SYNC_RULE_OPERATOR_GE, values=["x"]
                    )
                )
            ]
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await catalog.SetLibraryRules(catalog_pb2.SetLibraryRulesRequest(library_id=lib.id, rule=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _bad_request(err.value)[0][1].startswith("rule.all.rules[0].condition.values[0]:")
    got = (await catalog.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=lib.id))).library
    assert got.sync_rules.expression == ""  # nothing stored by a refused call


async def test_structured_form_round_trips(
    channels: dict[str, grpc.aio.Channel], libraries: dict[str, common_pb2.Library]
) -> None:
    catalog = _catalog(channels)
    lib = libraries["3"]
    text = "RATING not in (R, 'NC-17') AND (resolution >= 4k or year = 1990..1999)"
    set_text = await catalog.SetLibraryRules(catalog_pb2.SetLibraryRulesRequest(library_id=lib.id, expression=text))
    rules = set_text.library.sync_rules
    assert rules.expression == "rating not in (R, NC-17) and (resolution >= 4k or year = 1990..1999)"
    assert rules.rule.all.rules[0].condition.field == common_pb2.SYNC_RULE_FIELD_CONTENT_RATING
    set_tree = await catalog.SetLibraryRules(catalog_pb2.SetLibraryRulesRequest(library_id=lib.id, rule=rules.rule))
    assert set_tree.library.sync_rules.expression == rules.expression
    cleared = await catalog.SetLibraryRules(catalog_pb2.SetLibraryRulesRequest(library_id=lib.id))
    assert cleared.library.sync_rules.expression == "" and not cleared.library.sync_rules.HasField("rule")


async def test_each_rule_kind_keeps_exactly_the_matching_items_and_converges(
    channels: dict[str, grpc.aio.Channel],
    libraries: dict[str, common_pb2.Library],
    movies: dict[str, Movie],
    ctl: FakePlexControl,
) -> None:
    catalog, scanner = _catalog(channels), _scanner(channels)
    lib = libraries["1"]
    scan, _ = await run_scan(channels["scanner"], lib.id)
    assert scan.status == common_pb2.SCAN_STATUS_COMPLETED and scan.counts.added == len(movies)
    ids = {rk: i.id for rk, i in (await catalog_items(channels["catalog"], lib.id)).items()}
    assert sorted(ids) == sorted(movies)
    for kind, expression, keep, by_listing in cases(movies):
        want_kept = {rk for rk, m in movies.items() if keep(m)}
        assert 0 < len(want_kept) < len(movies) or kind == "kind", kind
        dry = await scanner.TestRules(scanner_pb2.TestRulesRequest(library_id=lib.id, expression=expression))
        assert (dry.kept, dry.excluded) == (len(want_kept), len(movies) - len(want_kept)), kind
        assert {s.rating_key for s in dry.kept_samples} <= want_kept, kind
        assert not {s.rating_key for s in dry.excluded_samples} & want_kept, kind
        assert (dry.decided_by_metadata == 0) if by_listing else (dry.decided_by_metadata > 0), kind
        await catalog.SetLibraryRules(catalog_pb2.SetLibraryRulesRequest(library_id=lib.id, expression=expression))
        await ctl.clear_requests()
        scan, _ = await run_scan(channels["scanner"], lib.id)
        assert scan.status == common_pb2.SCAN_STATUS_COMPLETED, (kind, scan.error)
        got = await catalog_items(channels["catalog"], lib.id)
        kept = {rk for rk, i in got.items() if i.state not in (EXCLUDED, FNF)}
        excluded = {rk for rk, i in got.items() if i.state == EXCLUDED}
        assert kept == want_kept, kind
        assert excluded == set(movies) - want_kept, kind
        assert {rk: i.id for rk, i in got.items()} == ids, f"{kind}: ids changed"
        # the dry run said what the scan then did
        assert (scan.counts.excluded, len(kept)) == (dry.excluded, dry.kept), kind
        assert sum(scan.stats.excluded_by_rule.values()) == scan.counts.excluded, kind
        assert {r.rule: r.count for r in dry.excluded_by_rule} == dict(scan.stats.excluded_by_rule), kind
        if by_listing:  # the listing decided: no excluded item cost a metadata request
            assert not (await _fetched_keys(ctl)) & excluded, kind
        # the same rule again: nothing to fetch, nothing changes
        await ctl.clear_requests()
        again, _ = await run_scan(channels["scanner"], lib.id)
        assert again.counts.fetched == 0 and again.counts.excluded == len(excluded), kind
        assert not await _fetched_keys(ctl), kind
    combined = dict(scan.stats.excluded_by_rule)
    assert set(combined) <= {"rating not in (R, NC-17)", "resolution >= 1080"} and len(combined) == 2


async def test_clearing_the_rule_brings_every_item_back_with_its_id(
    channels: dict[str, grpc.aio.Channel], libraries: dict[str, common_pb2.Library], movies: dict[str, Movie]
) -> None:
    catalog = _catalog(channels)
    lib = libraries["1"]
    before = await catalog_items(channels["catalog"], lib.id)
    assert any(i.state == EXCLUDED for i in before.values())
    await catalog.SetLibraryRules(catalog_pb2.SetLibraryRulesRequest(library_id=lib.id))
    scan, _ = await run_scan(channels["scanner"], lib.id)
    assert scan.status == common_pb2.SCAN_STATUS_COMPLETED and scan.counts.excluded == 0
    assert scan.counts.fetched == sum(1 for i in before.values() if i.state == EXCLUDED)
    after = await catalog_items(channels["catalog"], lib.id)
    assert {rk: i.id for rk, i in after.items()} == {rk: i.id for rk, i in before.items()}
    assert not any(i.state in (EXCLUDED, FNF) for i in after.values())


async def test_a_deleted_excluded_item_becomes_file_not_found(
    channels: dict[str, grpc.aio.Channel],
    libraries: dict[str, common_pb2.Library],
    movies: dict[str, Movie],
    ctl: FakePlexControl,
) -> None:
    catalog = _catalog(channels)
    lib = libraries["1"]
    await catalog.SetLibraryRules(
        catalog_pb2.SetLibraryRulesRequest(library_id=lib.id, expression="rating not in (R, NC-17)")
    )
    scan, _ = await run_scan(channels["scanner"], lib.id)
    got = await catalog_items(channels["catalog"], lib.id)
    gone = next(rk for rk, i in got.items() if i.state == EXCLUDED)
    await ctl.delete(gone)
    scan, _ = await run_scan(channels["scanner"], lib.id)
    assert scan.status == common_pb2.SCAN_STATUS_COMPLETED and scan.counts.missing == 1
    got = await catalog_items(channels["catalog"], lib.id)
    assert got[gone].state == FNF
