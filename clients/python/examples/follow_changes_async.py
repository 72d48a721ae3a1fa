"""Follow the catalog's item changes from asyncio, one JSON line each, resuming where a previous run stopped.

    PLEXSYNC_TOKEN=... python follow_changes_async.py --catalog catalog:50051 --ca-file ca.pem --state last-token.txt

follow_changes.py with plexsync_client.aio: the last change's resume token is written to --state after each change,
so the next run continues exactly after it (and the feed reconnects by itself when the catalog restarts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from plexsync_client import Addresses, TlsOptions
from plexsync_client.aio import AsyncPlexsyncClient
from plexsync_client.v1 import common_pb2


async def follow(args: argparse.Namespace) -> None:
    token = args.state.read_text().strip() if args.state.exists() else ""
    tls = None if args.insecure else TlsOptions(ca_file=args.ca_file)
    async with AsyncPlexsyncClient(
        Addresses(catalog=args.catalog), token=os.environ["PLEXSYNC_TOKEN"], tls=tls, insecure=args.insecure
    ) as client:
        feed = client.watch_changes(resume_token=token, library_id=args.library, from_oldest=args.from_oldest)
        seen = 0
        async for change in feed:
            seen += 1
            kind = common_pb2.ChangeKind.Name(change.kind).removeprefix("CHANGE_KIND_")
            print(json.dumps({"kind": kind, "item_id": change.item_id, "title": change.title}), flush=True)
            args.state.write_text(feed.resume_token)
            if seen == args.max:
                feed.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True, help="the catalog service's host:port")
    parser.add_argument("--state", required=True, type=Path, help="file keeping the last resume token")
    parser.add_argument("--library", default="", help="only this library's changes")
    parser.add_argument("--from-oldest", action="store_true", help="without a saved token: from the oldest kept")
    parser.add_argument("--max", type=int, default=0, help="stop after this many changes (0: never)")
    parser.add_argument("--ca-file", help="CA to verify the service with (TLS)")
    parser.add_argument("--insecure", action="store_true", help="plain TCP (a dev stack)")
    asyncio.run(follow(parser.parse_args()))


if __name__ == "__main__":
    main()
