"""`rules set|show|clear|test|prune LIB`: a library's content-based sync rules.

The expression says what to sync: items it is true for are kept, the others become EXCLUDED at the next scan
(an incremental one is enough) and come back when a later rule keeps them. `rules test` is a dry run: what a
scan would keep and exclude, read from Plex, without changing anything. `rules prune LIB on` makes each completed
scan delete the excluded items instead (one that matches again then comes back as a new item, with a new id).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from google.protobuf import field_mask_pb2
from plexsync.cli.client import Handler, Services
from plexsync.cli.output import console, print_json, print_table
from plexsync.v1 import catalog_pb2, common_pb2, scanner_pb2
from rich.markup import escape

Command = Callable[[Any, str, Handler, str], argparse.ArgumentParser]
# A dry run lists the whole library (and fetches metadata for what its listing cannot decide).
TEST_TIMEOUT = 600.0


def _show(library: common_pb2.Library) -> None:
    rules = library.sync_rules
    what = escape(rules.expression) if rules.expression else "(none: every item is synced)"
    console.print(f"{escape(library.name or library.id)}: keep items where {what}", highlight=False)
    if library.prune_excluded:
        console.print("items the rule leaves out are deleted from the catalog after each scan", highlight=False)
    elif rules.expression:
        console.print("items the rule leaves out are kept in the catalog as EXCLUDED", highlight=False)


def _set(svc: Services, request: catalog_pb2.SetLibraryRulesRequest, as_json: bool) -> int:
    reply = svc.call("catalog", svc.catalog.SetLibraryRules, request)
    if as_json:
        print_json(reply.library.sync_rules)
    else:
        _show(reply.library)
    return 0


def cmd_rules_set(args: argparse.Namespace, svc: Services) -> int:
    expression = args.expression
    if args.exclude:
        expression = f"not ({expression})"
    request = catalog_pb2.SetLibraryRulesRequest(library_id=args.library_id, expression=expression)
    return _set(svc, request, args.json)


def cmd_rules_clear(args: argparse.Namespace, svc: Services) -> int:
    return _set(svc, catalog_pb2.SetLibraryRulesRequest(library_id=args.library_id), args.json)


def cmd_rules_show(args: argparse.Namespace, svc: Services) -> int:
    reply = svc.call("catalog", svc.catalog.GetLibrary, catalog_pb2.GetLibraryRequest(library_id=args.library_id))
    if args.json:
        print_json(reply.library.sync_rules)
    else:
        _show(reply.library)
    return 0


def cmd_rules_test(args: argparse.Namespace, svc: Services) -> int:
    request = scanner_pb2.TestRulesRequest(
        library_id=args.library_id, expression=args.expression or "", sample_size=args.sample
    )
    reply: scanner_pb2.TestRulesResponse = svc.call("scanner", svc.scanner.TestRules, request, timeout=TEST_TIMEOUT)
    if args.json:
        print_json(reply)
        return 0
    total = reply.kept + reply.excluded
    console.print(
        f"{escape(reply.expression)}: keeps {reply.kept} of {total}, excludes {reply.excluded} "
        f"({reply.decided_by_metadata} decided on full metadata, {reply.plex_requests} Plex requests)",
        highlight=False,
    )
    if reply.excluded_by_rule:
        print_table("Excluded by", ["rule", "items"], [(r.rule, r.count) for r in reply.excluded_by_rule])
    print_table("Kept (sample)", ["rating key", "title"], [(s.rating_key, s.title) for s in reply.kept_samples])
    print_table(
        "Excluded (sample)",
        ["rating key", "title", "rule"],
        [(s.rating_key, s.title, s.rule) for s in reply.excluded_samples],
    )
    return 0


def cmd_rules_prune(args: argparse.Namespace, svc: Services) -> int:
    request = catalog_pb2.UpdateLibraryRequest(
        library=common_pb2.Library(id=args.library_id, prune_excluded=args.state == "on"),
        update_mask=field_mask_pb2.FieldMask(paths=["prune_excluded"]),
    )
    library = svc.call("catalog", svc.catalog.UpdateLibrary, request).library
    if args.json:
        print_json(library)
    else:
        _show(library)
    return 0


def register(sub: Any, command: Command) -> None:
    """Add `rules set|show|clear|test|prune` to the `plexsync` parser."""
    rules = sub.add_parser("rules", help="content-based sync rules of a library").add_subparsers(
        dest="action", required=True
    )
    set_ = command(rules, "set", cmd_rules_set, "sync only the items the expression is true for")
    set_.add_argument("library_id")
    set_.add_argument("expression", help="e.g. 'rating not in (R, NC-17) and resolution >= 1080'")
    set_.add_argument("--exclude", action="store_true", help="the expression says what to leave out instead")
    command(rules, "show", cmd_rules_show, "print a library's rule").add_argument("library_id")
    command(rules, "clear", cmd_rules_clear, "sync every item again").add_argument("library_id")
    test = command(rules, "test", cmd_rules_test, "dry run: what a scan would keep and exclude")
    test.add_argument("library_id")
    test.add_argument("expression", nargs="?", help="the rule to try (default: the library's own)")
    test.add_argument("--sample", type=int, default=10, help="items of each kind to show (at most 100)")
    prune = command(rules, "prune", cmd_rules_prune, "delete excluded items after each scan (on) or keep them (off)")
    prune.add_argument("library_id")
    prune.add_argument("state", choices=("on", "off"))
