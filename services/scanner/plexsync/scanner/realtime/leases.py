"""Who watches which Plex server: a lease per server in the scanner's schema, renewed by its holder.

A replica holds a server's watch while it renews the lease (every third of its TTL); when the holder dies
the lease expires and the next replica to ask takes it, within the TTL plus one renewal period. A holder
that stops releases its leases at once. The row also carries the holder's view of the stream (state,
counters, last error), so any replica answers ListWatchers for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from plexsync.v1 import scanner_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

STOPPED = scanner_pb2.WATCHER_STATE_STOPPED


@dataclass(slots=True)
class WatcherStatus:
    """The holder's view of one server's stream; persisted with every renewal."""

    server_id: str
    state: int = scanner_pb2.WATCHER_STATE_CONNECTING
    connected_since: datetime | None = None
    last_message_at: datetime | None = None
    lag_ms: int = 0
    reconnects: int = 0
    changes_applied: int = 0
    fallback_scans: int = 0
    last_error: str = ""
    library_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Lease:
    acquired: bool
    # The replica that held the server's watch before this one (empty when nobody ever did, or it was us).
    previous_holder: str = ""


class WatchLeases:
    def __init__(self, engine: AsyncEngine, *, holder: str, ttl_seconds: float) -> None:
        self.engine, self.holder, self.ttl = engine, holder, ttl_seconds

    async def acquire(self, server_id: str) -> Lease:
        """Take the server's watch if nobody holds it (or its holder's lease expired)."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(text(
                "WITH old AS (SELECT holder FROM watchers WHERE server_id = :sid) "
                "INSERT INTO watchers (server_id, holder, lease_expires_at, acquired_at) "
                "VALUES (:sid, :me, now() + make_interval(secs => :ttl), now()) "
                "ON CONFLICT (server_id) DO UPDATE SET holder = :me, lease_expires_at = excluded.lease_expires_at, "
                "acquired_at = now(), state = 1, connected_since = NULL, reconnects = 0, changes_applied = 0, "
                "fallback_scans = 0, last_error = '', updated_at = now() "
                "WHERE watchers.lease_expires_at < now() OR watchers.holder = :me "
                "RETURNING (SELECT holder FROM old)"
            ), {"sid": server_id, "me": self.holder, "ttl": self.ttl})).first()  # fmt: skip
        if row is None:
            return Lease(False)
        previous = row[0] or ""
        return Lease(True, "" if previous == self.holder else previous)

    async def renew(self, status: WatcherStatus) -> bool:
        """Extend the lease and record the status; False when another replica took it meanwhile."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(text(
                "UPDATE watchers SET lease_expires_at = now() + make_interval(secs => :ttl), state = :state, "
                "connected_since = :connected_since, last_message_at = :last_message_at, lag_ms = :lag_ms, "
                "reconnects = :reconnects, changes_applied = :changes_applied, fallback_scans = :fallback_scans, "
                "last_error = :last_error, library_ids = :library_ids, updated_at = now() "
                "WHERE server_id = :sid AND holder = :me AND lease_expires_at >= now() RETURNING 1"
            ), {
                "ttl": self.ttl, "sid": status.server_id, "me": self.holder, "state": status.state,
                "connected_since": status.connected_since, "last_message_at": status.last_message_at,
                "lag_ms": status.lag_ms, "reconnects": status.reconnects, "changes_applied": status.changes_applied,
                "fallback_scans": status.fallback_scans, "last_error": status.last_error[:500],
                "library_ids": status.library_ids,
            })).first()  # fmt: skip
        return row is not None

    async def release(self, server_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE watchers SET lease_expires_at = now(), state = :stopped, updated_at = now() "
                    "WHERE server_id = :sid AND holder = :me"
                ),
                {"sid": server_id, "me": self.holder, "stopped": STOPPED},
            )

    async def list(self, server_id: str = "") -> list[scanner_pb2.Watcher]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT server_id, holder, lease_expires_at, state, connected_since, last_message_at, lag_ms, "
                "reconnects, changes_applied, fallback_scans, last_error, library_ids, lease_expires_at >= now() AS live "  # noqa: E501
                "FROM watchers WHERE (:sid = '' OR server_id = :sid) ORDER BY server_id"
            ), {"sid": server_id})).all()  # fmt: skip
        return [_to_proto(r._mapping) for r in rows]


def _to_proto(r: Any) -> scanner_pb2.Watcher:
    live = bool(r["live"])
    w = scanner_pb2.Watcher(
        server_id=r["server_id"],
        holder=r["holder"] if live else "",
        state=cast(scanner_pb2.WatcherState.ValueType, r["state"] if live else STOPPED),
        reconnects=r["reconnects"],
        changes_applied=r["changes_applied"],
        fallback_scans=r["fallback_scans"],
        last_error=r["last_error"],
        library_ids=list(r["library_ids"] or []),
    )
    w.lease_expire_time.FromDatetime(r["lease_expires_at"].astimezone(UTC))
    w.lag.FromMilliseconds(int(r["lag_ms"]))
    for name, value in (("connected_since", r["connected_since"]), ("last_message_time", r["last_message_at"])):
        if isinstance(value, datetime) and live:
            getattr(w, name).FromDatetime(value.astimezone(UTC))
    return w
