"""PathMapper, file states and ETags, each on its own."""

from __future__ import annotations

from pathlib import Path

from plexsync.scanner.etag import Rollup, item_etag
from plexsync.scanner.paths import NORMAL, REMOTE_ONLY, UNAVAILABLE, FileStates, PathMapper, item_state
from plexsync.scanner.plex_models import PlexMedia, PlexMetadata, PlexPart


def test_longest_prefix_wins_on_component_boundaries() -> None:
    m = PathMapper([("/data", "/mnt/all"), ("/data/movies", "/mnt/movies"), ("/data/tv/", "/mnt/tv")])
    assert m.map("/data/movies/A (2000)/a.mkv") == "/mnt/movies/A (2000)/a.mkv"
    assert m.map("/data/tv/Show/S01/e.mkv") == "/mnt/tv/Show/S01/e.mkv"
    assert m.map("/data/movies2/x.mkv") == "/mnt/all/movies2/x.mkv"
    assert m.map("/other/x.mkv") == "/other/x.mkv"
    assert m.map("/data/movies") == "/mnt/movies"


def test_windows_paths_and_separators() -> None:
    m = PathMapper([("D:\\Media\\Movies", "/mnt/movies"), ("/srv/tv", "T:\\TV")])
    assert m.map("d:\\Media\\Movies\\A\\a.mkv") == "/mnt/movies/A/a.mkv"
    assert m.map("D:/Media/Movies/A/a.mkv") == "/mnt/movies/A/a.mkv"
    assert m.map("D:\\media\\movies\\B\\b.mkv") == "/mnt/movies/B/b.mkv"
    assert m.map("/srv/tv/Show/e.mkv") == "T:\\TV\\Show\\e.mkv"
    assert m.map("E:\\Media\\Movies\\x.mkv") == "E:\\Media\\Movies\\x.mkv"
    assert PathMapper([("/", "/mnt/root/")]).map("/a/b.mkv") == "/mnt/root/a/b.mkv"
    assert PathMapper().map("/a") == "/a"


def test_file_states(tmp_path: Path) -> None:
    (tmp_path / "here.mkv").write_bytes(b"x")
    mapper = PathMapper([("/plex", str(tmp_path))])
    assert FileStates(mapper, remote_streaming=False).resolve("/plex/here.mkv") == (str(tmp_path / "here.mkv"), NORMAL)
    assert FileStates(mapper, remote_streaming=True).resolve("/plex/gone.mkv")[1] == REMOTE_ONLY
    assert FileStates(mapper, remote_streaming=False).resolve("/plex/gone.mkv")[1] == UNAVAILABLE
    assert item_state([[UNAVAILABLE], [NORMAL, NORMAL]]) == NORMAL
    assert item_state([[NORMAL, UNAVAILABLE]]) == UNAVAILABLE
    assert item_state([]) == UNAVAILABLE


def _movie(**kw: object) -> PlexMetadata:
    part = PlexPart(7, "/library/parts/7/1/file.mkv", "/m/a.mkv", 100, 1000, "mkv", "high", "", [])
    media = PlexMedia(3, 1000, 1, 1, 1, 1.0, 2, "aac", "h264", "1080", "mkv", "24p", "high", [part])
    meta = PlexMetadata(rating_key="1", key="/library/metadata/1", type="movie", title="A", updated_at=5, media=[media])
    for k, v in kw.items():
        setattr(meta, k, v)
    return meta


def test_etag_changes_with_what_plex_reports() -> None:
    base = item_etag(_movie())
    assert base == item_etag(_movie())
    assert base != item_etag(_movie(updated_at=6))
    assert base != item_etag(_movie(title="B"))
    assert base != item_etag(_movie(parent_rating_key="9"))
    changed_file = _movie()
    changed_file.media[0].parts[0].file = "/m/b.mkv"
    assert base != item_etag(changed_file)
    changed_size = _movie()
    changed_size.media[0].parts[0].size = 101
    assert base != item_etag(changed_size)
    assert base != item_etag(_movie(), local=["7|/x|1"])


def test_rollup_is_order_independent_and_sensitive() -> None:
    a, b = Rollup(), Rollup()
    for rk, e in [("1", "x"), ("2", "y"), ("3", "z")]:
        a.add(rk, e)
    for rk, e in [("3", "z"), ("1", "x"), ("2", "y")]:
        b.add(rk, e)
    assert a.digest() == b.digest()
    c = Rollup()
    c.add("1", "x")
    c.add("2", "y")
    assert c.digest() != a.digest()
    assert item_etag(_movie(), children=a) != item_etag(_movie(), children=c)
