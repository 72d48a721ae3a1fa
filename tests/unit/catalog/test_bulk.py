"""The fast flattening path must build exactly the rows, and report exactly the violations, of the exact path."""

from __future__ import annotations

import math
import pickle
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from plexsync.catalog import bulk, ingest
from plexsync.catalog.writer import COPY_TABLES, ITEM_COLS
from plexsync.common.errors import InvalidArgumentError
from plexsync.v1 import catalog_pb2, common_pb2

from tests.integration.catalog.helpers import C, movie

LIB = uuid.uuid4()


def batch(*items: common_pb2.Item) -> list[tuple[ingest.Incoming, uuid.UUID]]:
    request = catalog_pb2.WriteItemsRequest(library_id=str(LIB), items=list(items))
    return [(inc, ingest.uuid7()) for inc in ingest.prepare_batch(request, 100)]


def outcome(fn: Callable[..., Any], b: list[tuple[ingest.Incoming, uuid.UUID]]) -> Any:
    try:
        return fn(b, LIB)
    except InvalidArgumentError as exc:
        return [(v.field, v.description) for v in exc.violations]


def test_same_rows_as_the_exact_path() -> None:
    items = [movie(str(n), credits=10, versions=2, genres=("Drama", "Action", "Comedy")) for n in range(1, 40)]
    dup = movie("70")
    dup.credits.append(dup.credits[1])  # Plex repeats people; the first credit wins in both paths
    dup.guids.add(uri=dup.guids[0].uri, provider="other")
    dup.artwork.append(dup.artwork[0])
    dup.genres.append("Drama")
    show = common_pb2.Item(kind=C.ITEM_KIND_SEASON, rating_key="80", parent_rating_key="79", index=2, leaf_count=3)
    plot = movie("90", plot="Line one\nline\ttwo \\ three\r")
    b = batch(*items, dup, show, plot)
    fast = bulk.flatten_fast(b, LIB)
    assert fast is not None and bulk.columns_ok(fast)
    assert fast == ingest.flatten_items(b, LIB)


def mutations() -> list[tuple[str, Callable[[common_pb2.Item], None]]]:
    def stream(m: common_pb2.Item) -> Any:
        return m.media[0].parts[0].streams[0]

    return [
        ("negative size", lambda m: setattr(m.media[0].parts[0], "size_bytes", -1)),
        ("NaN rating", lambda m: setattr(m, "rating", math.nan)),
        ("negative aspect", lambda m: setattr(m.media[0], "aspect_ratio", -1.0)),
        ("long codec", lambda m: setattr(stream(m), "codec", "x" * 300)),
        ("NUL in title", lambda m: setattr(m, "title", "a\x00b")),
        ("NUL in character", lambda m: setattr(m.credits[1], "character", "\x00")),
        ("bad stream kind", lambda m: setattr(stream(m), "kind", 99)),
        ("dup stream", lambda m: setattr(m.media[0].parts[0].streams[1], "plex_stream_id", stream(m).plex_stream_id)),
        ("dup media", lambda m: setattr(m.media[1], "plex_media_id", m.media[0].plex_media_id)),
        ("dup chapter", lambda m: m.chapters.add(index=0, title="again")),
        ("empty credit name", lambda m: setattr(m.credits[0], "name", "")),
        ("bad role", lambda m: setattr(m.credits[0], "role", 0)),
        ("bad year", lambda m: setattr(m, "year", 42)),
        ("bad date", lambda m: setattr(m, "release_date", "yesterday")),
        ("own parent", lambda m: setattr(m, "parent_rating_key", m.rating_key)),
        ("empty genre", lambda m: m.genres.append("")),
        ("bad dup credit", lambda m: m.credits.append(common_pb2.Credit(
            role=m.credits[0].role, name=m.credits[0].name, plex_tag_id=m.credits[0].plex_tag_id, order=-1))),
        ("bad dup guid", lambda m: m.guids.add(uri=m.guids[0].uri, provider="p" * 300)),
        ("long derived provider", lambda m: m.guids.add(uri="x" * 300 + "://1")),  # accepted by both paths
        ("bad part state", lambda m: setattr(m.media[0].parts[0], "state", 4)),
        ("negative chapter", lambda m: m.chapters[0].start.FromSeconds(-1)),
        ("NUL in person", lambda m: setattr(m.credits[2], "name", "Zo\x00e")),
        ("NUL in codec", lambda m: setattr(stream(m), "codec", "h\x00")),
        ("NUL in guid", lambda m: setattr(m.guids[0], "uri", "imdb://\x00")),
        ("NUL in genre", lambda m: m.genres.append("Dra\x00ma")),
        ("NUL in path", lambda m: setattr(m.media[0].parts[0], "plex_path", "/a\x00")),
        ("NUL in artwork source", lambda m: setattr(m.artwork[0], "source", "pl\x00ex")),
        ("NUL in guid provider", lambda m: setattr(m.guids[0], "provider", "im\x00db")),
        ("bad artwork kind", lambda m: setattr(m.artwork[1], "kind", 0)),
        ("empty artwork url", lambda m: setattr(m.artwork[0], "url", "")),
        ("long artwork source", lambda m: setattr(m.artwork[0], "source", "s" * 300)),
        ("long studio", lambda m: m.studios.append("s" * 300)),
        ("empty network", lambda m: m.networks.extend(["HBO", ""])),
        ("quoted label", lambda m: m.labels.append('say "\\hi"')),  # accepted by both paths, escaped
        ("escaped artwork url", lambda m: setattr(m.artwork[0], "url", "/a\tb\\c\\u0000")),  # text "\\u0000", not a NUL
    ]  # fmt: skip


