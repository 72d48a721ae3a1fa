"""`plexsync audit`: every service's audit log (AuditService.ListAuditEvents), merged by time, newest first.

Each service keeps the events of what it owns (auth: servers, tokens, logins, credential fetches; catalog: libraries,
path rules; scheduler: schedules, deep syncs) and the calls it refused, so the command asks all four and merges.
A service that cannot be asked is named on stderr and makes the exit code 1; the others are still shown.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from plexsync.cli.client import CliError, Handler, Services
from plexsync.cli.output import err_console, print_json, print_table, to_dict
from plexsync.cli.parsing import format_time, now_utc, parse_duration
from plexsync.v1 import audit_pb2, audit_pb2_grpc

Command = Callable[[Any, str, Handler, str], argparse.ArgumentParser]

SERVICES = ("auth", "catalog", "scanner", "scheduler")
OUTCOMES = {
    "success": audit_pb2.AUDIT_OUTCOME_SUCCESS,
    "denied": audit_pb2.AUDIT_OUTCOME_DENIED,
    "failure": audit_pb2.AUDIT_OUTCOME_FAILURE,
}


def _when(text: str) -> datetime:
    """An ISO time (2026-12-07T10:00:00+00:00; local time without an offset) or a duration ago (30m, 1d)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return now_utc() - timedelta(seconds=parse_duration(text).seconds)
    return moment if moment.tzinfo is not None else moment.astimezone()


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def build_request(args: argparse.Namespace) -> audit_pb2.ListAuditEventsRequest:
    request = audit_pb2.ListAuditEventsRequest(
        action=args.action or "",
        actor_identity=args.actor or "",
        resource_type=args.resource_type or "",
        resource_id=args.resource or "",
        outcome=OUTCOMES[args.outcome] if args.outcome else audit_pb2.AUDIT_OUTCOME_UNSPECIFIED,
    )
    if args.since:
        request.start_time.CopyFrom(_timestamp(_when(args.since)))
    if args.until:
        request.end_time.CopyFrom(_timestamp(_when(args.until)))
    return request


def fetch(svc: Services, service: str, request: audit_pb2.ListAuditEventsRequest, limit: int) -> list[Any]:
    """Up to `limit` of one service's newest events matching the request."""
    stub = audit_pb2_grpc.AuditServiceStub(svc._channel(service))
    events: list[Any] = []
    page = audit_pb2.ListAuditEventsRequest()
    page.CopyFrom(request)
    page.page_size = min(limit, 1000)
    while len(events) < limit:
        reply = svc.call(service, stub.ListAuditEvents, page)
        events.extend(reply.events)
        if not reply.next_page_token:
            break
        page.page_token = reply.next_page_token
    return events[:limit]


def merge(per_service: list[list[Any]], limit: int) -> list[Any]:
    """The newest `limit` events of all services, newest first (ties: service, then event id, so output is stable)."""
    events = [e for events in per_service for e in events]
    events.sort(key=lambda e: (e.time.seconds, e.time.nanos, e.service, e.event_id), reverse=True)
    return events[:limit]


def _detail(event: Any) -> str:
    if event.reason:
        return str(event.reason)
    after = to_dict(event.after) if event.HasField("after") else None
    before = to_dict(event.before) if event.HasField("before") else None
    if before is not None and after is not None:
        changed = {k: v for k, v in after.items() if before.get(k) != v}
        return json.dumps(changed, ensure_ascii=False, sort_keys=True)
    shown = after if after is not None else before
    return json.dumps(shown, ensure_ascii=False, sort_keys=True) if shown is not None else ""


def _actor(event: Any) -> str:
    if not event.actor_identity:
        return "(unauthenticated)"
    return f"{event.actor_identity} ({event.actor_role})" if event.actor_role else event.actor_identity


def _outcome(event: Any) -> str:
    return str(audit_pb2.AuditOutcome.Name(event.outcome)).removeprefix("AUDIT_OUTCOME_").lower()


def cmd_audit(args: argparse.Namespace, svc: Services) -> int:
    if args.limit < 1:
        raise CliError("--limit must be at least 1")
    services = args.service or list(SERVICES)
    request = build_request(args)
    gathered: list[list[Any]] = []
    failed = 0
    for service in services:
        try:
            gathered.append(fetch(svc, service, request, args.limit))
        except CliError as exc:
            failed += 1
            err_console.print(f"[yellow]no audit events from {service}: {exc}")
    events = merge(gathered, args.limit)
    if args.json:
        print_json(events)
    else:
        rows = [
            (
                format_time(e.time),
                e.service,
                _outcome(e),
                _actor(e),
                e.action,
                f"{e.resource_type} {e.resource_id}".strip(),
                e.peer,
                _detail(e),
            )
            for e in events
        ]
        title = f"Audit events ({len(events)}, newest first)"
        print_table(title, ["time", "service", "outcome", "actor", "action", "resource", "peer", "detail"], rows)
    return 1 if failed else 0


def register(sub: Any, command: Command) -> None:
    """Add `audit` to the `plexsync` parser."""
    audit = command(sub, "audit", cmd_audit, "who changed what, credential fetches and refused calls")
    audit.add_argument("--service", action="append", choices=SERVICES, help="only this service's log (repeatable)")
    audit.add_argument("--action", help="e.g. server.add; ending in '.' a prefix (server.)")
    audit.add_argument("--actor", help="the caller's identity, e.g. cli or reader")
    audit.add_argument("--resource-type", help="server, library, account, method ...")
    audit.add_argument("--resource", help="the resource's id")
    audit.add_argument("--outcome", choices=sorted(OUTCOMES))
    audit.add_argument("--since", help="an ISO time or a duration ago (30m, 1d)")
    audit.add_argument("--until", help="an ISO time or a duration ago")
    audit.add_argument("--limit", type=int, default=50, help="at most this many events (default 50)")
