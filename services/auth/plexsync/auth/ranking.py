"""Connection choice: which of a server's connections to use, given the probe results.

Preference: local, then remote over HTTPS, then remote over plain HTTP, then relay (plex.tv's bandwidth-capped
proxy). Within one tier, HTTPS beats HTTP and lower latency wins. Only reachable connections that answered as
the right server compete.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class ConnectionKind(StrEnum):
    LOCAL = "local"
    REMOTE = "remote"
    RELAY = "relay"


@dataclass(frozen=True)
class Probe:
    """One probe of one connection."""

    uri: str
    kind: ConnectionKind
    protocol: str
    reachable: bool
    latency_ms: float | None = None
    error: str = ""


def tier(kind: ConnectionKind, protocol: str) -> int:
    if kind is ConnectionKind.LOCAL:
        return 0
    if kind is ConnectionKind.REMOTE:
        return 1 if protocol == "https" else 2
    return 3


def rank_key(probe: Probe) -> tuple[int, int, float, str]:
    """Sort key: lower is better."""
    latency = probe.latency_ms if probe.latency_ms is not None else float("inf")
    return (tier(probe.kind, probe.protocol), 0 if probe.protocol == "https" else 1, latency, probe.uri)


def choose(probes: Iterable[Probe]) -> Probe | None:
    """The best reachable probe, or None when nothing answered."""
    reachable = [p for p in probes if p.reachable]
    return min(reachable, key=rank_key) if reachable else None


def ranked(probes: Iterable[Probe]) -> list[Probe]:
    """Reachable probes best first, then unreachable ones."""
    items = list(probes)
    return sorted(items, key=lambda p: (not p.reachable, rank_key(p)))


def kind_for_address(host: str) -> ConnectionKind:
    """LOCAL for loopback, private and link-local addresses (and .local names); REMOTE otherwise."""
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        lowered = host.lower()
        if lowered == "localhost" or lowered.endswith((".local", ".lan", ".home.arpa")):
            return ConnectionKind.LOCAL
        # *.plex.direct names embed the address: 192-168-1-10.<hash>.plex.direct
        if lowered.endswith(".plex.direct"):
            embedded = lowered.split(".", 1)[0].replace("-", ".")
            try:
                return kind_for_address(str(ipaddress.ip_address(embedded)))
            except ValueError:
                return ConnectionKind.REMOTE
        return ConnectionKind.REMOTE
    if ip.is_loopback or ip.is_private or ip.is_link_local:
        return ConnectionKind.LOCAL
    return ConnectionKind.REMOTE