def test_item_column_positions_match_the_writer() -> None:
    names = [name for name, _ in ITEM_COLS]
    assert len(names) == bulk.ITEM_WIDTH
    assert names[bulk.ITEM_TAG_LISTS] == ["genres", "studios", "labels", "countries", "networks"]
    assert (names[bulk.ITEM_GUIDS], names[bulk.ITEM_ARTWORK]) == ("guids", "artwork")


@pytest.mark.parametrize("name,mutate", mutations(), ids=[n for n, _ in mutations()])
def test_same_verdict_as_the_exact_path(name: str, mutate: Callable[[common_pb2.Item], None]) -> None:
    bad = movie("5", versions=2)
    mutate(bad)
    b = batch(movie("1"), bad)
    assert outcome(bulk.flatten_checked, b) == outcome(ingest.flatten_items, b)


@pytest.mark.parametrize("name,mutate", mutations(), ids=[n for n, _ in mutations()])
def test_worker_refuses_what_the_exact_path_rejects(name: str, mutate: Callable[[common_pb2.Item], None]) -> None:
    """The worker checks NUL characters in its COPY payloads rather than in the columns: same verdicts."""
    bad = movie("5", versions=2)
    mutate(bad)
    b = batch(movie("1"), bad)
    framed = ingest.frame_items([inc.wire for inc, _ in b])
    states, digests = [inc.state for inc, _ in b], [inc.digest for inc, _ in b]
    payloads = bulk.speculate([framed], [str(i) for _, i in b], states, digests, LIB, COPY_TABLES)
    exact = outcome(ingest.flatten_items, b)
    if isinstance(exact, list):
        assert payloads is None
    else:  # or None where a column check is stricter: the writer then takes the exact path in-process
        assert payloads in (None, bulk.copy_payloads(exact, COPY_TABLES))


def test_rows_needing_escapes_leave_the_template_path() -> None:
    """Child rows are formatted with a template unless a value needs a COPY escape; then column by column."""
    item = movie("1", versions=2)
    item.media[0].parts[0].streams[0].title = "tab\there"
    item.media[1].parts[0].plex_path = "C:\\Movies\\x.mkv"
    item.credits[1].character = "new\nline"
    payloads = bulk.copy_payloads(bulk.flatten_checked(batch(item, movie("2")), LIB), COPY_TABLES)
    streams = payloads.tables["media_streams"].decode().splitlines()
    assert all(line.count("\t") == 21 for line in streams) and "tab\\there" in streams[0]
    assert "C:\\\\Movies" in payloads.tables["media_parts"].decode()
    assert "\tnew\\nline\t" in payloads.credit_prefixes[1]
    plain = bulk.copy_payloads(bulk.flatten_checked(batch(movie("2")), LIB), COPY_TABLES)
    assert plain.tables["media_streams"].decode().splitlines()[0].split("\t")[12] == "True"  # bool, as PG reads it


def test_copy_text_escapes_and_converts() -> None:
    b = batch(movie("1", plot="a\\b\tc\nd\re"), common_pb2.Item(kind=C.ITEM_KIND_MOVIE, rating_key="2"))
    rows = bulk.flatten_checked(b, LIB)
    lines = bulk.copy_text(rows.items, [t for _, t in ITEM_COLS]).splitlines()
    assert len(lines) == 2
    first = lines[0].split("\t")
    assert len(first) == len(ITEM_COLS)
    assert first[ITEM_COLS.index(("plot", "text"))] == "a\\\\b\\tc\\nd\\re"
    assert first[ITEM_COLS.index(("content_hash", "bytea"))] == "\\\\x" + rows.items[0][7].hex()
    assert first[ITEM_COLS.index(("release_date", "date"))] == "1999-03-31"
    second = lines[1].split("\t")
    assert second[ITEM_COLS.index(("release_date", "date"))] == "\\N"
    assert second[ITEM_COLS.index(("plex_added_at", "timestamptz"))] == "\\N"


