"""The pieces of TestPaths that are pure: which rule maps a path, and how a sample spreads over a library."""

from __future__ import annotations

import pytest
from plexsync.scanner.diagnostics import sample_offsets
from plexsync.scanner.paths import PathMapper


def test_rule_for_names_the_rule_map_applies() -> None:
    mapper = PathMapper([("/data", "/mnt/all"), ("/data/tv", "/mnt/tv"), ("D:\\Media", "/srv/media")])
    cases = {
        "/data/tv/Show/S01E01.mkv": ("/data/tv", "/mnt/tv"),  # the longest prefix wins
        "/data/tv2/x.mkv": ("/data", "/mnt/all"),  # only on a path-component boundary
        "d:/media/Film.mkv": ("D:\\Media", "/srv/media"),  # Windows paths: any case, either separator
        "/other/x.mkv": None,
        "": None,
    }
    for path, rule in cases.items():
        assert mapper.rule_for(path) == rule, path
        if rule is not None:
            assert mapper.map(path).startswith(rule[1])
    assert PathMapper().rule_for("/data/x") is None


@pytest.mark.parametrize(
    ("total", "size", "expected"),
    [(0, 10, []), (3, 10, [0, 1, 2]), (10, 10, list(range(10))), (100, 4, [0, 25, 50, 75]), (7, 3, [0, 2, 4])],
)
def test_sample_offsets_spread_over_the_library(total: int, size: int, expected: list[int]) -> None:
    assert sample_offsets(total, size) == expected
