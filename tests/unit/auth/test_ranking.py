"""Connection ranking: local, then remote HTTPS, then remote HTTP, then relay; latency breaks ties."""

from __future__ import annotations

import pytest
from plexsync.auth.ranking import ConnectionKind, Probe, choose, kind_for_address, rank_key, ranked

L, R, Y = ConnectionKind.LOCAL, ConnectionKind.REMOTE, ConnectionKind.RELAY


def p(uri: str, kind: ConnectionKind, *, proto: str = "http", ok: bool = True, ms: float | None = 10.0) -> Probe:
    return Probe(uri, kind, proto, ok, ms if ok else None, "" if ok else "refused")


def test_local_beats_faster_remote_and_relay() -> None:
    probes = [p("relay", Y, proto="https", ms=1), p("remote", R, proto="https", ms=2), p("local", L, ms=50)]
    assert choose(probes) == probes[2]


def test_remote_https_beats_remote_http_even_when_slower() -> None:
    probes = [p("http", R, ms=5), p("https", R, proto="https", ms=80)]
    assert choose(probes) == probes[1]


def test_remote_http_beats_relay() -> None:
    assert choose([p("relay", Y, proto="https", ms=1), p("remote", R, ms=90)]) == p("remote", R, ms=90)


def test_latency_breaks_ties_within_a_kind() -> None:
    probes = [p("slow", L, ms=30), p("fast", L, ms=3), p("mid", L, ms=10)]
    assert choose(probes) is not None and choose(probes).uri == "fast"  # type: ignore[union-attr]
    assert [x.uri for x in ranked(probes)] == ["fast", "mid", "slow"]


def test_unreachable_never_wins_and_none_when_nothing_answers() -> None:
    probes = [p("local", L, ok=False), p("relay", Y)]
    assert choose(probes) == probes[1]
    assert choose([p("a", L, ok=False), p("b", R, ok=False)]) is None
    assert choose([]) is None


def test_ranked_puts_unreachable_last() -> None:
    probes = [p("down", L, ok=False), p("relay", Y), p("remote", R)]
    assert [x.uri for x in ranked(probes)] == ["remote", "relay", "down"]


def test_failover_order_when_preferred_goes_down() -> None:
    up = [p("local", L, ms=1), p("remote", R, proto="https", ms=20), p("relay", Y, proto="https", ms=40)]
    assert choose(up).uri == "local"  # type: ignore[union-attr]
    local_down = [p("local", L, ok=False), *up[1:]]
    assert choose(local_down).uri == "remote"  # type: ignore[union-attr]
    only_relay = [p("local", L, ok=False), p("remote", R, ok=False), up[2]]
    assert choose(only_relay).uri == "relay"  # type: ignore[union-attr]


def test_rank_key_unknown_latency_sorts_last_within_tier() -> None:
    assert rank_key(p("a", L, ms=None)) > rank_key(p("b", L, ms=500))


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", L),
        ("192.168.1.10", L),
        ("10.0.0.5", L),
        ("[fe80::1]", L),
        ("nas.local", L),
        ("localhost", L),
        ("8.8.8.8", R),
        ("example.com", R),
        ("192-168-1-10.0123456789abcdef.plex.direct", L),
        ("8-8-8-8.0123456789abcdef.plex.direct", R),
    ],
)
def test_kind_for_address(host: str, kind: ConnectionKind) -> None:
    assert kind_for_address(host) is kind
