"""`plexsync`: log in, manage servers and libraries, sync with live progress, schedule scans, and query the catalog.

Every command takes --json for scripts. Addresses come from PLEXSYNC_<SERVICE>_ADDR, the token from
PLEXSYNC_CLI_TOKEN (or PLEXSYNC_SERVICE_TOKEN).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from google.protobuf import field_mask_pb2
from plexsync.cli import audit, changes, diagnostics, rules
from plexsync.cli.client import CliError, Endpoints, Handler, Services
from plexsync.cli.jobs import register
from plexsync.cli.output import enum_label, err_console, print_json, print_table, to_dict
from plexsync.cli.parsing import format_duration, parse_duration
from plexsync.cli.realtime import cmd_servers_watch_status
from plexsync.v1 import auth_pb2, catalog_pb2, common_pb2, scanner_pb2


def _kind(value: str) -> common_pb2.ItemKind.ValueType:
    try:
        return common_pb2.ItemKind.Value(f"ITEM_KIND_{value.upper()}")
    except ValueError:
        raise CliError(f"unknown kind {value!r}: movie, show, season, episode, other_video") from None


def _state(value: str) -> common_pb2.ItemState.ValueType:
    try:
        return common_pb2.ItemState.Value(f"ITEM_STATE_{value.upper()}")
    except ValueError:
        raise CliError(f"unknown state {value!r}: normal, remote_only, unavailable, file_not_found") from None


# ---- login and servers -------------------------------------------------------------------------------


def cmd_login(args: argparse.Namespace, svc: Services) -> int:
    pin = svc.call("auth", svc.auth.StartPinLogin, auth_pb2.StartPinLoginRequest())
    if not args.json:
        err_console.print(f"Open [bold]{pin.auth_url}[/bold]\nand approve code [bold]{pin.code}[/bold]. Waiting…")
    request = auth_pb2.CompletePinLoginRequest(pin_id=pin.pin_id, discover_servers=True)
    if args.timeout:
        request.timeout.FromMilliseconds(int(args.timeout * 1000))
    done = svc.call("auth", svc.auth.CompletePinLogin, request, timeout=None)
    if args.json:
        print_json(done)
        return 0
    print(f"Logged in as {done.account.username or done.account.title} ({done.account.email})")
    _print_servers(list(done.servers))
    return 0


def _print_servers(servers: list[Any]) -> None:
    rows = [
        (s.id, s.name, enum_label(auth_pb2.ServerStatus.Name(s.status)), s.preferred_uri, len(s.connections))
        for s in servers
    ]
    print_table("Servers", ["id", "name", "status", "connection", "connections"], rows)


def cmd_servers_list(args: argparse.Namespace, svc: Services) -> int:
    reply = svc.call("auth", svc.auth.ListServers, auth_pb2.ListServersRequest(page_size=1000))
    if args.json:
        print_json(list(reply.servers))
    else:
        _print_servers(list(reply.servers))
    return 0


def cmd_servers_add(args: argparse.Namespace, svc: Services) -> int:
    request = auth_pb2.AddServerRequest(url=args.url, token=args.token, name=args.name or "")
    reply = svc.call("auth", svc.auth.AddServer, request)
    if args.json:
        print_json(reply.server)
    else:
        _print_servers([reply.server])
    return 0


def cmd_servers_discover(args: argparse.Namespace, svc: Services) -> int:
    reply = svc.call("auth", svc.auth.DiscoverServers, auth_pb2.DiscoverServersRequest(use_gdm=args.gdm))
    if args.json:
        print_json(reply)
    else:
        _print_servers(list(reply.servers))
        print(f"added {reply.added}, updated {reply.updated}, vanished {reply.vanished}")
    return 0


def cmd_servers_sync(args: argparse.Namespace, svc: Services) -> int:
    request = scanner_pb2.SyncServerRequest(server_id=args.server_id)
    reply = svc.call("scanner", svc.scanner.SyncServer, request, timeout=120)
    if args.json:
        print_json(reply)
    else:
        _print_libraries(list(reply.libraries))
        print(f"added {reply.added}, updated {reply.updated}, removed {reply.removed}")
    return 0


def cmd_servers_remove(args: argparse.Namespace, svc: Services) -> int:
    svc.call("auth", svc.auth.RemoveServer, auth_pb2.RemoveServerRequest(server_id=args.server_id))
    if args.json:
        print_json({"removed": args.server_id})
    else:
        print(f"removed server {args.server_id}")
    return 0


# ---- libraries and paths -----------------------------------------------------------------------------


def _library_interval(seconds: int) -> str:
    """Whole minutes as before ('150 min'); zero is the scheduler's default."""
    if not seconds:
        return "default"
    return f"{seconds // 60} min" if seconds % 60 == 0 else format_duration(seconds)


