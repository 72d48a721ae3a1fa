"""Builders of realistic catalog messages for tests (and the benchmark's shape), and another writer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import psycopg
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from plexsync.common.db import libpq_url
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2

C = common_pb2


def movie(
    key: str,
    *,
    title: str = "",
    credits: int = 3,
    genres: Iterable[str] = ("Drama",),
    versions: int = 1,
    **fields: object,
) -> common_pb2.Item:
    """A movie with credits, genres, guids, artwork, media versions with parts and streams, and chapters."""
    n = int(key) if key.isdigit() else abs(hash(key)) % 100_000
    item = common_pb2.Item(
        kind=C.ITEM_KIND_MOVIE, rating_key=key, etag=f"etag-{key}", state=C.ITEM_STATE_NORMAL,
        title=title or f"Movie {key}", sort_title=title or f"Movie {key}", plot="A plot.", tagline="Tag.",
        year=1999, release_date="1999-03-31", content_rating="R", duration=Duration(seconds=8160),
        rating=8.7, audience_rating=9.1, plex_guid=f"plex://movie/{key}", studios=["Warner"],
        genres=list(genres), labels=["fav"], countries=["USA"],
        plex_added_at=Timestamp(seconds=1_700_000_000), plex_updated_at=Timestamp(seconds=1_700_000_100),
    )  # fmt: skip
    for i in range(credits):
        role = C.CREDIT_ROLE_ACTOR if i else C.CREDIT_ROLE_DIRECTOR
        item.credits.add(role=role, name=f"Person {i}", character=f"Char {i}" if i else "", order=i,
                         thumb_url=f"/people/{i}.jpg", plex_tag_id=1000 + i)  # fmt: skip
    item.guids.add(uri=f"imdb://tt{n:07d}", provider="imdb", external_id=f"tt{n:07d}")
    item.guids.add(uri=f"tmdb://{n}")
    item.artwork.add(kind=C.ARTWORK_KIND_POSTER, url=f"/library/metadata/{key}/thumb/1", source="plex",
                     updated_at=Timestamp(seconds=1_700_000_000))  # fmt: skip
    item.artwork.add(kind=C.ARTWORK_KIND_FAN_ART, url=f"https://img.example/{key}.jpg", source="img.example")
    for v in range(versions):
        media = item.media.add(plex_media_id=n * 10 + v, duration=Duration(seconds=8160), bitrate=8000,
                               width=1920, height=1080, aspect_ratio=1.78, audio_channels=6, audio_codec="ac3",
                               video_codec="h264", video_resolution="1080", container="mkv")  # fmt: skip
        part = media.parts.add(plex_part_id=n * 10 + v, plex_key=f"/library/parts/{n}{v}/file.mkv",
                               plex_path=f"/data/movies/{key}-{v}.mkv", local_path=f"/mnt/movies/{key}-{v}.mkv",
                               size_bytes=4_000_000_000, duration=Duration(seconds=8160), container="mkv",
                               state=C.ITEM_STATE_NORMAL)  # fmt: skip
        part.streams.add(plex_stream_id=n * 100 + v * 10 + 1, kind=C.STREAM_KIND_VIDEO, index=0, codec="h264",
                         width=1920, height=1080, is_default=True, bitrate=7000)  # fmt: skip
        part.streams.add(plex_stream_id=n * 100 + v * 10 + 2, kind=C.STREAM_KIND_AUDIO, index=1, codec="ac3",
                         language="English", language_code="eng", channels=6, is_default=True)  # fmt: skip
        part.streams.add(plex_stream_id=n * 100 + v * 10 + 3, kind=C.STREAM_KIND_SUBTITLE, index=2, codec="srt",
                         language="Français", language_code="fra", forced=True)  # fmt: skip
    item.chapters.add(index=0, title="Start", start=Duration(seconds=0), end=Duration(seconds=600))
    for key_, value in fields.items():
        setattr(item, key_, value)
    return item


def section(
    key: str, name: str, kind: common_pb2.LibraryKind.ValueType = C.LIBRARY_KIND_MOVIES
) -> catalog_pb2.LibrarySection:
    return catalog_pb2.LibrarySection(plex_key=key, name=name, kind=kind, plex_uuid=f"uuid-{key}", agent="tv.plex",
                                      language="en", locations=[f"/data/{name}"])  # fmt: skip


async def new_library(
    stub: catalog_pb2_grpc.CatalogServiceStub, kind: common_pb2.LibraryKind.ValueType = C.LIBRARY_KIND_MOVIES
) -> str:
    """Register a fresh server with one library; its id."""
    reply = await stub.RegisterLibraries(
        catalog_pb2.RegisterLibrariesRequest(
            server_id=str(uuid.uuid4()), server_name="srv", sections=[section("1", "L", kind)]
        )
    )
    return str(reply.libraries[0].id)


async def write(
    stub: catalog_pb2_grpc.CatalogServiceStub, *requests: catalog_pb2.WriteItemsRequest
) -> list[catalog_pb2.WriteItemsResponse]:
    async def gen() -> AsyncIterator[catalog_pb2.WriteItemsRequest]:
        for r in requests:
            yield r

    call = stub.WriteItems(gen())
    return [reply async for reply in call]


def batch(
    library_id: str,
    items: Iterable[common_pb2.Item],
    *,
    scan_id: str = "",
    seq: int = 1,
    seen: Iterable[str] = (),
    collections: Iterable[common_pb2.Collection] = (),
) -> catalog_pb2.WriteItemsRequest:
    return catalog_pb2.WriteItemsRequest(library_id=library_id, scan_id=scan_id, sequence=seq, items=list(items),
                                         seen_rating_keys=list(seen), collections=list(collections))  # fmt: skip


def code_of(exc: grpc.aio.AioRpcError) -> grpc.StatusCode:
    return exc.code()


@contextmanager
def other_writer(database_url: str, library_id: str = "", holding: str = "") -> Iterator[psycopg.Connection[Any]]:
    """A transaction of another writer of the catalog's database (commit or roll it back inside the block).
    With `holding`, it has inserted an item with that rating key: the catalog's insert of the key waits."""
    with psycopg.connect(libpq_url(database_url), options="-c search_path=catalog") as conn:
        if holding:
            conn.execute(
                "INSERT INTO items (library_id, kind, rating_key, content_hash, title) "
                "VALUES (%s, 1, %s, '\\x00', 'x')",
                (library_id, holding),
            )
        yield conn
