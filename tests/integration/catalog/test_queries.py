"""Libraries, path rules and the read RPCs of the catalog, with their errors, against a real process."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp
from plexsync.common import pagination
from plexsync.common.grpc_errors import error_info, field_violations, resource_info
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2

from tests.integration.catalog.helpers import C, batch, movie, new_library, section, write

UNKNOWN_SERVER = "00000000-0000-4000-8000-000000000000"  # a well-formed id no server has

Stub = catalog_pb2_grpc.CatalogServiceStub


async def expect_error(call: Any, code: grpc.StatusCode, field: str | None = None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    if field is not None:
        assert field in [f for f, _ in field_violations(err.value)], field_violations(err.value)


async def test_register_libraries_adds_renames_and_removes(catalog: Stub) -> None:
    server = str(uuid.uuid4())
    req = catalog_pb2.RegisterLibrariesRequest(
        server_id=server,
        server_name="Home",
        sections=[section("1", "Movies"), section("2", "TV", C.LIBRARY_KIND_SHOWS)],
    )
    first = await catalog.RegisterLibraries(req)
    assert (first.added, first.updated, first.removed) == (2, 0, 0)
    again = await catalog.RegisterLibraries(req)
    assert (again.added, again.updated, again.removed) == (0, 0, 0)
    renamed = catalog_pb2.RegisterLibrariesRequest(
        server_id=server, server_name="Home", sections=[section("1", "Films")]
    )
    reply = await catalog.RegisterLibraries(renamed)
    assert (reply.added, reply.updated, reply.removed) == (0, 1, 1)
    by_key = {lib.plex_key: lib for lib in reply.libraries}
    assert by_key["1"].name == "Films" and by_key["2"].removed and not by_key["1"].removed
    assert by_key["1"].sync_enabled and by_key["1"].refresh_interval.seconds == 0  # the scheduler's default

    listed = await catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(server_id=server))
    assert [lib.name for lib in listed.libraries] == ["Films"]
    with_removed = await catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(server_id=server, include_removed=True))
    assert len(with_removed.libraries) == 2
    back = await catalog.RegisterLibraries(req)  # the section returns: un-removed, counted as updated
    assert (back.added, back.updated, back.removed) == (0, 2, 0)


async def test_register_libraries_removes_everything_only_when_plex_confirmed_it_has_nothing(catalog: Stub) -> None:
    server = str(uuid.uuid4())
    req = catalog_pb2.RegisterLibrariesRequest(server_id=server, server_name="Home", sections=[section("1", "Movies")])
    await catalog.RegisterLibraries(req)
    empty = catalog_pb2.RegisterLibrariesRequest(server_id=server, server_name="Home")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await catalog.RegisterLibraries(empty)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "confirmed_empty" in (err.value.details() or "")
    listed = await catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(server_id=server))
    assert [lib.name for lib in listed.libraries] == ["Movies"]  # nothing was removed
    empty.confirmed_empty = True
    reply = await catalog.RegisterLibraries(empty)
    assert reply.removed == 1


async def test_register_libraries_rejects_bad_sections(catalog: Stub) -> None:
    bad = catalog_pb2.RegisterLibrariesRequest(
        server_id=str(uuid.uuid4()),
        sections=[section("1", "A"), section("1", "B"), catalog_pb2.LibrarySection(plex_key="3", name="C")],
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await catalog.RegisterLibraries(bad)
    fields = [f for f, _ in field_violations(err.value)]
    assert "sections[1].plex_key" in fields and "sections[2].kind" in fields
    await expect_error(
        catalog.RegisterLibraries(catalog_pb2.RegisterLibrariesRequest()), grpc.StatusCode.INVALID_ARGUMENT, "server_id"
    )


async def test_list_libraries_pages(catalog: Stub) -> None:
    server = str(uuid.uuid4())
    sections = [section(str(i), f"Lib {i}") for i in range(5)]
    await catalog.RegisterLibraries(catalog_pb2.RegisterLibrariesRequest(server_id=server, sections=sections))
    seen: list[str] = []
    token = ""
    while True:
        page = await catalog.ListLibraries(
            catalog_pb2.ListLibrariesRequest(server_id=server, page_size=2, page_token=token)
        )
        seen += [lib.plex_key for lib in page.libraries]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == ["0", "1", "2", "3", "4"]
    await expect_error(
        catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(page_size=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_size",
    )
    clamped = await catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(server_id=server, page_size=5000))
    assert len(clamped.libraries) == 5 and not clamped.next_page_token  # AIP-158: lowered to the maximum
    first = await catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(server_id=server, page_size=2))
    fingerprint = pagination.filters_fingerprint("libraries", server, False)
    unsigned = base64.urlsafe_b64encode(json.dumps({"k": [str(uuid.uuid4())], "f": fingerprint}).encode()).decode()
    altered = first.next_page_token[:-2] + ("AA" if not first.next_page_token.endswith("AA") else "BB")
    for forged in ("garbage", unsigned, altered):
        await expect_error(
            catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(server_id=server, page_token=forged)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token",
        )


async def test_forged_page_tokens_refused_by_every_catalog_list(catalog: Stub) -> None:
    """A token signed with another key (the right format, a made-up position) is refused by each List method."""
    lib = await new_library(catalog)
    saved = pagination._key
    pagination.configure_token_key(b"not-this-deployment's-key")
    try:
        forged = pagination.encode_token([str(uuid.uuid4())], pagination.filters_fingerprint("any"))
    finally:
        pagination.configure_token_key(saved)
    calls = [
        catalog.ListLibraries(catalog_pb2.ListLibrariesRequest(page_token=forged)),
        catalog.ListItems(catalog_pb2.ListItemsRequest(library_id=lib, page_token=forged)),
        catalog.SearchItems(catalog_pb2.SearchItemsRequest(query="a", page_token=forged)),
        catalog.ListCollections(catalog_pb2.ListCollectionsRequest(library_id=lib, page_token=forged)),
        catalog.ListNetworks(catalog_pb2.ListNetworksRequest(library_id=lib, page_token=forged)),
    ]
    for call in calls:
        await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, "page_token")


async def test_not_found_carries_resource_and_error_info(catalog: Stub) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await catalog.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=missing))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    resource = resource_info(err.value)
    assert resource is not None and (resource.resource_type, resource.resource_name) == ("plexsync.v1.Library", missing)
    info = error_info(err.value)
    assert info is not None and (info.reason, info.domain) == ("RESOURCE_NOT_FOUND", "catalog.plexsync.dev")


async def test_get_and_update_library(catalog: Stub) -> None:
    lib = await new_library(catalog)
    update = catalog_pb2.UpdateLibraryRequest(
        library=common_pb2.Library(
            id=lib, sync_enabled=False, refresh_interval=Duration(seconds=3600), remote_streaming_enabled=True
        ),
        update_mask=FieldMask(paths=["sync_enabled", "refresh_interval", "remote_streaming_enabled"]),
    )
    updated = (await catalog.UpdateLibrary(update)).library
    assert (updated.sync_enabled, updated.refresh_interval.seconds, updated.remote_streaming_enabled) == (
        False,
        3600,
        True,
    )
    only_sync = catalog_pb2.UpdateLibraryRequest(
        library=common_pb2.Library(id=lib, sync_enabled=True, refresh_interval=Duration(seconds=1)),
        update_mask=FieldMask(paths=["sync_enabled"]),
    )
    got = (await catalog.UpdateLibrary(only_sync)).library
    assert got.sync_enabled and got.refresh_interval.seconds == 3600  # not in the mask: untouched
    assert (await catalog.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=lib))).library == got

    bad_path = catalog_pb2.UpdateLibraryRequest(
        library=common_pb2.Library(id=lib), update_mask=FieldMask(paths=["name"])
    )
    await expect_error(catalog.UpdateLibrary(bad_path), grpc.StatusCode.INVALID_ARGUMENT, "update_mask.paths[0]")
    bad_interval = catalog_pb2.UpdateLibraryRequest(
        library=common_pb2.Library(id=lib, refresh_interval=Duration(seconds=-5)),
        update_mask=FieldMask(paths=["refresh_interval"]),
    )
    await expect_error(
        catalog.UpdateLibrary(bad_interval), grpc.StatusCode.INVALID_ARGUMENT, "library.refresh_interval"
    )
    missing = catalog_pb2.UpdateLibraryRequest(
        library=common_pb2.Library(id=str(uuid.uuid4())), update_mask=FieldMask(paths=["sync_enabled"])
    )
    await expect_error(catalog.UpdateLibrary(missing), grpc.StatusCode.NOT_FOUND)
    await expect_error(
        catalog.GetLibrary(catalog_pb2.GetLibraryRequest(library_id=str(uuid.uuid4()))), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        catalog.GetLibrary(catalog_pb2.GetLibraryRequest(library_id="nope")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "library_id",
    )


async def test_path_replacements(catalog: Stub) -> None:
    server = str(uuid.uuid4())
    await catalog.RegisterLibraries(
        catalog_pb2.RegisterLibrariesRequest(server_id=server, sections=[section("1", "M")])
    )
    rules = [
        common_pb2.PathReplacement(plex_path="/data/movies", local_path="/mnt/movies"),
        common_pb2.PathReplacement(plex_path="C:\\Media", local_path="/mnt/win"),
        common_pb2.PathReplacement(plex_path="\\\\nas\\share", local_path="/mnt/nas"),
    ]
    reply = await catalog.SetPathReplacements(catalog_pb2.SetPathReplacementsRequest(server_id=server, rules=rules))
    assert list(reply.rules) == rules
    page1 = await catalog.ListPathReplacements(catalog_pb2.ListPathReplacementsRequest(server_id=server, page_size=2))
    page2 = await catalog.ListPathReplacements(
        catalog_pb2.ListPathReplacementsRequest(server_id=server, page_size=2, page_token=page1.next_page_token)
    )
    assert [*page1.rules, *page2.rules] == rules and not page2.next_page_token
    await catalog.SetPathReplacements(catalog_pb2.SetPathReplacementsRequest(server_id=server, rules=rules[:1]))
    assert (
        len((await catalog.ListPathReplacements(catalog_pb2.ListPathReplacementsRequest(server_id=server))).rules) == 1
    )

    bad = [
        ([common_pb2.PathReplacement(plex_path="", local_path="/x")], "rules[0].plex_path"),
        ([common_pb2.PathReplacement(plex_path="relative/dir", local_path="/x")], "rules[0].plex_path"),
        ([common_pb2.PathReplacement(plex_path="/a", local_path="local")], "rules[0].local_path"),
        ([rules[0], common_pb2.PathReplacement(plex_path="/data/movies/", local_path="/y")], "rules[1].plex_path"),
    ]
    for rule_set, field in bad:
        await expect_error(
            catalog.SetPathReplacements(catalog_pb2.SetPathReplacementsRequest(server_id=server, rules=rule_set)),
            grpc.StatusCode.INVALID_ARGUMENT,
            field,
        )
    unknown = catalog_pb2.SetPathReplacementsRequest(server_id=UNKNOWN_SERVER, rules=rules[:1])
    await expect_error(catalog.SetPathReplacements(unknown), grpc.StatusCode.NOT_FOUND)
    await expect_error(
        catalog.ListPathReplacements(catalog_pb2.ListPathReplacementsRequest(server_id=UNKNOWN_SERVER)),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_list_items_filters_and_stable_pages(catalog: Stub) -> None:
    lib = await new_library(catalog)
    await write(catalog, batch(lib, [movie(str(i)) for i in range(1, 8)]))
    first = await catalog.ListItems(catalog_pb2.ListItemsRequest(library_id=lib, page_size=3))
    assert len(first.items) == 3 and not first.items[0].credits  # BASIC view: no relationships
    # A concurrent write between pages neither duplicates nor skips existing items.
    await write(catalog, batch(lib, [movie("100"), movie("1", title="Renamed")]))
    keys = [i.rating_key for i in first.items]
    token = first.next_page_token
    while token:
        page = await catalog.ListItems(catalog_pb2.ListItemsRequest(library_id=lib, page_size=3, page_token=token))
        keys += [i.rating_key for i in page.items]
        token = page.next_page_token
    assert sorted(keys) == sorted([str(i) for i in range(1, 8)] + ["100"])

    full = await catalog.ListItems(
        catalog_pb2.ListItemsRequest(library_id=lib, view=catalog_pb2.ITEM_VIEW_FULL, page_size=1)
    )
    assert full.items[0].credits and full.items[0].media[0].parts[0].streams
    movies = await catalog.ListItems(
        catalog_pb2.ListItemsRequest(library_id=lib, kind=C.ITEM_KIND_MOVIE, page_size=100)
    )
    assert len(movies.items) == 8
    shows = await catalog.ListItems(catalog_pb2.ListItemsRequest(library_id=lib, kind=C.ITEM_KIND_SHOW))
    assert not shows.items
    renamed = next(i for i in movies.items if i.rating_key == "1")
    since = await catalog.ListItems(catalog_pb2.ListItemsRequest(library_id=lib, updated_since=renamed.update_time))
    assert {i.rating_key for i in since.items} == {"1", "100"}
    normal = await catalog.ListItems(
        catalog_pb2.ListItemsRequest(library_id=lib, state=C.ITEM_STATE_NORMAL, page_size=100)
    )
    assert len(normal.items) == 8

    other_filters = catalog_pb2.ListItemsRequest(
        library_id=lib, kind=C.ITEM_KIND_MOVIE, page_token=first.next_page_token
    )
    for request, code, field in [
        (other_filters, grpc.StatusCode.INVALID_ARGUMENT, "page_token"),
        (catalog_pb2.ListItemsRequest(library_id="x"), grpc.StatusCode.INVALID_ARGUMENT, "library_id"),
        (
            catalog_pb2.ListItemsRequest(kind=common_pb2.ItemKind.ValueType(77)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "kind",
        ),
        (
            catalog_pb2.ListItemsRequest(state=common_pb2.ItemState.ValueType(77)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "state",
        ),
        (
            catalog_pb2.ListItemsRequest(view=catalog_pb2.ItemView.ValueType(9)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "view",
        ),
        (catalog_pb2.ListItemsRequest(page_size=-5), grpc.StatusCode.INVALID_ARGUMENT, "page_size"),
        (catalog_pb2.ListItemsRequest(library_id=str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND, None),
        (catalog_pb2.ListItemsRequest(parent_id=str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND, None),
    ]:
        await expect_error(catalog.ListItems(request), code, field)
    await expect_error(
        catalog.GetItem(catalog_pb2.GetItemRequest(item_id=str(uuid.uuid4()))), grpc.StatusCode.NOT_FOUND
    )
    await expect_error(
        catalog.GetItem(catalog_pb2.GetItemRequest(item_id="123")), grpc.StatusCode.INVALID_ARGUMENT, "item_id"
    )


async def test_search_titles_people_genres_and_unicode(catalog: Stub) -> None:
    lib = await new_library(catalog)
    items = [
        movie("1", title="Amélie", genres=["Comedy"]),
        movie("2", title="千と千尋の神隠し", genres=["Animation"]),
        movie("3", title="The Matrix", genres=["Sci-Fi"]),
        movie("4", title="Matrix Reloaded", genres=["Action"]),
        movie("5", title="Ёлки", genres=["Comedy"]),
    ]
    items[2].credits.add(role=C.CREDIT_ROLE_ACTOR, name="Keanu Reeves", order=9)
    await write(catalog, batch(lib, items))

    async def search(query: str, **kw: Any) -> list[catalog_pb2.SearchResult]:
        reply = await catalog.SearchItems(catalog_pb2.SearchItemsRequest(query=query, library_id=lib, **kw))
        return list(reply.results)

    amelie = await search("AMÉLIE")
    assert [r.item.rating_key for r in amelie] == ["1"] and amelie[0].matched_fields == ["title"]
    assert [r.item.rating_key for r in await search("千と千尋")] == ["2"]  # prefix of an unsegmented title
    assert [r.item.rating_key for r in await search("千尋")] == ["2"]  # substring fallback
    assert [r.item.rating_key for r in await search("ёлки")] == ["5"]
    matrix = await search("matrix")
    assert [r.item.rating_key for r in matrix][:2] in (["3", "4"], ["4", "3"]) and matrix[0].score >= matrix[1].score
    keanu = await search("keanu")
    assert [r.item.rating_key for r in keanu] == ["3"] and keanu[0].matched_fields == ["people"]
    comedies = await search("comedy")
    assert sorted(r.item.rating_key for r in comedies) == ["1", "5"] and comedies[0].matched_fields == ["genre"]
    page = await catalog.SearchItems(catalog_pb2.SearchItemsRequest(query="comedy", library_id=lib, page_size=1))
    nxt = await catalog.SearchItems(
        catalog_pb2.SearchItemsRequest(query="comedy", library_id=lib, page_size=1, page_token=page.next_page_token)
    )
    assert {page.results[0].item.rating_key, nxt.results[0].item.rating_key} == {"1", "5"}
    assert not await search("matrix", kinds=[C.ITEM_KIND_SHOW])
    for request, field in [
        (catalog_pb2.SearchItemsRequest(query=""), "query"),
        (catalog_pb2.SearchItemsRequest(query="!!!"), "query"),
        (catalog_pb2.SearchItemsRequest(query="x" * 600), "query"),
        (catalog_pb2.SearchItemsRequest(query="a", kinds=[common_pb2.ItemKind.ValueType(99)]), "kinds[0]"),
        (catalog_pb2.SearchItemsRequest(query="a", page_token="bad"), "page_token"),
    ]:
        await expect_error(catalog.SearchItems(request), grpc.StatusCode.INVALID_ARGUMENT, field)


async def test_an_item_with_thousands_of_long_names_is_written_and_found(catalog: Stub) -> None:
    """Valid input whose words would pass PostgreSQL's 1 MB tsvector limit: the vector keeps what fits."""
    lib = await new_library(catalog)
    item = movie("1", title="Crowded", credits=0)
    for i in range(5000):  # 5,000 distinct 245-character words: 1.2 MB of lexemes
        item.credits.add(role=C.CREDIT_ROLE_ACTOR, name=f"{i:05d}" + "x" * 240, order=i, plex_tag_id=i + 1)
    item.genres.extend(f"genre{i:04d}" + "y" * 240 for i in range(4000))
    [ack] = await write(catalog, batch(lib, [item]))
    assert ack.added == 1
    reply = await catalog.SearchItems(catalog_pb2.SearchItemsRequest(query="crowded", library_id=lib))
    assert [r.item.rating_key for r in reply.results] == ["1"]
    first = await catalog.SearchItems(catalog_pb2.SearchItemsRequest(query="00000" + "x" * 240, library_id=lib))
    assert [r.matched_fields for r in first.results] == [["people"]]


