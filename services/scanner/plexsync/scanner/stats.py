"""What a scan cost: Plex requests and bytes, and time per kind of work (`common.ScanStats`).

Counted where the work happens (a few additions per Plex request or catalog batch, nothing per item),
kept with the scan's row, put on its events and on its span. Times are summed over concurrent requests,
so they say where the effort went, not how long a phase took.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plexsync.v1 import common_pb2

# The Plex endpoint (as `plex_client.endpoint_template` names it) whose time counts as full-metadata time.
METADATA_ENDPOINT = "/library/metadata/{id}"


@dataclass(slots=True)
class ScanStats:
    plex_requests: int = 0
    plex_bytes: int = 0
    listing_seconds: float = 0.0
    metadata_seconds: float = 0.0
    catalog_write_seconds: float = 0.0
    # Items the sync rules left out, by the top-level part of the rule that did (one addition per excluded item).
    excluded_by_rule: dict[str, int] = field(default_factory=dict)

    def plex_request(self, endpoint: str, seconds: float, body_bytes: int) -> None:
        """One Plex request attempt (a retry counts again) of ``endpoint`` that took ``seconds``."""
        self.plex_requests += 1
        self.plex_bytes += body_bytes
        if endpoint == METADATA_ENDPOINT:
            self.metadata_seconds += seconds
        else:
            self.listing_seconds += seconds

    def catalog_write(self, seconds: float) -> None:
        """The catalog acknowledged a WriteItems batch, or FinishScan returned, ``seconds`` after it was sent."""
        self.catalog_write_seconds += seconds

    def to_proto(self) -> common_pb2.ScanStats:
        out = common_pb2.ScanStats(plex_requests=self.plex_requests, plex_bytes=self.plex_bytes)
        out.listing_time.FromNanoseconds(int(self.listing_seconds * 1e9))
        out.metadata_time.FromNanoseconds(int(self.metadata_seconds * 1e9))
        out.catalog_write_time.FromNanoseconds(int(self.catalog_write_seconds * 1e9))
        out.excluded_by_rule.update(self.excluded_by_rule)
        return out

    def to_json(self) -> dict[str, Any]:
        """The form kept in ``scanner.scans.stats`` (seconds as floats, readable in SQL; exact round trip, so the
        stored scan and its terminal event say the same)."""
        return {
            "plex_requests": self.plex_requests,
            "plex_bytes": self.plex_bytes,
            "listing_seconds": self.listing_seconds,
            "metadata_seconds": self.metadata_seconds,
            "catalog_write_seconds": self.catalog_write_seconds,
            "excluded_by_rule": dict(self.excluded_by_rule),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ScanStats:
        data = data or {}
        return cls(
            plex_requests=int(data.get("plex_requests", 0)),
            plex_bytes=int(data.get("plex_bytes", 0)),
            listing_seconds=float(data.get("listing_seconds", 0.0)),
            metadata_seconds=float(data.get("metadata_seconds", 0.0)),
            catalog_write_seconds=float(data.get("catalog_write_seconds", 0.0)),
            excluded_by_rule={str(k): int(v) for k, v in (data.get("excluded_by_rule") or {}).items()},
        )

    def span_attributes(self) -> dict[str, int | float]:
        return {
            "plexsync.scan.plex_requests": self.plex_requests,
            "plexsync.scan.plex_bytes": self.plex_bytes,
            "plexsync.scan.listing_seconds": round(self.listing_seconds, 3),
            "plexsync.scan.metadata_seconds": round(self.metadata_seconds, 3),
            "plexsync.scan.catalog_write_seconds": round(self.catalog_write_seconds, 3),
        }
