"""Pure logic of the catalog: hashing, validation and flattening of items, SQL builders, path rules."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from plexsync.catalog import ingest
from plexsync.catalog.repository import _is_absolute, _normalise_path
from plexsync.catalog.store import delete_missing_sql, insert_sql
from plexsync.catalog.writer import ITEM_COLS, lock_key
from plexsync.common.errors import InvalidArgumentError
from plexsync.v1 import catalog_pb2, common_pb2

from tests.integration.catalog.helpers import C, movie

LIB = uuid.uuid4()


def request(*items: common_pb2.Item, **kw: object) -> catalog_pb2.WriteItemsRequest:
    return catalog_pb2.WriteItemsRequest(library_id=str(LIB), items=list(items), **kw)  # type: ignore[arg-type]


def fields(exc: pytest.ExceptionInfo[InvalidArgumentError]) -> list[str]:
    return [v.field for v in exc.value.violations]


def test_uuid7_is_time_ordered_version_7() -> None:
    ids = [ingest.uuid7() for _ in range(50)]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    assert [u.int >> 80 for u in ids] == sorted(u.int >> 80 for u in ids)


def test_uuid7_texts_are_version_7_uuids_of_now() -> None:
    before = time.time_ns() // 1_000_000
    texts = ingest.uuid7_texts(500)
    ids = [uuid.UUID(t) for t in texts]
    assert [str(u) for u in ids] == texts and len(set(texts)) == 500
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    assert all(before <= u.int >> 80 <= time.time_ns() // 1_000_000 for u in ids)
    assert ingest.uuid7_texts(0) == []


def test_framed_items_parse_as_the_request_items() -> None:
    """The worker gets the items' own serialized bytes framed as a request; it must parse to the same items,
    whatever the length prefix (1, 2 or 3 varint bytes)."""
    small, mid, big = movie("1"), movie("2", plot="p" * 200), movie("3", plot="p" * 20_000)
    incoming = ingest.prepare_batch(request(small, mid, big), 10)
    framed = catalog_pb2.WriteItemsRequest.FromString(ingest.frame_items([inc.wire for inc in incoming]))
    assert list(framed.items) == [inc.item for inc in incoming] and not framed.library_id
    assert all(inc.item.etag for inc in incoming)  # the etag travels to the worker, outside the hash
    assert ingest.frame_items([]) == b""


def test_hash_ignores_output_fields_state_and_etag() -> None:
    a = movie("1")
    b = movie("1", id=str(uuid.uuid4()), library_id=str(LIB), state=C.ITEM_STATE_REMOTE_ONLY)
    b.update_time.seconds = 5
    [ia], [ib] = ingest.prepare_batch(request(a), 10), ingest.prepare_batch(request(b), 10)
    assert ia.digest == ib.digest and (ia.state, ib.state) == (C.ITEM_STATE_NORMAL, C.ITEM_STATE_REMOTE_ONLY)
    c = movie("1")
    c.media[0].parts[0].streams[0].codec = "av1"
    assert ingest.prepare_batch(request(c), 10)[0].digest != ia.digest
    [retagged] = ingest.prepare_batch(request(movie("1", etag="realtime:1")), 10)
    assert retagged.digest == ia.digest and retagged.item.etag == "realtime:1"


def test_prepare_batch_checks_keys_states_and_size() -> None:
    with pytest.raises(InvalidArgumentError) as err:
        ingest.prepare_batch(request(movie("1"), movie("1"), movie(""), movie("2", state=4)), 10)
    assert fields(err) == ["items[1].rating_key", "items[2].rating_key", "items[3].state"]
    with pytest.raises(InvalidArgumentError) as err:
        ingest.prepare_batch(request(movie("1"), movie("2")), 1)
    assert fields(err) == ["items"]
    with pytest.raises(InvalidArgumentError) as err:
        ingest.prepare_batch(request(movie("1", library_id=str(uuid.uuid4()))), 10)
    assert fields(err) == ["items[0].library_id"]


def flatten(*items: common_pb2.Item) -> ingest.Rows:
    incoming = ingest.prepare_batch(request(*items), 100)
    return ingest.flatten_items([(inc, ingest.uuid7()) for inc in incoming], LIB)


def test_flatten_dedupes_repeated_tags_credits_and_guids() -> None:
    item = movie("1", genres=["Drama", "Drama", "Comedy"], credits=2)
    item.credits.add().CopyFrom(item.credits[1])
    item.guids.add().CopyFrom(item.guids[0])
    item.artwork.add().CopyFrom(item.artwork[0])
    rows = flatten(item)
    [row] = rows.items
    value = dict(zip((name for name, _ in ITEM_COLS), row, strict=True))
    assert value["genres"] == '{"Drama","Comedy"}' and value["studios"] == '{"Warner"}' and value["networks"] == "{}"
    assert [g["uri"] for g in json.loads(value["guids"])] == [g.uri for g in item.guids[:2]]
    assert [(a["kind"], a["url"]) for a in json.loads(value["artwork"])] == [(a.kind, a.url) for a in item.artwork[:2]]
    assert len(rows.credits) == 2
    assert len(rows.streams) == 3 and len(rows.parts) == 1 and len(rows.chapters) == 1
    assert value["library_id"] == LIB and value["search_title"] == "movie 1"
    assert value["search_vector"] == ("'movie':1A '1':2A 'person':3B '0':4B 'person':5B '1':6B 'drama':7C 'comedy':8C")


def test_search_words_and_vector_literal() -> None:
    assert ingest.search_words("amélie 千と千尋の神隠し") == ["amélie", "千と千尋の神隠し"]
    assert ingest.search_words("spider-man: no_way  home") == ["spider", "man", "no_way", "home"]
    assert ingest.search_words('o\'brien \\ "x"') == ["o", "brien", "x"]  # no quote or backslash survives
    assert ingest.search_vector("", "", "") == ""
    assert ingest.search_vector("heat", "al pacino", "") == "'heat':1A 'al':2B 'pacino':3B"
    long_word = "é" * 1100  # 2,200 bytes: beyond PostgreSQL's lexeme limit, skipped as to_tsvector does
    assert ingest.search_vector(f"{long_word} ok", "", "drama") == "'ok':1A 'drama':2C"


def test_value_list_literals_escape_quotes_backslashes_and_keep_time() -> None:
    assert ingest.text_array([]) == "{}"
    assert ingest.text_array(['Say "hi"', "back\\slash", "a,b {c}"]) == '{"Say \\"hi\\"","back\\\\slash","a,b {c}"}'
    entry = ingest.artwork_entry(1, "/t", "plex", Timestamp(seconds=5, nanos=250))
    assert entry == {"kind": 1, "url": "/t", "source": "plex", "updated_at": 5, "updated_nanos": 250}
    assert ingest.artwork_entry(1, "/t", "", Timestamp())["updated_at"] is None


def test_flatten_names_every_bad_field() -> None:
    bad = movie("9", year=-1, title="x" * 2000)
    bad.credits[0].role = common_pb2.CreditRole.ValueType(42)
    bad.guids[0].uri = ""
    bad.media[0].parts[0].streams[1].plex_stream_id = bad.media[0].parts[0].streams[0].plex_stream_id
    bad.media[0].parts[0].size_bytes = -10
    bad.media[0].bitrate = -1
    bad.chapters.add(index=0)
    bad.labels.append("")
    with pytest.raises(InvalidArgumentError) as err:
        flatten(movie("8"), bad)
    assert set(fields(err)) == {
        "items[1].title",
        "items[1].sort_title",
        "items[1].year",
        "items[1].labels[1]",
        "items[1].credits[0].role",
        "items[1].guids[0].uri",
        "items[1].media[0].bitrate",
        "items[1].media[0].parts[0].size_bytes",
        "items[1].media[0].parts[0].streams[1].plex_stream_id",
        "items[1].chapters[1].index",
    }


def test_collections_are_validated() -> None:
    req = request(collections=[common_pb2.Collection(rating_key="c", member_rating_keys=["1", ""]),
                               common_pb2.Collection(rating_key="c")])  # fmt: skip
    with pytest.raises(InvalidArgumentError) as err:
        ingest.prepare_collections(req)
    assert fields(err) == ["collections[0].member_rating_keys[1]", "collections[1].rating_key"]


@pytest.mark.parametrize(
    ("path", "absolute"),
    [("/media", True), ("C:\\Media", True), ("d:/films", True), ("\\\\nas\\share", True), ("media", False),
     ("C:", False), ("./x", False)],
)  # fmt: skip
def test_absolute_paths(path: str, absolute: bool) -> None:
    assert _is_absolute(path) is absolute


def test_path_normalisation_for_duplicates() -> None:
    assert _normalise_path("/data/movies/") == _normalise_path("/data/movies")
    assert _normalise_path("C:\\Media\\") == _normalise_path("c:/media")
    assert _normalise_path("/Data") != _normalise_path("/data")  # POSIX paths stay case-sensitive
    assert _normalise_path("/") == "/"


def test_sql_builders() -> None:
    sql = insert_sql("t", [("item_id", "uuid"), ("k", "text"), ("v", "int4")], conflict=["item_id", "k"])
    assert "unnest(%b::uuid[], %b::text[], %b::int4[])" in sql
    assert 'DO UPDATE SET "v" = EXCLUDED."v" WHERE (t."v") IS DISTINCT FROM (EXCLUDED."v")' in sql
    delete = delete_missing_sql("t", [("item_id", "uuid"), ("k", "text")])
    assert delete.startswith("DELETE FROM t t WHERE t.item_id = ANY(%b::uuid[]) AND NOT EXISTS")
    lib = uuid.uuid4()
    assert lock_key(lib) == lock_key(uuid.UUID(str(lib))) and -(2**63) <= lock_key(lib) < 2**63