async def test_collections_networks_and_stats(catalog: Stub) -> None:
    lib = await new_library(catalog, C.LIBRARY_KIND_SHOWS)
    shows = [
        common_pb2.Item(kind=C.ITEM_KIND_SHOW, rating_key="a", title="A", networks=["HBO", "Max"]),
        common_pb2.Item(kind=C.ITEM_KIND_SHOW, rating_key="b", title="B", networks=["HBO"]),
        common_pb2.Item(kind=C.ITEM_KIND_SHOW, rating_key="c", title="C", networks=["BBC"]),
        common_pb2.Item(kind=C.ITEM_KIND_SEASON, rating_key="a1", parent_rating_key="a", networks=["Ignored"]),
    ]
    col = common_pb2.Collection(
        rating_key="col1", title="Best", member_rating_keys=["a", "b"], smart=True,
        artwork=[common_pb2.Artwork(kind=C.ARTWORK_KIND_POSTER, url="/c/1", updated_at=Timestamp(seconds=100))],
    )  # fmt: skip
    await write(catalog, batch(lib, shows, collections=[col]))
    cols = (await catalog.ListCollections(catalog_pb2.ListCollectionsRequest(library_id=lib))).collections
    assert len(cols) == 1 and list(cols[0].member_rating_keys) == ["a", "b"] and cols[0].smart
    assert cols[0].artwork[0].url == "/c/1" and cols[0].artwork[0].updated_at.seconds == 100
    col.member_rating_keys[:] = ["c"]
    await write(catalog, batch(lib, [], collections=[col]))
    cols = (await catalog.ListCollections(catalog_pb2.ListCollectionsRequest(library_id=lib))).collections
    assert list(cols[0].member_rating_keys) == ["c"]

    networks = await catalog.ListNetworks(catalog_pb2.ListNetworksRequest(library_id=lib, page_size=2))
    rest = await catalog.ListNetworks(
        catalog_pb2.ListNetworksRequest(library_id=lib, page_size=2, page_token=networks.next_page_token)
    )
    assert [(n.name, n.show_count) for n in [*networks.networks, *rest.networks]] == [
        ("BBC", 1),
        ("HBO", 2),
        ("Max", 1),
    ]

    stats = await catalog.GetLibraryStats(catalog_pb2.GetLibraryStatsRequest(library_id=lib))
    assert stats.total == 4 and stats.collections == 1
    assert {(c.kind, c.state): c.count for c in stats.counts} == {
        (C.ITEM_KIND_SHOW, C.ITEM_STATE_NORMAL): 3,
        (C.ITEM_KIND_SEASON, C.ITEM_STATE_NORMAL): 1,
    }
    everything = await catalog.GetLibraryStats(catalog_pb2.GetLibraryStatsRequest())
    assert everything.total >= 4
    for call in (
        catalog.GetLibraryStats(catalog_pb2.GetLibraryStatsRequest(library_id=str(uuid.uuid4()))),
        catalog.ListCollections(catalog_pb2.ListCollectionsRequest(library_id=str(uuid.uuid4()))),
        catalog.ListNetworks(catalog_pb2.ListNetworksRequest(library_id=str(uuid.uuid4()))),
    ):
        await expect_error(call, grpc.StatusCode.NOT_FOUND)
    bad_col = common_pb2.Collection(rating_key="", title="x")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await write(catalog, batch(lib, [], collections=[bad_col]))
    assert "collections[0].rating_key" in [f for f, _ in field_violations(err.value)]


