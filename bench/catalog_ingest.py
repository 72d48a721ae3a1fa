"""Catalog ingest benchmark: WriteItems through a real catalog process vs the plain per-object ORM.

    .venv/bin/python bench/catalog_ingest.py                 # 100,000 movies
    .venv/bin/python bench/catalog_ingest.py --items 5000    # quick run

Each movie carries full metadata: 10 credits (from a shared pool of people), 3 genres, 3 guids, 2 artwork,
2 files (media versions) with 4 streams each. Phases:

- first ingest: every item is new (one WriteItems stream, batches of --batch items, one transaction each);
- unchanged re-send: the same items again in a new scan; nothing may be written;
- baseline first ingest / baseline re-send: the same data with SQLAlchemy ORM objects (session.add per object,
  commit per batch; re-send = load each item by rating key and compare its hash), on --baseline-items items.

PostgreSQL is embedded (plexsync.devstack) unless DATABASE_URL is set; the catalog runs as
`python -m plexsync.catalog` and its peak RSS is sampled with psutil during each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from plexsync.catalog.ingest import search_vector
from plexsync.catalog.models import (
    Credit,
    Item,
    MediaPart,
    MediaStream,
    MediaVersion,
    Person,
)
from plexsync.common.clients import service_channel
from plexsync.common.db import libpq_url, sqlalchemy_url
from plexsync.devstack import infra
from plexsync.devstack.process import ChildProcess, start_service
from plexsync.v1 import catalog_pb2, catalog_pb2_grpc, common_pb2
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from bench.support import PeakRss, postgres_settings
from tests.support.stack import fresh_database

C = common_pb2
PEOPLE = 20_000
GENRES = ["Action", "Drama", "Comedy", "Thriller", "Sci-Fi", "Horror", "Romance", "Documentary", "Animation"]


def build_movie(n: int) -> common_pb2.Item:
    item = common_pb2.Item(
        kind=C.ITEM_KIND_MOVIE, rating_key=str(n), etag=f"e{n}", state=C.ITEM_STATE_NORMAL, title=f"Movie {n}",
        sort_title=f"Movie {n:07d}", original_title=f"Película {n}", plot="A long plot. " * 20, tagline="Tagline.",
        year=1950 + n % 70, release_date=f"{1950 + n % 70}-01-{1 + n % 28:02d}", content_rating="PG-13",
        duration=Duration(seconds=5400 + n % 3600), rating=7.5, audience_rating=8.0, plex_guid=f"plex://movie/{n:x}",
        studios=["Studio " + str(n % 50)], genres=[GENRES[(n + k) % len(GENRES)] for k in range(3)],
        countries=["USA"], plex_added_at=Timestamp(seconds=1_600_000_000 + n),
        plex_updated_at=Timestamp(seconds=1_650_000_000 + n),
    )  # fmt: skip
    for k in range(10):
        p = (n * 7 + k * 131) % PEOPLE
        role = C.CREDIT_ROLE_DIRECTOR if k == 0 else C.CREDIT_ROLE_WRITER if k == 1 else C.CREDIT_ROLE_ACTOR
        item.credits.add(role=role, name=f"Person {p}", character=f"Character {k}" if k > 1 else "", order=k,
                         thumb_url=f"https://img.example/p/{p}.jpg", plex_tag_id=p + 1)  # fmt: skip
    item.guids.add(uri=f"imdb://tt{n:07d}", provider="imdb", external_id=f"tt{n:07d}")
    item.guids.add(uri=f"tmdb://{n}", provider="tmdb", external_id=str(n))
    item.guids.add(uri=f"tvdb://{n}", provider="tvdb", external_id=str(n))
    item.artwork.add(kind=C.ARTWORK_KIND_POSTER, url=f"/library/metadata/{n}/thumb/1", source="plex")
    item.artwork.add(kind=C.ARTWORK_KIND_FAN_ART, url=f"/library/metadata/{n}/art/1", source="plex")
    for v in range(2):
        mid = n * 2 + v
        media = item.media.add(plex_media_id=mid, duration=Duration(seconds=5400), bitrate=9000, width=1920,
                               height=1080, aspect_ratio=1.78, audio_channels=6, audio_codec="eac3",
                               video_codec="hevc", video_resolution="1080", container="mkv")  # fmt: skip
        part = media.parts.add(plex_part_id=mid, plex_key=f"/library/parts/{mid}/1/file.mkv",
                               plex_path=f"/data/movies/Movie {n}/Movie {n} v{v}.mkv",
                               local_path=f"/mnt/movies/Movie {n}/Movie {n} v{v}.mkv", size_bytes=6_000_000_000 + n,
                               duration=Duration(seconds=5400), container="mkv", state=C.ITEM_STATE_NORMAL)  # fmt: skip
        base = mid * 4
        part.streams.add(plex_stream_id=base, kind=C.STREAM_KIND_VIDEO, index=0, codec="hevc", width=1920,
                         height=1080, is_default=True, bitrate=8000)  # fmt: skip
        part.streams.add(plex_stream_id=base + 1, kind=C.STREAM_KIND_AUDIO, index=1, codec="eac3", language="English",
                         language_code="eng", channels=6, is_default=True)  # fmt: skip
        part.streams.add(plex_stream_id=base + 2, kind=C.STREAM_KIND_AUDIO, index=2, codec="aac", language="Español",
                         language_code="spa", channels=2)  # fmt: skip
        part.streams.add(plex_stream_id=base + 3, kind=C.STREAM_KIND_SUBTITLE, index=3, codec="srt",
                         language="English", language_code="eng")  # fmt: skip
    return item


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def backend_cpu(database_url: str) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends serving the benchmark database (when the server is local)."""
    url = libpq_url(database_url)
    with psycopg.connect(url, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")]
        own = conn.execute("SELECT pg_backend_pid()").fetchone()
    out = {}
    for pid in pids:
        if own is not None and pid == own[0]:
            continue
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


@dataclass
class Result:
    phase: str
    items: int
    seconds: float
    rss_mb: float | None
    workers_rss_mb: float | None = None
    cpu_us: tuple[float, ...] | None = None  # CPU µs per item: catalog main, catalog workers, PostgreSQL, client

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def batches_bytes(library_id: str, items: list[common_pb2.Item], size: int) -> list[bytes]:
    scan_id = str(uuid.uuid4())
    out = []
    for seq, start in enumerate(range(0, len(items), size)):
        request = catalog_pb2.WriteItemsRequest(
            library_id=library_id, scan_id=scan_id, sequence=seq, items=items[start : start + size]
        )
        out.append(request.SerializeToString())
    return out


async def stream_batches(channel: object, payloads: list[bytes]) -> tuple[int, int, int]:
    method = channel.stream_stream(  # type: ignore[attr-defined]
        "/plexsync.v1.CatalogService/WriteItems",
        request_serializer=None,
        response_deserializer=catalog_pb2.WriteItemsResponse.FromString,
    )

    async def gen() -> AsyncIterator[bytes]:
        for payload in payloads:
            yield payload

    added = updated = unchanged = 0
    async for ack in method(gen()):
        added += ack.added
        updated += ack.updated
        unchanged += ack.unchanged
    return added, updated, unchanged


async def api_phases(
    address: str, token: str, pid: int, items: list[common_pb2.Item], size: int, database_url: str
) -> list[Result]:
    channel = service_channel(address, token)
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    section = catalog_pb2.LibrarySection(plex_key="1", name="Movies", kind=C.LIBRARY_KIND_MOVIES)
    reply = await stub.RegisterLibraries(
        catalog_pb2.RegisterLibrariesRequest(server_id=str(uuid.uuid4()), server_name="bench", sections=[section])
    )
    library_id = reply.libraries[0].id
    results = []
    for phase, expect in (("first ingest", "added"), ("unchanged re-send", "unchanged")):
        payloads = batches_bytes(library_id, items, size)
        catalog_proc, client_proc = psutil.Process(pid), psutil.Process()
        # The catalog's own worker processes (PLEXSYNC_CATALOG_INGEST_WORKERS) count as catalog CPU.
        workers = catalog_proc.children(recursive=True)
        pg_before = backend_cpu(database_url)
        before = (cpu_seconds([catalog_proc]), cpu_seconds(workers), 0.0, cpu_seconds([client_proc]))
        with PeakRss(pid) as rss:
            t0 = time.perf_counter()
            added, updated, unchanged = await stream_batches(channel, payloads)
            seconds = time.perf_counter() - t0
        pg_after = backend_cpu(database_url)
        pg_cpu = sum(v - pg_before.get(k, 0.0) for k, v in pg_after.items())
        after = (cpu_seconds([catalog_proc]), cpu_seconds(workers), pg_cpu, cpu_seconds([client_proc]))
        cpu = tuple((a - b) * 1e6 / len(items) for a, b in zip(after, before, strict=True))
        counts = {"added": added, "updated": updated, "unchanged": unchanged}
        if counts[expect] != len(items):
            raise SystemExit(f"{phase}: expected {len(items)} {expect}, got {counts}")
        results.append(Result(phase, len(items), seconds, rss.peak / 2**20, rss.peak_children / 2**20, cpu))
    await channel.close()
    return results


def orm_item(library_id: uuid.UUID, m: common_pb2.Item, people: dict[tuple[str, int], Person]) -> Item:
    """The same data as ORM objects (the way a straightforward ORM port would write it)."""

    def ts(t: Timestamp) -> object:
        return t.ToDatetime(tzinfo=__import__("datetime").UTC) if t.seconds else None

    item = Item(
        library_id=library_id, kind=m.kind, rating_key=m.rating_key, etag=m.etag, state=m.state,
        content_hash=hashlib.blake2b(m.SerializeToString(deterministic=True), digest_size=16).digest(),
        title=m.title, sort_title=m.sort_title, original_title=m.original_title, plot=m.plot, tagline=m.tagline,
        year=m.year, content_rating=m.content_rating, duration_ms=m.duration.ToMilliseconds(), rating=m.rating,
        audience_rating=m.audience_rating, plex_guid=m.plex_guid, plex_added_at=ts(m.plex_added_at),
        plex_updated_at=ts(m.plex_updated_at), search_title=m.title.casefold(),
        search_vector=search_vector(
            m.title.casefold(), " ".join(c.name for c in m.credits).casefold(), " ".join(m.genres).casefold()
        ),
        genres=list(m.genres), studios=list(m.studios), countries=list(m.countries),
        guids=[{"uri": g.uri, "provider": g.provider, "external_id": g.external_id} for g in m.guids],
        artwork=[{"kind": a.kind, "url": a.url, "source": a.source, "updated_at": a.updated_at.seconds or None}
                 for a in m.artwork],
    )  # fmt: skip
    credits = []
    for c in m.credits:
        person = people.get((c.name, c.plex_tag_id))
        if person is None:
            person = people[(c.name, c.plex_tag_id)] = Person(name=c.name, plex_tag_id=c.plex_tag_id)
        credits.append(
            Credit(role=c.role, person=person, position=c.order, character=c.character, thumb_url=c.thumb_url)
        )
    item.credits = credits
    versions = []
    for v in m.media:
        version = MediaVersion(plex_media_id=v.plex_media_id, duration_ms=v.duration.ToMilliseconds(),
                               bitrate=v.bitrate, width=v.width, height=v.height, aspect_ratio=v.aspect_ratio,
                               audio_channels=v.audio_channels, audio_codec=v.audio_codec, video_codec=v.video_codec,
                               video_resolution=v.video_resolution, container=v.container)  # fmt: skip
        parts = []
        for p in v.parts:
            part = MediaPart(plex_part_id=p.plex_part_id, plex_key=p.plex_key, plex_path=p.plex_path,
                             local_path=p.local_path, size_bytes=p.size_bytes, duration_ms=p.duration.ToMilliseconds(),
                             container=p.container, state=p.state)  # fmt: skip
            part.streams = [
                MediaStream(plex_stream_id=s.plex_stream_id, position=i, kind=s.kind, index=s.index, codec=s.codec,
                            language=s.language, language_code=s.language_code, is_default=s.is_default,
                            width=s.width, height=s.height, channels=s.channels, bitrate=s.bitrate)
                for i, s in enumerate(p.streams)
            ]  # fmt: skip
            parts.append(part)
        version.parts = parts
        versions.append(version)
    item.media = versions
    return item


def baseline_phases(database_url: str, items: list[common_pb2.Item], size: int) -> list[Result]:
    engine = create_engine(sqlalchemy_url(database_url), connect_args={"options": "-c search_path=catalog,public"})
    with engine.begin() as conn:
        source = conn.exec_driver_sql(
            "INSERT INTO media_sources (server_id) VALUES (%(s)s) RETURNING id", {"s": str(uuid.uuid4())}
        ).scalar_one()
        library_id = conn.exec_driver_sql(
            "INSERT INTO libraries (media_source_id, plex_key, kind) VALUES (%(s)s, '1', 1) RETURNING id", {"s": source}
        ).scalar_one()
    results = []
    people: dict[tuple[str, int], Person] = {}
    t0 = time.perf_counter()
    with Session(engine, expire_on_commit=False) as session:  # people already known (shared table)
        people.update({(p.name, p.plex_tag_id): p for p in session.scalars(select(Person))})
    for start in range(0, len(items), size):
        with Session(engine, expire_on_commit=False) as session:
            for m in items[start : start + size]:
                session.add(orm_item(library_id, m, people))
            session.commit()
    results.append(Result("baseline first ingest (ORM)", len(items), time.perf_counter() - t0, None))
    t0 = time.perf_counter()
    unchanged = 0
    for start in range(0, len(items), size):
        with Session(engine) as session:
            for m in items[start : start + size]:
                digest = hashlib.blake2b(m.SerializeToString(deterministic=True), digest_size=16).digest()
                row = session.scalars(
                    select(Item).where(Item.library_id == library_id, Item.rating_key == m.rating_key)
                ).one()
                unchanged += row.content_hash == digest
            session.commit()
    if unchanged != len(items):
        raise SystemExit(f"baseline re-send: {unchanged} of {len(items)} unchanged")
    results.append(Result("baseline re-send (ORM)", len(items), time.perf_counter() - t0, None))
    engine.dispose()
    return results


def median_results(runs: list[list[Result]]) -> list[Result]:
    out = []
    for phase_runs in zip(*runs, strict=True):
        seconds = statistics.median(r.seconds for r in phase_runs)
        rss = [r.rss_mb for r in phase_runs if r.rss_mb is not None]
        workers_rss = [r.workers_rss_mb for r in phase_runs if r.workers_rss_mb is not None]
        cpu = [r.cpu_us for r in phase_runs if r.cpu_us is not None]
        cpu_median = tuple(statistics.median(c[i] for c in cpu) for i in range(4)) if cpu else None
        out.append(
            Result(
                phase_runs[0].phase,
                phase_runs[0].items,
                seconds,
                max(rss) if rss else None,
                max(workers_rss) if workers_rss else None,
                cpu_median,
            )
        )
    return out


@contextmanager
def database(work: Path) -> Iterator[str]:
    """A fresh database on DATABASE_URL's server, or on an embedded PostgreSQL in `work`; dropped afterwards."""
    external = os.environ.get("DATABASE_URL", "")
    base = external or infra.start_postgres(work / "pg")[0]
    try:
        with fresh_database(base) as url:
            yield url
    finally:
        if not external:
            infra.stop_postgres(work / "pg")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000, help="movies to ingest through the API")
    parser.add_argument("--baseline-items", type=int, default=5_000, help="movies for the ORM baseline (0: skip)")
    parser.add_argument("--batch", type=int, default=1000, help="items per WriteItems request")
    parser.add_argument("--runs", type=int, default=0, help="repetitions (median); default 3 below 20k items, else 1")
    args = parser.parse_args()
    runs = args.runs or (3 if args.items < 20_000 else 1)
    load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    work = Path(tempfile.mkdtemp(prefix="bench-catalog-", dir=infra.DEV_DIR if infra.DEV_DIR.exists() else None))
    resources = ExitStack()
    database_url = resources.enter_context(database(work))
    settings = postgres_settings(libpq_url(database_url))
    token = secrets.token_urlsafe(18)
    child: ChildProcess | None = None
    try:
        print(f"building {args.items} movies ...", file=sys.stderr, flush=True)
        items = [build_movie(n) for n in range(1, args.items + 1)]
        port = infra.free_port()
        env = {
            "DATABASE_URL": database_url,
            "PLEXSYNC_SERVICE_TOKENS": f"bench@scanner+admin:{token}",
            "PLEXSYNC_SERVICE_TOKEN": token,
            "PLEXSYNC_LOG_LEVEL": "WARNING",
            "PLEXSYNC_GRPC_INSECURE": "true",
        }
        child = start_service("catalog", port, env, work / "logs")
        api_runs = []
        for run in range(runs):
            print(f"API run {run + 1}/{runs} ...", file=sys.stderr, flush=True)
            api_runs.append(asyncio.run(api_phases(child.address, token, child.pid, items, args.batch, database_url)))
        results = median_results(api_runs)
        baseline: list[Result] = []
        if args.baseline_items:
            base_items = items[: args.baseline_items]
            base_runs = []
            for run in range(runs if args.baseline_items <= 5000 else 1):
                print(f"ORM baseline run {run + 1} ...", file=sys.stderr, flush=True)
                base_runs.append(baseline_phases(database_url, base_items, args.batch))
            baseline = median_results(base_runs)
    finally:
        if child is not None:
            child.stop()
        resources.close()
    shutil.rmtree(work, ignore_errors=True)  # kept (with the catalog log) only when the run failed
    print()
    print(f"catalog ingest: {args.items} movies (10 credits, 3 genres, 3 guids, 2 files x 4 streams), "
          f"batches of {args.batch}, median of {runs} run(s), {os.cpu_count()} CPUs, "
          f"load average {load_before:.2f} before / {os.getloadavg()[0]:.2f} after")  # fmt: skip
    print(f"PostgreSQL: {settings} (embedded: plexsync.devstack.infra.POSTGRES_SETTINGS)")
    header = (
        f"| {'phase':<28} | {'items':>7} | {'seconds':>8} | {'items/s':>9} | {'peak RSS MB':>11} "
        f"| {'workers MB':>10} | {'vs ORM':>7} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for i, r in enumerate([*results, *baseline]):
        ratio = ""
        if i < len(results) and len(baseline) > i:
            ratio = f"{r.rate / baseline[i].rate:.1f}x"
        rss = f"{r.rss_mb:.0f}" if r.rss_mb is not None else "-"
        workers = f"{r.workers_rss_mb:.0f}" if r.workers_rss_mb is not None else "-"
        print(
            f"| {r.phase:<28} | {r.items:>7} | {r.seconds:>8.2f} | {r.rate:>9,.0f} | {rss:>11} | {workers:>10} "
            f"| {ratio:>7} |"
        )
    print()
    print("CPU per item (microseconds): catalog main process / its ingest workers / PostgreSQL backends / client")
    for r in results:
        if r.cpu_us:
            print(f"  {r.phase:<20} " + " / ".join(f"{v:7.0f}" for v in r.cpu_us))
    targets = [(results[0], 5000), (results[1], 20000)]
    for r, target in targets:
        print(f"{r.phase}: {r.rate:,.0f} items/s (target {target:,}) {'OK' if r.rate >= target else 'BELOW TARGET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
