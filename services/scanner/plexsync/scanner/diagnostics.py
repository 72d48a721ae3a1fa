"""`TestPaths`: what a scan would make of a sample of a library's files, without writing anything.

It goes the way a scan goes (credentials from auth, the server's path replacements from the catalog, the listing
from Plex) and decides each file with the scan's own `PathMapper` and `FileStates`, so its answer is the scan's.
"""

from __future__ import annotations

import asyncio

from plexsync.common.errors import FailedPreconditionError, InvalidArgumentError, UnavailableError, parse_uuid
from plexsync.scanner.manager import ScanManager
from plexsync.scanner.paths import NORMAL, FileStates, PathMapper, item_state
from plexsync.scanner.plex_client import (
    TYPE_EPISODE,
    TYPE_MOVIE,
    PlexClient,
    PlexError,
    PlexUnauthorizedError,
    page_headers,
)
from plexsync.scanner.plex_models import PlexMetadata, parse_page
from plexsync.v1 import common_pb2, scanner_pb2

DEFAULT_SAMPLE = 10
MAX_SAMPLE = 100


def sample_offsets(total: int, size: int) -> list[int]:
    """`size` offsets spread evenly over a listing of `total` items (all of them when it is that small)."""
    if total <= size:
        return list(range(total))
    return sorted({i * total // size for i in range(size)})


async def _sample(plex: PlexClient, section_key: str, type_num: int, size: int) -> tuple[int, list[PlexMetadata]]:
    path, params = f"/library/sections/{section_key}/all", {"type": str(type_num)}
    total = await plex.section_count(section_key, type_num)
    offsets = sample_offsets(total, size)
    if not offsets:
        return 0, []
    if len(offsets) == total:
        container, _ = await plex.get(path, params, page_headers(0, total))
        return total, parse_page(container).items[:total]
    pages = await asyncio.gather(*(plex.get(path, params, page_headers(offset, 1)) for offset in offsets))
    return total, [item for container, _ in pages for item in parse_page(container).items[:1]]


async def test_paths(manager: ScanManager, library_id: str, sample_size: int) -> scanner_pb2.TestPathsResponse:
    parse_uuid(library_id, "library_id")
    if not 0 <= sample_size <= MAX_SAMPLE:
        raise InvalidArgumentError.single("sample_size", f"must be between 0 (= {DEFAULT_SAMPLE}) and {MAX_SAMPLE}")
    library = await manager.catalog.get_library(library_id)
    if library.removed:
        raise FailedPreconditionError(
            f"library {library.name!r} ({library_id}) is gone from its server; run SyncServer to refresh libraries"
        )
    rules = await manager.catalog.list_path_replacements(library.server_id)
    mapper = PathMapper((r.plex_path, r.local_path) for r in rules)
    states = FileStates(mapper, remote_streaming=library.remote_streaming_enabled)
    type_num = TYPE_EPISODE if library.kind == common_pb2.LIBRARY_KIND_SHOWS else TYPE_MOVIE
    creds = await manager.credentials.credentials(library.server_id)
    async with manager.plex_client(creds, library.server_id) as plex:
        try:
            total, items = await _sample(plex, library.plex_key, type_num, sample_size or DEFAULT_SAMPLE)
        except PlexUnauthorizedError as exc:
            raise UnavailableError("the Plex server refused its token (401); log in again or re-add it") from exc
        except PlexError as exc:
            raise UnavailableError(f"the Plex server could not list library {library.name!r}: {exc}") from exc
    reply = scanner_pb2.TestPathsResponse(library=library, rules=rules, total_items=total)
    for item in items:
        decided = [[(part.file, *states.resolve(part.file)) for part in media.parts] for media in item.media]
        overall = item_state([state for _, _, state in version] for version in decided)
        if not any(decided):  # no file at all: the item is UNAVAILABLE, say so
            reply.files.append(scanner_pb2.PathTest(rating_key=item.rating_key, title=item.title, state=overall,
                                                    item_state=overall))  # fmt: skip
        for plex_path, local_path, state in (file for version in decided for file in version):
            rule = mapper.rule_for(plex_path)
            reply.files.append(
                scanner_pb2.PathTest(
                    rating_key=item.rating_key,
                    title=item.title,
                    plex_path=plex_path,
                    local_path=local_path,
                    exists=state == NORMAL,
                    state=state,
                    rule=common_pb2.PathReplacement(plex_path=rule[0], local_path=rule[1]) if rule else None,
                    item_state=overall,
                )
            )
    return reply