def _print_libraries(libraries: list[Any]) -> None:
    rows = [
        (
            lib.id,
            lib.name,
            enum_label(common_pb2.LibraryKind.Name(lib.kind)),
            "on" if lib.sync_enabled else "off",
            _library_interval(lib.refresh_interval.seconds),
            "on" if lib.realtime_enabled else "off",
            lib.last_scan_time.ToDatetime().isoformat(timespec="seconds") if lib.HasField("last_scan_time") else "",
            "removed" if lib.removed else "",
        )
        for lib in libraries
    ]
    print_table("Libraries", ["id", "name", "kind", "sync", "interval", "realtime", "last scan", ""], rows)


def _all_libraries(svc: Services, server_id: str = "") -> list[Any]:
    libraries: list[Any] = []
    token = ""
    while True:
        request = catalog_pb2.ListLibrariesRequest(server_id=server_id, page_size=1000, page_token=token)
        reply = svc.call("catalog", svc.catalog.ListLibraries, request)
        libraries.extend(reply.libraries)
        token = reply.next_page_token
        if not token:
            return libraries


def cmd_libraries_list(args: argparse.Namespace, svc: Services) -> int:
    libraries = _all_libraries(svc, args.server or "")
    if args.json:
        print_json(libraries)
    else:
        _print_libraries(libraries)
    return 0


def _update_library(svc: Services, library: Any, paths: list[str]) -> Any:
    request = catalog_pb2.UpdateLibraryRequest(library=library, update_mask=field_mask_pb2.FieldMask(paths=paths))
    return svc.call("catalog", svc.catalog.UpdateLibrary, request).library


def cmd_libraries_toggle(enabled: bool) -> Handler:
    def run(args: argparse.Namespace, svc: Services) -> int:
        library = _update_library(svc, common_pb2.Library(id=args.library_id, sync_enabled=enabled), ["sync_enabled"])
        if args.json:
            print_json(library)
        else:
            _print_libraries([library])
        return 0

    return run


def cmd_libraries_set_interval(args: argparse.Namespace, svc: Services) -> int:
    library = common_pb2.Library(id=args.library_id, refresh_interval=parse_duration(args.interval, allow_default=True))
    updated = _update_library(svc, library, ["refresh_interval"])
    if args.json:
        print_json(updated)
    else:
        _print_libraries([updated])
    return 0


def _print_rules(rules: list[Any]) -> None:
    print_table("Path replacements", ["plex path", "local path"], [(r.plex_path, r.local_path) for r in rules])


def cmd_libraries_setting(field: str) -> Handler:
    """`libraries remote-streaming|realtime LIB on|off`: set one boolean setting of a library."""

    def handler(args: argparse.Namespace, svc: Services) -> int:
        library = common_pb2.Library(id=args.library_id, **{field: args.state == "on"})
        updated = _update_library(svc, library, [field])
        if args.json:
            print_json(updated)
        else:
            _print_libraries([updated])
        return 0

    return handler


def cmd_paths_list(args: argparse.Namespace, svc: Services) -> int:
    request = catalog_pb2.ListPathReplacementsRequest(server_id=args.server_id, page_size=1000)
    reply = svc.call("catalog", svc.catalog.ListPathReplacements, request)
    if args.json:
        print_json(list(reply.rules))
    else:
        print_table(
            "Path replacements", ["plex path", "local path"], [(r.plex_path, r.local_path) for r in reply.rules]
        )
    return 0


def cmd_paths_set(args: argparse.Namespace, svc: Services) -> int:
    rules = []
    for rule in args.rules:
        plex_path, sep, local_path = rule.partition("=")
        if not sep:
            raise CliError(f"invalid rule {rule!r}: write PLEX_PATH=LOCAL_PATH, e.g. /data/movies=/mnt/movies")
        rules.append(common_pb2.PathReplacement(plex_path=plex_path, local_path=local_path))
    request = catalog_pb2.SetPathReplacementsRequest(server_id=args.server_id, rules=rules)
    reply = svc.call("catalog", svc.catalog.SetPathReplacements, request)
    if args.json:
        print_json(list(reply.rules))
    else:
        print_table(
            "Path replacements", ["plex path", "local path"], [(r.plex_path, r.local_path) for r in reply.rules]
        )
    return 0


