"""`changes watch`: the catalog's change feed (CatalogService.WatchChanges), one line per change, until Ctrl-C.

The stream is opened again from the last change's resume token when the catalog restarts or the connection
drops, so nothing is missed and nothing is printed twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import grpc
from plexsync.cli.client import Handler, Services, describe_error
from plexsync.cli.output import err_console, to_dict
from plexsync.v1 import catalog_pb2, common_pb2

Command = Callable[[Any, str, Handler, str], argparse.ArgumentParser]

# Errors worth opening the stream again for (a restart, a rolling update, a proxy cutting a long stream).
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED})
_MAX_RETRIES = 8


def _label(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def _library_names(svc: Services) -> dict[str, str]:
    names: dict[str, str] = {}
    token = ""
    while True:
        request = catalog_pb2.ListLibrariesRequest(page_size=1000, page_token=token, include_removed=True)
        reply = svc.call("catalog", svc.catalog.ListLibraries, request)
        names.update((lib.id, lib.name) for lib in reply.libraries)
        token = reply.next_page_token
        if not token:
            return names


def format_change(change: common_pb2.ItemChange, library: str) -> str:
    """time, change kind, item kind, title, library, resume token: one line."""
    when = change.commit_time.ToDatetime().isoformat(timespec="milliseconds") + "Z"
    kind = _label(common_pb2.ChangeKind.Name(change.kind), "CHANGE_KIND_")
    item_kind = _label(common_pb2.ItemKind.Name(change.item_kind), "ITEM_KIND_")
    title = change.title or change.rating_key
    return f"{when}  {kind:<8}  {item_kind:<11}  {title}  [{library}]  {change.resume_token}"


def cmd_changes_watch(args: argparse.Namespace, svc: Services) -> int:
    names = {} if args.json else _library_names(svc)
    token = args.from_token or ""
    from_oldest = bool(args.from_oldest)
    address = svc.endpoints.addresses["catalog"]
    retries = 0
    if not args.json:
        err_console.print("watching the catalog's changes (Ctrl-C to stop)…")
    try:
        while True:
            request = catalog_pb2.WatchChangesRequest(
                resume_token=token, library_id=args.library or "", from_oldest=from_oldest and not token
            )
            try:
                for reply in svc.catalog.WatchChanges(request, metadata=svc.metadata):
                    retries = 0
                    for change in reply.changes:
                        if args.json:
                            line = json.dumps(to_dict(change), ensure_ascii=False)
                        else:
                            library = names.get(change.library_id) or change.library_id
                            line = format_change(change, library)
                        sys.stdout.write(line + "\n")
                        token = change.resume_token
                    sys.stdout.flush()
            except grpc.RpcError as exc:
                if exc.code() not in _RETRYABLE or retries >= _MAX_RETRIES:
                    raise describe_error("catalog", address, exc) from None
                retries += 1
                err_console.print(f"[yellow]lost the catalog's change stream ({exc.code().name}); following again…")
                time.sleep(min(0.5 * 2**retries, 5.0))
                continue
            # The catalog ended the stream (it is shutting down): follow its successor from the last change.
            time.sleep(0.5)
    except KeyboardInterrupt:
        if token and not args.json:
            err_console.print(f"stopped; go on from here with --from {token}")
        return 0


def register(sub: Any, command: Command) -> None:
    """Add `changes watch` to the `plexsync` parser."""
    changes = sub.add_parser("changes", help="the catalog's change feed").add_subparsers(dest="action", required=True)
    watch = command(changes, "watch", cmd_changes_watch, "print changes to items as they are committed")
    watch.add_argument("--library", help="only this library's changes")
    start = watch.add_mutually_exclusive_group()
    start.add_argument("--from", dest="from_token", help="a change's resume token: the changes after it")
    start.add_argument("--from-oldest", action="store_true", help="from the oldest change the catalog keeps")
