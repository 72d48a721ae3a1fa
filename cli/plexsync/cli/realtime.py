"""`servers watch-status`: each Plex server's real-time watcher, as the scanner replica holding it reports it."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from plexsync.cli.client import Services
from plexsync.cli.output import enum_label, print_json, print_table
from plexsync.cli.parsing import format_duration, format_time
from plexsync.v1 import scanner_pb2


def _ago(message: scanner_pb2.Watcher) -> str:
    if not message.HasField("last_message_time"):
        return "-"
    seconds = (datetime.now(UTC) - message.last_message_time.ToDatetime(tzinfo=UTC)).total_seconds()
    return f"{format_duration(max(seconds, 0.0))} ago"


def cmd_servers_watch_status(args: argparse.Namespace, svc: Services) -> int:
    watchers: list[scanner_pb2.Watcher] = []
    token = ""
    while True:
        request = scanner_pb2.ListWatchersRequest(server_id=args.server or "", page_size=1000, page_token=token)
        reply = svc.call("scanner", svc.scanner.ListWatchers, request)
        watchers.extend(reply.watchers)
        token = reply.next_page_token
        if not token:
            break
    if args.json:
        print_json(watchers)
        return 0
    rows = [
        (
            w.server_id,
            enum_label(scanner_pb2.WatcherState.Name(w.state).replace("WATCHER_STATE_", "")),
            w.holder or "-",
            format_time(w.connected_since, w.HasField("connected_since")) or "-",
            _ago(w),
            format_duration(w.lag.ToMilliseconds() / 1000) if w.changes_applied else "-",
            w.reconnects,
            w.changes_applied,
            w.fallback_scans,
            len(w.library_ids),
            w.last_error or "",
        )
        for w in watchers
    ]
    columns = ["server", "state", "holder", "connected since", "last message", "lag", "reconnects", "changes",
               "fallback scans", "libraries", "last error"]  # fmt: skip
    print_table("Real-time watchers", columns, rows)
    if not watchers:
        print("No watcher yet: a scanner takes each server's watch within seconds of starting.")
    return 0
