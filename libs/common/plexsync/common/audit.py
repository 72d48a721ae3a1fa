"""The audit log: who changed what, every credential fetch and every refused call, kept in the service's schema.

Domain code records through the small `AuditRecorder` interface (`NO_AUDIT` where nothing is kept); the caller
(identity, role, peer, the RPC's method) comes from `plexsync.common.access.current_caller()` and the trace id from
the current span, so domain code passes only what happened. `AuditLog` writes the row and, when the service relays
an outbox, the `AuditEvent` for NATS (``plexsync.v1.audit.<service>.<action>``) in one transaction: the event
reaches NATS at least once, and only for a stored row.

A change is recorded in the transaction that makes it: the domain passes its session (an SQLAlchemy `AsyncSession`
or `AsyncConnection` of the service's engine, inside ``begin()``) as ``record(..., session=...)``, and the row and
its outbox event commit or roll back with the change. A committed change therefore always has its record, and a
rolled-back one has none. Without a session the record gets a transaction of its own: what reports no change of
the service's own state (a refused call, a credential fetch) or a change made elsewhere (another service's, over
gRPC) is recorded that way.

Before/after values pass `redact`: values under token-, secret-, password- or key-like names, and Plex tokens in
URLs, never reach a row or an event. Callers still put only non-secret fields in them.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from plexsync.common import outbox
from plexsync.common.access import DeniedCall, current_caller
from plexsync.common.audit_schema import TABLE
from plexsync.common.errors import InvalidArgumentError
from plexsync.common.pagination import decode_token, encode_token, filters_fingerprint, page_size
from plexsync.common.telemetry import current_trace_id
from plexsync.v1 import audit_pb2
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

SUBJECT_PREFIX = "plexsync.v1.audit"
REDACTED = "[redacted]"

# The caller's transaction an audit record joins: a session or connection of the service's engine (its schema first
# on the search path), already inside begin(). Typed here so domain code needs no SQL of its own to pass one.
AuditSession = AsyncSession | AsyncConnection


class Outcome(StrEnum):
    SUCCESS = "success"
    DENIED = "denied"
    FAILURE = "failure"


_OUTCOME_PB = {
    Outcome.SUCCESS: audit_pb2.AUDIT_OUTCOME_SUCCESS,
    Outcome.DENIED: audit_pb2.AUDIT_OUTCOME_DENIED,
    Outcome.FAILURE: audit_pb2.AUDIT_OUTCOME_FAILURE,
}
_OUTCOME_FROM_PB = {v: k for k, v in _OUTCOME_PB.items()}


def audit_subject(service: str, action: str) -> str:
    return f"{SUBJECT_PREFIX}.{service}.{action}"


_SECRET_KEY = re.compile(r"token|secret|password|passwd|authorization|credential|api[_-]?key|private[_-]?key", re.I)
_TOKEN_IN_TEXT = re.compile(r"(?i)(x-plex-token[=:]\s*|bearer\s+)[^&\s\"']+")


def redact(value: Any) -> Any:
    """A JSON-able copy of `value` with secret-looking entries replaced by "[redacted]"."""
    if isinstance(value, Mapping):
        return {str(k): REDACTED if _SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _TOKEN_IN_TEXT.sub(lambda m: m.group(1) + REDACTED, value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return redact(str(value))


class AuditRecorder(Protocol):
    """What domain code needs to record an audit event (no gRPC, no SQL)."""

    async def record(
        self,
        action: str,
        resource_type: str = "",
        resource_id: str = "",
        *,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        outcome: Outcome = Outcome.SUCCESS,
        reason: str = "",
        session: AuditSession | None = None,
    ) -> None:
        """Record one event; with `session`, in that session's current transaction (it commits or rolls back
        with the change), else in a transaction of its own."""
        ...


class NoAudit:
    """Records nothing: the default of domain objects built without an audit log (unit tests, tools)."""

    async def record(
        self,
        action: str,
        resource_type: str = "",
        resource_id: str = "",
        *,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        outcome: Outcome = Outcome.SUCCESS,
        reason: str = "",
        session: AuditSession | None = None,
    ) -> None:
        return None


NO_AUDIT = NoAudit()

_COLUMNS = (
    "event_id, occurred_at, service, actor_identity, actor_role, peer, action, method, resource_type, resource_id, "
    "outcome, reason, before, after, trace_id"
)
_INSERT = text(
    f"INSERT INTO {TABLE} (event_id, service, actor_identity, actor_role, peer, action, method, resource_type, "
    "resource_id, outcome, reason, before, after, trace_id) VALUES (:event_id, :service, :actor_identity, "
    ":actor_role, :peer, :action, :method, :resource_type, :resource_id, :outcome, :reason, :before, :after, "
    ":trace_id) RETURNING occurred_at"
).bindparams(bindparam("before", type_=JSONB(none_as_null=True)), bindparam("after", type_=JSONB(none_as_null=True)))


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _struct(value: Mapping[str, Any] | None) -> Struct | None:
    if value is None:
        return None
    struct = Struct()
    struct.update(value)
    return struct


def event_pb(row: Mapping[str, Any]) -> audit_pb2.AuditEvent:
    """The protobuf form of an audit row (a mapping of the table's columns)."""
    return audit_pb2.AuditEvent(
        event_id=str(row["event_id"]),
        time=_timestamp(row["occurred_at"]),
        service=row["service"],
        actor_identity=row["actor_identity"],
        actor_role=row["actor_role"],
        peer=row["peer"],
        action=row["action"],
        method=row["method"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        outcome=_OUTCOME_PB[Outcome(row["outcome"])],
        reason=row["reason"],
        before=_struct(row["before"]),
        after=_struct(row["after"]),
        trace_id=row["trace_id"],
    )


class AuditLog:
    """Writes one service's audit events to its schema (and outbox) and reads them back for ListAuditEvents.

    `engine` must have the service's schema first on its search path (plexsync.common.db.create_engine).
    `publish` says whether the service relays its outbox to NATS (an `OutboxRelay` runs); without one the rows are
    kept but nothing is published, rather than filling an outbox nobody empties."""

    def __init__(self, engine: AsyncEngine, service: str, *, publish: bool = True) -> None:
        self.engine = engine
        self.service = service
        self.publish = publish

    async def record(
        self,
        action: str,
        resource_type: str = "",
        resource_id: str = "",
        *,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        outcome: Outcome = Outcome.SUCCESS,
        reason: str = "",
        session: AuditSession | None = None,
    ) -> None:
        """Write the row (and its outbox event): in `session`'s current transaction when one is given, so the
        record commits or rolls back with the change it reports; otherwise in a transaction of its own."""
        caller = current_caller()
        await self._write(
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            actor_identity=caller.identity if caller else "",
            actor_role=caller.role.value if caller else "",
            peer=caller.peer if caller else "",
            method=caller.method if caller else "",
            outcome=outcome,
            reason=reason,
            before=before,
            after=after,
            trace_id=current_trace_id(),
            session=session,
        )

    async def record_denied(self, denied: DeniedCall) -> None:
        """The interceptor's `on_denied` sink: one "call.denied" row per refused call (never the token)."""
        await self._write(
            action="call.denied",
            resource_type="method",
            resource_id=denied.method,
            actor_identity=denied.identity or "",
            actor_role=denied.role or "",
            peer=denied.peer,
            method=denied.method,
            outcome=Outcome.DENIED,
            reason=f"{denied.code}: {denied.reason}",
            before=None,
            after=None,
            trace_id=denied.trace_id,
        )

    async def _write(
        self,
        *,
        action: str,
        resource_type: str,
        resource_id: str,
        actor_identity: str,
        actor_role: str,
        peer: str,
        method: str,
        outcome: Outcome,
        reason: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        trace_id: str,
        session: AuditSession | None = None,
    ) -> None:
        row: dict[str, Any] = {
            "event_id": uuid.uuid4(),
            "service": self.service,
            "actor_identity": actor_identity,
            "actor_role": actor_role,
            "peer": peer,
            "action": action,
            "method": method,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "outcome": outcome.value,
            "reason": redact(reason),
            # A JSON round trip: what is stored is exactly what a reader gets back (and what the event carries).
            "before": json.loads(json.dumps(redact(before))) if before is not None else None,
            "after": json.loads(json.dumps(redact(after))) if after is not None else None,
            "trace_id": trace_id,
        }
        if session is not None:
            await self._insert(session, row)
            return
        async with self.engine.begin() as conn:
            await self._insert(conn, row)

    async def _insert(self, conn: AuditSession, row: dict[str, Any]) -> None:
        """The row and (when publishing) its outbox event, in `conn`'s current transaction."""
        row["occurred_at"] = (await conn.execute(_INSERT, row)).scalar_one()
        if self.publish:
            event = event_pb(row)
            await outbox.add(conn, audit_subject(self.service, row["action"]), event, msg_id=event.event_id)

    async def list(self, request: audit_pb2.ListAuditEventsRequest) -> audit_pb2.ListAuditEventsResponse:
        """Newest first, keyset-paged on (occurred_at, id), filtered as the request says."""
        size = page_size(request.page_size)
        start = request.start_time.ToDatetime(UTC) if request.HasField("start_time") else None
        end = request.end_time.ToDatetime(UTC) if request.HasField("end_time") else None
        if start is not None and end is not None and end <= start:
            raise InvalidArgumentError.single("end_time", "must be after start_time")
        outcome = _OUTCOME_FROM_PB.get(request.outcome) if request.outcome else None
        if request.outcome and outcome is None:
            raise InvalidArgumentError.single("outcome", f"unknown outcome {request.outcome}")
        fingerprint = filters_fingerprint(
            request.action,
            request.actor_identity,
            request.resource_type,
            request.resource_id,
            outcome,
            start and start.isoformat(),
            end and end.isoformat(),
        )
        last = decode_token(request.page_token, fingerprint)
        where: list[str] = []
        params: dict[str, Any] = {"limit": size + 1}
        if request.action:
            if request.action.endswith("."):
                where.append("starts_with(action, :action)")
            else:
                where.append("action = :action")
            params["action"] = request.action
        for name in ("actor_identity", "resource_type", "resource_id"):
            if value := getattr(request, name):
                where.append(f"{name} = :{name}")
                params[name] = value
        if outcome is not None:
            where.append("outcome = :outcome")
            params["outcome"] = outcome.value
        if start is not None:
            where.append("occurred_at >= :start")
            params["start"] = start
        if end is not None:
            where.append("occurred_at < :end")
            params["end"] = end
        if last is not None:
            try:
                params["last_at"], params["last_id"] = datetime.fromisoformat(str(last[0])), int(last[1])
            except (ValueError, IndexError, TypeError) as exc:
                raise InvalidArgumentError.single("page_token", "is not a token this method returned") from exc
            where.append("(occurred_at, id) < (:last_at, :last_id)")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = text(f"SELECT id, {_COLUMNS} FROM {TABLE} {clause} ORDER BY occurred_at DESC, id DESC LIMIT :limit")
        async with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in (await conn.execute(sql, params)).all()]
        next_token = ""
        if len(rows) > size:
            rows = rows[:size]
            next_token = encode_token([rows[-1]["occurred_at"].isoformat(), rows[-1]["id"]], fingerprint)
        return audit_pb2.ListAuditEventsResponse(events=[event_pb(r) for r in rows], next_page_token=next_token)