async def test_finish_scan_errors(catalog: Stub) -> None:
    lib = await new_library(catalog)
    other = await new_library(catalog)
    scan = str(uuid.uuid4())
    await write(catalog, batch(lib, [movie("1")], scan_id=scan))
    for request, code, field in [
        (catalog_pb2.FinishScanRequest(library_id=lib), grpc.StatusCode.INVALID_ARGUMENT, "scan_id"),
        (catalog_pb2.FinishScanRequest(library_id=lib, scan_id="x"), grpc.StatusCode.INVALID_ARGUMENT, "scan_id"),
        (
            catalog_pb2.FinishScanRequest(library_id=lib, scan_id=scan, mode=common_pb2.ScanMode.ValueType(7)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "mode",
        ),
        (catalog_pb2.FinishScanRequest(library_id=other, scan_id=scan), grpc.StatusCode.INVALID_ARGUMENT, "scan_id"),
        (catalog_pb2.FinishScanRequest(library_id=str(uuid.uuid4()), scan_id=scan), grpc.StatusCode.NOT_FOUND, None),
    ]:
        await expect_error(catalog.FinishScan(request), code, field)


async def test_unauthenticated_calls_are_refused(catalog: Stub, service_stack: Any) -> None:
    from plexsync.common.clients import service_channel

    channel = service_channel(service_stack.addresses["catalog"], "wrong-token")
    try:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        await expect_error(stub.ListLibraries(catalog_pb2.ListLibrariesRequest()), grpc.StatusCode.UNAUTHENTICATED)
    finally:
        await channel.close()