# ---- items and stats ---------------------------------------------------------------------------------


def _item_rows(items: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            item.id,
            enum_label(common_pb2.ItemKind.Name(item.kind)),
            item.title,
            item.year or "",
            enum_label(common_pb2.ItemState.Name(item.state)),
            item.rating_key,
        )
        for item in items
    ]


def cmd_items_list(args: argparse.Namespace, svc: Services) -> int:
    request = catalog_pb2.ListItemsRequest(
        library_id=args.library or "",
        kind=_kind(args.kind) if args.kind else common_pb2.ITEM_KIND_UNSPECIFIED,
        state=_state(args.state) if args.state else common_pb2.ITEM_STATE_UNSPECIFIED,
        page_size=args.limit,
        page_token=args.page_token or "",
    )
    reply = svc.call("catalog", svc.catalog.ListItems, request)
    if args.json:
        print_json({"items": [to_dict(i) for i in reply.items], "next_page_token": reply.next_page_token})
        return 0
    print_table("Items", ["id", "kind", "title", "year", "state", "rating key"], _item_rows(list(reply.items)))
    if reply.next_page_token:
        print(f"more: --page-token {reply.next_page_token}")
    return 0


def cmd_items_search(args: argparse.Namespace, svc: Services) -> int:
    request = catalog_pb2.SearchItemsRequest(query=args.query, library_id=args.library or "", page_size=args.limit)
    reply = svc.call("catalog", svc.catalog.SearchItems, request)
    if args.json:
        print_json(list(reply.results))
        return 0
    rows = [(*row, f"{r.score:.3f}", ",".join(r.matched_fields)) for row, r in
            zip(_item_rows([r.item for r in reply.results]), reply.results, strict=True)]  # fmt: skip
    print_table(
        f"Search: {args.query}", ["id", "kind", "title", "year", "state", "rating key", "score", "matched"], rows
    )
    return 0


def cmd_items_show(args: argparse.Namespace, svc: Services) -> int:
    item = svc.call("catalog", svc.catalog.GetItem, catalog_pb2.GetItemRequest(item_id=args.item_id)).item
    if args.json:
        print_json(item)
        return 0
    print(f"{item.title} ({item.year or '?'}) — {enum_label(common_pb2.ItemKind.Name(item.kind))}, "
          f"{enum_label(common_pb2.ItemState.Name(item.state))}")  # fmt: skip
    if item.tagline:
        print(f"  {item.tagline}")
    if item.plot:
        print(f"  {item.plot}")
    for label, values in (("genres", item.genres), ("studios", item.studios), ("countries", item.countries),
                          ("labels", item.labels), ("networks", item.networks)):  # fmt: skip
        if values:
            print(f"  {label}: {', '.join(values)}")
    if item.guids:
        print("  guids: " + ", ".join(g.uri for g in item.guids))
    credits = [f"{c.name}" + (f" as {c.character}" if c.character else "") for c in item.credits]
    if credits:
        print("  credits: " + ", ".join(credits[:12]) + (" …" if len(credits) > 12 else ""))
    for version in item.media:
        for part in version.parts:
            print(f"  file: {part.plex_path} -> {part.local_path or '(no local path)'} "
                  f"[{enum_label(common_pb2.ItemState.Name(part.state))}], {len(part.streams)} streams")  # fmt: skip
    if item.chapters:
        print(f"  chapters: {len(item.chapters)}")
    return 0


def cmd_stats(args: argparse.Namespace, svc: Services) -> int:
    request = catalog_pb2.GetLibraryStatsRequest(library_id=args.library or "")
    reply = svc.call("catalog", svc.catalog.GetLibraryStats, request)
    if args.json:
        print_json(reply)
        return 0
    rows = [
        (enum_label(common_pb2.ItemKind.Name(c.kind)), enum_label(common_pb2.ItemState.Name(c.state)), c.count)
        for c in reply.counts
    ]
    print_table("Items by kind and state", ["kind", "state", "count"], rows)
    print(f"total {reply.total}, collections {reply.collections}")
    return 0