def test_speculate_payloads_and_credit_lines() -> None:
    items = [movie("1"), movie("2")]
    b = batch(*items)
    request = catalog_pb2.WriteItemsRequest(library_id=str(LIB), items=items)
    ids = [str(i) for _, i in b]  # the worker gets item ids as text
    states, digests = [inc.state for inc, _ in b], [inc.digest for inc, _ in b]
    payloads = bulk.speculate([request.SerializeToString()], ids, states, digests, LIB, COPY_TABLES)
    assert payloads is not None
    # In pieces of one item each: the same payloads, the people of both pieces numbered once.
    pieces = [ingest.frame_items([inc.wire]) for inc, _ in b]
    assert bulk.speculate(pieces, ids, states, digests, LIB, COPY_TABLES) == payloads
    with pytest.raises(ValueError):
        bulk.speculate(pieces[:1], ids, states, digests, LIB, COPY_TABLES)
    assert payloads == bulk.copy_payloads(bulk.flatten_checked(b, LIB), COPY_TABLES)  # same as in-process
    assert payloads.tables["items"].count(b"\n") == 2 and "credits" not in payloads.tables
    assert len(payloads.credit_prefixes) == 6 and len(payloads.people) == 3  # the same 3 people in both movies
    lines = bulk.credit_lines(payloads.credit_prefixes, [100 + k for k in payloads.credit_people]).decode()
    assert lines.splitlines()[0] == f"{ids[0]}\t{C.CREDIT_ROLE_DIRECTOR}\t0\t\t/people/0.jpg\t100"
    bad = movie("3", year=5)
    request = catalog_pb2.WriteItemsRequest(library_id=str(LIB), items=[bad])
    [(inc, item_id)] = batch(bad)
    assert bulk.speculate([request.SerializeToString()], [str(item_id)], [1], [inc.digest], LIB, COPY_TABLES) is None


@pytest.fixture
def worker_people() -> Iterator[dict[tuple[str, int], int]]:
    """The worker's known people, emptied around the test (it is process-wide state of a worker)."""
    bulk._KNOWN_PEOPLE.clear()
    yield bulk._KNOWN_PEOPLE
    bulk._KNOWN_PEOPLE.clear()


def test_worker_completes_credits_of_people_it_was_sent(worker_people: dict[tuple[str, int], int]) -> None:
    """Credits of people the writer sent are complete lines; the rest are left to the writer, and together they
    are the lines the writer would have made itself."""
    items = [movie("1"), movie("2", credits=5)]
    b = batch(*items)
    ids = [str(i) for _, i in b]
    args = ([ingest.frame_items([inc.wire for inc, _ in b])], ids, [i.state for i, _ in b], [i.digest for i, _ in b])
    alone = bulk.speculate(*args, LIB, COPY_TABLES)
    assert alone is not None and not alone.credit_lines
    person_id = {key: 100 + n for n, key in enumerate(alone.people)}

    def lines(p: bulk.Payloads) -> set[str]:
        by_index = [person_id[key] for key in p.people]
        done = p.credit_lines + bulk.credit_lines(p.credit_prefixes, map(by_index.__getitem__, p.credit_people))
        return set(done.decode().splitlines())

    known = [(name, tag, person_id[(name, tag)]) for name, tag in alone.people[:2]]
    some = bulk.speculate(*args, LIB, COPY_TABLES, known)
    assert some is not None and some.credit_lines and set(some.people) == set(alone.people[2:])
    assert lines(some) == lines(alone) and len(lines(alone)) == len(alone.credit_prefixes)
    rest = [(name, tag, person_id[(name, tag)]) for name, tag in alone.people[2:]]
    every = bulk.speculate(*args, LIB, COPY_TABLES, rest)  # the worker remembers the first two
    assert every is not None and not every.people and not every.credit_prefixes and lines(every) == lines(alone)
    assert pickle.loads(pickle.dumps(some)) == some
    assert worker_people == person_id


def test_payloads_cross_to_the_worker_unchanged() -> None:
    """Payloads are pickled as a few joined strings and arrays; they must come back equal, escapes and all."""
    item = movie("1")
    item.credits[1].character = "Line one\nline two\ttabbed \\ slashed"
    item.credits[2].name = "Zoë O'Brien"
    payloads = bulk.copy_payloads(bulk.flatten_checked(batch(item, movie("2")), LIB), COPY_TABLES)
    assert len(payloads.credit_prefixes) == 6 and len(payloads.people) == 4
    assert pickle.loads(pickle.dumps(payloads)) == payloads
    assert pickle.loads(pickle.dumps(bulk.Payloads())) == bulk.Payloads()
