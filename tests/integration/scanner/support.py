"""Helpers for the scanner's integration tests: fakeplex as a process, the expected catalog, scan driving."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
from plexsync.devstack.process import start_fakeplex
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2, events_pb2, scanner_pb2, scanner_pb2_grpc

TERMINAL = ("completed", "failed", "cancelled")


@contextmanager
def fakeplex_process(log_dir: Path, *args: str) -> Iterator[dict[str, Any]]:
    """``python -m plexsync.fakeplex`` as a real process; yields its ready-file info (url, token...)."""
    child, info = start_fakeplex(
        ["--port", "0", "--remote-host", "", "--relay-listen", "", *args], log_dir / "fakeplex.log", timeout=30
    )
    try:
        yield info
    finally:
        child.stop(timeout=5)


def plex_get(url: str, token: str, path: str, **params: str) -> dict[str, Any]:
    resp = httpx.get(url + path, params=params, headers={"X-Plex-Token": token, "Accept": "application/json"})
    resp.raise_for_status()
    data: dict[str, Any] = resp.json()["MediaContainer"]
    return data


def fakeplex_items(url: str, token: str, section: str, type_num: int) -> list[dict[str, Any]]:
    """Every item of a section and type, as full metadata from fakeplex's control API."""
    listing = plex_get(url, token, f"/library/sections/{section}/all", type=str(type_num))
    out = []
    with httpx.Client(base_url=url) as client:
        for m in listing.get("Metadata", []):
            out.append(client.get(f"/__fakeplex/items/{m['ratingKey']}").json())
    return out


# ----------------------------------------------------------------------------- expected catalog
def expected_item(d: dict[str, Any], kind: int, locate: Callable[[str], tuple[str, int]]) -> common_pb2.Item:
    """What the catalog must hold for a Plex item, written independently of the scanner's converter."""
    item = common_pb2.Item(kind=kind, rating_key=d["ratingKey"], title=d.get("title", ""))  # type: ignore[arg-type]
    if kind in (common_pb2.ITEM_KIND_SEASON, common_pb2.ITEM_KIND_EPISODE):
        item.parent_rating_key = d.get("parentRatingKey", "")
        item.index = d.get("index", 0)
    if kind == common_pb2.ITEM_KIND_EPISODE:
        item.parent_index = d.get("parentIndex", 0)
    item.sort_title = d.get("titleSort") or d.get("title", "")
    item.original_title = d.get("originalTitle", "")
    item.plot = d.get("summary", "")
    item.tagline = d.get("tagline", "")
    item.year = d.get("year", 0)
    item.release_date = d.get("originallyAvailableAt", "")
    item.content_rating = d.get("contentRating", "")
    item.duration.FromMilliseconds(d.get("duration", 0))
    item.rating = d.get("rating", 0.0)
    item.audience_rating = d.get("audienceRating", 0.0)
    item.child_count = d.get("childCount", 0)
    item.leaf_count = d.get("leafCount", 0)
    if d.get("studio"):
        item.studios.append(d["studio"])
    item.genres.extend(t["tag"] for t in d.get("Genre", []))
    item.labels.extend(t["tag"] for t in d.get("Label", []))
    item.countries.extend(t["tag"] for t in d.get("Country", []))
    item.networks.extend(t["tag"] for t in d.get("Network", []))
    for role, key in (
        (common_pb2.CREDIT_ROLE_ACTOR, "Role"),
        (common_pb2.CREDIT_ROLE_DIRECTOR, "Director"),
        (common_pb2.CREDIT_ROLE_WRITER, "Writer"),
        (common_pb2.CREDIT_ROLE_PRODUCER, "Producer"),
    ):
        for order, t in enumerate(d.get(key, [])):
            item.credits.add(
                role=role,
                name=t["tag"],
                character=t.get("role", "") if key == "Role" else "",
                order=order,
                thumb_url=t.get("thumb", ""),
                plex_tag_id=t.get("id", 0),
            )
    for g in d.get("Guid", []):
        provider, _, ext = g["id"].partition("://")
        item.guids.add(uri=g["id"], provider=provider, external_id=ext)
    for attr, art_kind in (
        ("thumb", 0),
        ("art", common_pb2.ARTWORK_KIND_FAN_ART),
        ("banner", common_pb2.ARTWORK_KIND_BANNER),
    ):
        url = d.get(attr)
        if not url:
            continue
        if attr == "thumb":
            art_kind = common_pb2.ARTWORK_KIND_THUMBNAIL if d["type"] == "episode" else common_pb2.ARTWORK_KIND_POSTER
        art = item.artwork.add(kind=art_kind, url=url, source="plex")
        art.updated_at.FromSeconds(int(url.rsplit("/", 1)[1]))
    best: Any = None
    for m in d.get("Media", []):
        v = item.media.add(
            plex_media_id=m["id"], bitrate=m.get("bitrate", 0), width=m.get("width", 0), height=m.get("height", 0),
            aspect_ratio=m.get("aspectRatio", 0.0), audio_channels=m.get("audioChannels", 0),
            audio_codec=m.get("audioCodec", ""), video_codec=m.get("videoCodec", ""),
            video_resolution=m.get("videoResolution", ""), container=m.get("container", ""),
            video_frame_rate=m.get("videoFrameRate", ""), video_profile=m.get("videoProfile", ""),
        )  # fmt: skip
        v.duration.FromMilliseconds(m.get("duration", 0))
        worst: int = common_pb2.ITEM_STATE_NORMAL
        for p in m.get("Part", []):
            local, state = locate(p["file"])
            part = v.parts.add(
                plex_part_id=p["id"], plex_key=p["key"], plex_path=p["file"], local_path=local,
                size_bytes=p.get("size", 0), container=p.get("container", ""),
                video_profile=p.get("videoProfile", ""), audio_profile=p.get("audioProfile", ""), state=state,
            )  # fmt: skip
            part.duration.FromMilliseconds(p.get("duration", 0))
            worst = max(worst, state)
            for s in p.get("Stream", []):
                fr = s.get("frameRate")
                part.streams.add(
                    plex_stream_id=s["id"], kind=s["streamType"], index=s.get("index", 0), codec=s.get("codec", ""),
                    language=s.get("language", ""), language_code=s.get("languageCode", ""),
                    title=s.get("title", ""), display_title=s.get("displayTitle", ""),
                    is_default=bool(s.get("default")), forced=bool(s.get("forced")), width=s.get("width", 0),
                    height=s.get("height", 0), channels=s.get("channels", 0), bitrate=s.get("bitrate", 0),
                    profile=s.get("profile", ""), frame_rate=repr(fr) if isinstance(fr, float) else str(fr or ""),
                    audio_channel_layout=s.get("audioChannelLayout", ""),
                    external_key=s.get("key", "") if s["streamType"] == 3 else "",
                )  # fmt: skip
        best = worst if best is None else min(best, worst)
    for c in d.get("Chapter", []):
        ch = item.chapters.add(index=c["index"], title=c.get("tag", ""))
        ch.start.FromMilliseconds(c["startTimeOffset"])
        ch.end.FromMilliseconds(c["endTimeOffset"])
    item.plex_guid = d.get("guid", "")
    item.plex_added_at.FromSeconds(d["addedAt"])
    item.plex_updated_at.FromSeconds(d["updatedAt"])
    if kind in (common_pb2.ITEM_KIND_SHOW, common_pb2.ITEM_KIND_SEASON):
        item.state = common_pb2.ITEM_STATE_NORMAL
    else:
        item.state = best if best is not None else common_pb2.ITEM_STATE_UNAVAILABLE
    return item


