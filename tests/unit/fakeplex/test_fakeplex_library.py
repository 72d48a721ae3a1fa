"""The generated library: deterministic, realistic, fast."""

from __future__ import annotations

import time

from plexsync.fakeplex import Library, LibrarySpec, SectionSpec


def test_same_seed_same_library() -> None:
    spec = LibrarySpec.from_sizes(movies=30, shows=3, seasons=2, episodes=4, other_videos=3, seed=42)
    assert list(Library(spec).items()) == list(Library(spec).items())


def test_different_seed_differs() -> None:
    a = Library(LibrarySpec.from_sizes(movies=10, seed=1))
    b = Library(LibrarySpec.from_sizes(movies=10, seed=2))
    assert [i["title"] for i in a.items()] != [i["title"] for i in b.items()]


def test_counts_and_sections() -> None:
    lib = Library(LibrarySpec.from_sizes(movies=25, shows=3, seasons=2, episodes=4, other_videos=6))
    counts = lib.counts()
    assert (counts["movie"], counts["show"], counts["season"], counts["episode"]) == (31, 3, 6, 24)
    assert [s.kind for s in lib.sections.values()] == ["movie", "show", "other"]
    assert lib.sections[3].agent == "com.plexapp.agents.none"
    assert counts["collection"] >= 2


def test_metadata_is_realistic() -> None:
    lib = Library(LibrarySpec.from_sizes(movies=300, shows=5, seasons=2, episodes=5, seed=3))
    movies = [lib.render(rk, include_chapters=True) for rk in lib.list_keys(1)]
    titles = "".join(m["title"] for m in movies)
    assert any(ord(ch) > 0x3000 for ch in titles), "CJK titles"
    assert any(ch in titles for ch in "éüøñ"), "accented titles"
    assert any(len(m["Media"]) > 1 for m in movies), "several Media versions"
    assert any(len(md["Part"]) > 1 for m in movies for md in m["Media"]), "several Parts"
    assert any("tagline" not in m for m in movies) and any("tagline" in m for m in movies)
    assert any("Chapter" in m for m in movies)
    m = movies[0]
    for key in ("ratingKey", "key", "guid", "title", "addedAt", "updatedAt", "Genre", "Role", "Guid"):
        assert key in m
    stream_types = {s["streamType"] for md in m["Media"] for p in md["Part"] for s in p["Stream"]}
    assert {1, 2} <= stream_types
    part = m["Media"][0]["Part"][0]
    assert part["file"].startswith("/data/movies/") and part["size"] > 0
    assert all(g["id"].split("://")[0] in ("imdb", "tmdb", "tvdb") for g in m["Guid"])
    shows = [lib.render(rk) for rk in lib.list_keys(2)]
    assert any("Network" in s for s in shows)
    ep = lib.render(lib.list_keys(2, 4)[0])
    assert ep["grandparentTitle"] == shows[0]["title"] or ep["grandparentRatingKey"] == shows[0]["ratingKey"]
    other = lib.render(lib.list_keys(3)[0])
    assert other["guid"].startswith("local://") and "Guid" not in other


def test_library_spec_json() -> None:
    spec = LibrarySpec.from_json(
        '{"seed": 5, "sections": [{"kind": "movie", "title": "Films", "count": 3, "collections": 1},'
        ' {"kind": "show", "title": "Anime", "count": 1, "seasons": 1, "episodes": 2}]}'
    )
    assert spec.sections[0] == SectionSpec("movie", "Films", count=3, collections=1)
    lib = Library(spec)
    assert lib.counts()["episode"] == 2 and lib.sections[2].title == "Anime"


def test_large_library_builds_fast() -> None:
    t0 = time.perf_counter()
    lib = Library(LibrarySpec.from_sizes(movies=20_000, shows=100, seasons=5, episodes=20, other_videos=0))
    assert time.perf_counter() - t0 < 6.0
    assert lib.counts()["movie"] == 20_000 and lib.counts()["episode"] == 10_000
    assert len(lib.list_keys(2, 4)) == 10_000
