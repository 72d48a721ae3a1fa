"""What the scan domain needs from its peers, as protocols (gRPC adapters live in `peers`).

Keeping the domain behind these lets unit tests drive a whole scan against an in-process fakeplex
and an in-memory catalog, while production and integration tests use the real services.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from plexsync.scanner.plex_client import PlexCredentials
from plexsync.v1 import catalog_pb2, common_pb2


class Catalog(Protocol):
    async def get_library(self, library_id: str) -> common_pb2.Library: ...

    async def list_path_replacements(self, server_id: str) -> list[common_pb2.PathReplacement]: ...

    def item_etags(self, library_id: str) -> AsyncIterator[catalog_pb2.ItemEtag]: ...

    def write_items(
        self, requests: AsyncIterator[catalog_pb2.WriteItemsRequest]
    ) -> AsyncIterator[catalog_pb2.WriteItemsResponse]: ...

    async def finish_scan(self, request: catalog_pb2.FinishScanRequest) -> catalog_pb2.FinishScanResponse: ...

    async def register_libraries(
        self, request: catalog_pb2.RegisterLibrariesRequest
    ) -> catalog_pb2.RegisterLibrariesResponse: ...


class Credentials(Protocol):
    async def credentials(self, server_id: str, *, recheck: bool = False) -> PlexCredentials: ...

    async def server_name(self, server_id: str) -> str: ...
