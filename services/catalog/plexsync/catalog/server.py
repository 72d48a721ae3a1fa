"""The CatalogService servicer: thin handlers that validate, call the repository or writer, and answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

from plexsync.catalog.changes import ChangeHub, ChangeLog
from plexsync.catalog.repository import Repository
from plexsync.catalog.writer import Writer
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc

log = logging.getLogger(__name__)

Context: TypeAlias = Any  # grpc.aio.ServicerContext (grpc ships no type hints)


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(
        self, repository: Repository, writer: Writer, changelog: ChangeLog, hub: ChangeHub, *, etag_chunk: int = 5000
    ) -> None:
        self.repo = repository
        self.writer = writer
        self.changelog = changelog
        self.hub = hub
        self.etag_chunk = etag_chunk

    async def RegisterLibraries(
        self, request: catalog_pb2.RegisterLibrariesRequest, context: Context
    ) -> catalog_pb2.RegisterLibrariesResponse:
        return await self.repo.register_libraries(request)

    async def ListLibraries(
        self, request: catalog_pb2.ListLibrariesRequest, context: Context
    ) -> catalog_pb2.ListLibrariesResponse:
        return await self.repo.list_libraries(request)

    async def GetLibrary(
        self, request: catalog_pb2.GetLibraryRequest, context: Context
    ) -> catalog_pb2.GetLibraryResponse:
        return catalog_pb2.GetLibraryResponse(library=await self.repo.get_library(request.library_id))

    async def UpdateLibrary(
        self, request: catalog_pb2.UpdateLibraryRequest, context: Context
    ) -> catalog_pb2.UpdateLibraryResponse:
        return catalog_pb2.UpdateLibraryResponse(library=await self.repo.update_library(request))

    async def SetLibraryRules(
        self, request: catalog_pb2.SetLibraryRulesRequest, context: Context
    ) -> catalog_pb2.SetLibraryRulesResponse:
        return catalog_pb2.SetLibraryRulesResponse(library=await self.repo.set_library_rules(request))

    async def SetPathReplacements(
        self, request: catalog_pb2.SetPathReplacementsRequest, context: Context
    ) -> catalog_pb2.SetPathReplacementsResponse:
        return catalog_pb2.SetPathReplacementsResponse(rules=await self.repo.set_path_replacements(request))

    async def ListPathReplacements(
        self, request: catalog_pb2.ListPathReplacementsRequest, context: Context
    ) -> catalog_pb2.ListPathReplacementsResponse:
        return await self.repo.list_path_replacements(request)

    async def GetItemEtags(
        self, request: catalog_pb2.GetItemEtagsRequest, context: Context
    ) -> AsyncIterator[catalog_pb2.GetItemEtagsResponse]:
        async for rows in self.repo.item_etags(request, self.etag_chunk):
            yield catalog_pb2.GetItemEtagsResponse(
                etags=[catalog_pb2.ItemEtag(rating_key=r[0], etag=r[1], kind=r[2], state=r[3]) for r in rows]
            )

    async def WriteItems(
        self, request_iterator: AsyncIterator[catalog_pb2.WriteItemsRequest], context: Context
    ) -> AsyncIterator[catalog_pb2.WriteItemsResponse]:
        async for request, result in self.writer.write_stream(request_iterator):
            yield catalog_pb2.WriteItemsResponse(
                sequence=request.sequence,
                added=result.added,
                updated=result.updated,
                unchanged=result.unchanged,
                restored=result.restored,
                changes=result.changes,
            )

    async def FinishScan(
        self, request: catalog_pb2.FinishScanRequest, context: Context
    ) -> catalog_pb2.FinishScanResponse:
        return await self.writer.finish_scan(request)

    async def MarkItemsMissing(
        self, request: catalog_pb2.MarkItemsMissingRequest, context: Context
    ) -> catalog_pb2.MarkItemsMissingResponse:
        missing, changes = await self.writer.mark_items_missing(request)
        return catalog_pb2.MarkItemsMissingResponse(missing=missing, changes=changes)

    async def WatchChanges(
        self, request: catalog_pb2.WatchChangesRequest, context: Context
    ) -> AsyncIterator[catalog_pb2.WatchChangesResponse]:
        async for changes in self.changelog.watch(request, self.hub):
            yield catalog_pb2.WatchChangesResponse(changes=changes)

    async def ListItems(self, request: catalog_pb2.ListItemsRequest, context: Context) -> catalog_pb2.ListItemsResponse:
        return await self.repo.list_items(request)

    async def GetItem(self, request: catalog_pb2.GetItemRequest, context: Context) -> catalog_pb2.GetItemResponse:
        return catalog_pb2.GetItemResponse(item=await self.repo.get_item(request.item_id))

    async def SearchItems(
        self, request: catalog_pb2.SearchItemsRequest, context: Context
    ) -> catalog_pb2.SearchItemsResponse:
        return await self.repo.search(request)

    async def ListCollections(
        self, request: catalog_pb2.ListCollectionsRequest, context: Context
    ) -> catalog_pb2.ListCollectionsResponse:
        return await self.repo.list_collections(request)

    async def ListNetworks(
        self, request: catalog_pb2.ListNetworksRequest, context: Context
    ) -> catalog_pb2.ListNetworksResponse:
        return await self.repo.list_networks(request)

    async def GetLibraryStats(
        self, request: catalog_pb2.GetLibraryStatsRequest, context: Context
    ) -> catalog_pb2.GetLibraryStatsResponse:
        return await self.repo.library_stats(request)
