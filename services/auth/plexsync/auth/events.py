"""Server events on NATS: plexsync.v1.server.<id>.{online,offline,token_invalid} (ServerEvent protobufs).

Events name the server and say what happened; they never carry a token. They go through auth's outbox
(plexsync.common.outbox), so one is not lost while NATS is down.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from plexsync.auth.models import Server
from plexsync.common.eventbus import server_subject
from plexsync.common.logs import redact
from plexsync.common.outbox import OutboxRelay
from plexsync.v1 import events_pb2


def _event(server: Server) -> events_pb2.ServerEvent:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return events_pb2.ServerEvent(
        event_id=str(uuid.uuid4()), server_id=str(server.id), server_name=server.name, time=stamp
    )


class NatsServerEvents:
    """Publishes ServerEvents through the outbox and its relay."""

    def __init__(self, outbox: OutboxRelay) -> None:
        self.outbox = outbox

    async def _publish(self, kind: str, event: events_pb2.ServerEvent) -> None:
        await self.outbox.enqueue(server_subject(event.server_id, kind), event, msg_id=event.event_id)

    async def online(self, server: Server, uri: str, latency_ms: float) -> None:
        event = _event(server)
        latency = Duration()
        latency.FromNanoseconds(int(latency_ms * 1_000_000))
        event.online.CopyFrom(events_pb2.ServerOnline(uri=uri, latency=latency))
        await self._publish("online", event)

    async def offline(self, server: Server, error: str) -> None:
        event = _event(server)
        event.offline.CopyFrom(events_pb2.ServerOffline(error=redact(error)))
        await self._publish("offline", event)

    async def token_invalid(self, server: Server, reason: str) -> None:
        event = _event(server)
        event.token_invalid.CopyFrom(events_pb2.TokenInvalid(reason=redact(reason)))
        await self._publish("token_invalid", event)