def comparable(item: common_pb2.Item) -> common_pb2.Item:
    """A catalog item without the fields the catalog or scanner own (ids, etag, seen times)."""
    out = common_pb2.Item()
    out.CopyFrom(item)
    for name in ("id", "library_id", "parent_id", "etag", "first_seen_at", "last_seen_at", "update_time"):
        out.ClearField(name)
    return out


# ----------------------------------------------------------------------------- catalog and scans
async def catalog_items(channel: grpc.aio.Channel, library_id: str) -> dict[str, common_pb2.Item]:
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    out: dict[str, common_pb2.Item] = {}
    token = ""
    while True:
        resp = await stub.ListItems(
            catalog_pb2.ListItemsRequest(
                library_id=library_id, page_size=1000, page_token=token, view=catalog_pb2.ITEM_VIEW_FULL
            )
        )
        for item in resp.items:
            assert item.rating_key not in out, f"duplicate item {item.rating_key}"
            out[item.rating_key] = item
        token = resp.next_page_token
        if not token:
            return out


async def run_scan(
    channel: grpc.aio.Channel, library_id: str, mode: int = common_pb2.SCAN_MODE_INCREMENTAL, wait: float = 120
) -> tuple[common_pb2.Scan, list[events_pb2.ScanEvent]]:
    stub = scanner_pb2_grpc.ScannerServiceStub(channel)
    started = await stub.ScanLibrary(scanner_pb2.ScanLibraryRequest(library_id=library_id, mode=mode))  # type: ignore[arg-type]
    events = await watch(channel, started.scan.id, wait)
    scan = (await stub.GetScan(scanner_pb2.GetScanRequest(scan_id=started.scan.id))).scan
    return scan, events


async def watch(channel: grpc.aio.Channel, scan_id: str, wait: float = 120) -> list[events_pb2.ScanEvent]:
    stub = scanner_pb2_grpc.ScannerServiceStub(channel)
    events = []

    async def consume() -> None:
        async for resp in stub.WatchScan(scanner_pb2.WatchScanRequest(scan_id=scan_id)):
            events.append(resp.event)

    await asyncio.wait_for(consume(), wait)
    assert events and events[-1].WhichOneof("payload") in TERMINAL, [e.WhichOneof("payload") for e in events]
    return events