# ---- argument parsing --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plexsync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(parent: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help_text)
        p.set_defaults(handler=handler)
        return p

    login = command(sub, "login", cmd_login, "log in to plex.tv with a PIN")
    login.add_argument("--timeout", type=float, default=0, help="seconds to wait for approval")

    servers = sub.add_parser("servers", help="Plex servers").add_subparsers(dest="action", required=True)
    command(servers, "list", cmd_servers_list, "list servers")
    add = command(servers, "add", cmd_servers_add, "add a server by URL and token")
    add.add_argument("url")
    add.add_argument("--token", required=True)
    add.add_argument("--name")
    discover = command(servers, "discover", cmd_servers_discover, "discover servers through plex.tv")
    discover.add_argument("--gdm", action="store_true", help="also search the local network (GDM)")
    check = command(servers, "check", diagnostics.cmd_servers_check, "probe connections (latency, TLS, winner)")
    check.add_argument("server_id", nargs="?", help="one server (default: every server)")
    command(servers, "sync", cmd_servers_sync, "register the server's libraries").add_argument("server_id")
    command(servers, "remove", cmd_servers_remove, "forget a server").add_argument("server_id")
    watch_status = command(servers, "watch-status", cmd_servers_watch_status, "the real-time watchers' state")
    watch_status.add_argument("--server", help="only this server's watcher")

    libraries = sub.add_parser("libraries", help="libraries").add_subparsers(dest="action", required=True)
    command(libraries, "list", cmd_libraries_list, "list libraries").add_argument("--server")
    command(libraries, "enable", cmd_libraries_toggle(True), "include in syncs").add_argument("library_id")
    command(libraries, "disable", cmd_libraries_toggle(False), "exclude from syncs").add_argument("library_id")
    interval = command(libraries, "set-interval", cmd_libraries_set_interval, "set the refresh interval")
    interval.add_argument("library_id")
    interval.add_argument("interval", help="e.g. 30m, 6h, 1d; 'default' for the scheduler's")
    remote = command(
        libraries,
        "remote-streaming",
        cmd_libraries_setting("remote_streaming_enabled"),
        "missing local files stream from Plex",
    )
    remote.add_argument("library_id")
    remote.add_argument("state", choices=["on", "off"])
    realtime = command(
        libraries, "realtime", cmd_libraries_setting("realtime_enabled"), "apply Plex's changes within seconds"
    )
    realtime.add_argument("library_id")
    realtime.add_argument("state", choices=["on", "off"])

    paths = sub.add_parser("paths", help="path replacements").add_subparsers(dest="action", required=True)
    command(paths, "list", cmd_paths_list, "list a server's rules").add_argument("server_id")
    set_paths = command(paths, "set", cmd_paths_set, "replace a server's rules")
    set_paths.add_argument("server_id")
    set_paths.add_argument("rules", nargs="*", help="PLEX_PATH=LOCAL_PATH (none clears the rules)")
    test_paths = command(paths, "test", diagnostics.cmd_paths_test, "what a scan makes of a library's files")
    test_paths.add_argument("library_id")
    test_paths.add_argument("--sample", type=int, default=10, help="how many items (at most 100)")

    register(sub, command)
    changes.register(sub, command)
    audit.register(sub, command)
    diagnostics.register(sub, command)
    rules.register(sub, command)

    items = sub.add_parser("items", help="the catalog").add_subparsers(dest="action", required=True)
    items_list = command(items, "list", cmd_items_list, "list items")
    items_list.add_argument("--library")
    items_list.add_argument("--kind")
    items_list.add_argument("--state")
    items_list.add_argument("--limit", type=int, default=25)
    items_list.add_argument("--page-token")
    search = command(items, "search", cmd_items_search, "search titles, people, genres")
    search.add_argument("query")
    search.add_argument("--library")
    search.add_argument("--limit", type=int, default=20)
    command(items, "show", cmd_items_show, "everything about one item").add_argument("item_id")

    command(sub, "stats", cmd_stats, "item counts by kind and state").add_argument("--library")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    services = Services(Endpoints.from_env())
    try:
        handler: Handler = args.handler
        return handler(args, services)
    except CliError as exc:
        if getattr(args, "json", False):
            print_json({"error": str(exc), "component": exc.component})
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        services.close()


if __name__ == "__main__":
    sys.exit(main())
