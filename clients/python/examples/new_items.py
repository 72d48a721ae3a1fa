"""List the items of a library added or changed since a time (plexsync's Python client).

    PLEXSYNC_TOKEN=... python new_items.py --catalog catalog:50051 --ca-file ca.pem \
        --library 5f0c... --since 2026-12-01T00:00:00Z
"""

from __future__ import annotations

import argparse
import datetime as dt
import os

from google.protobuf.timestamp_pb2 import Timestamp
from plexsync_client import Addresses, PlexsyncClient, TlsOptions
from plexsync_client.v1 import catalog_pb2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True, help="the catalog service's host:port")
    parser.add_argument("--library", required=True, help="library id")
    parser.add_argument("--since", required=True, help="ISO 8601 time, e.g. 2026-12-01T00:00:00Z")
    parser.add_argument("--ca-file", help="CA to verify the service with (TLS)")
    parser.add_argument("--insecure", action="store_true", help="plain TCP (a dev stack)")
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()

    since = Timestamp()
    since.FromDatetime(dt.datetime.fromisoformat(args.since.replace("Z", "+00:00")))
    tls = None if args.insecure else TlsOptions(ca_file=args.ca_file)
    with PlexsyncClient(
        Addresses(catalog=args.catalog), token=os.environ["PLEXSYNC_TOKEN"], tls=tls, insecure=args.insecure
    ) as client:
        request = catalog_pb2.ListItemsRequest(library_id=args.library, updated_since=since, page_size=args.page_size)
        for item in client.iter_items(request):  # every page, one item at a time
            print(f"{item.id}\t{item.rating_key}\t{item.title}")


if __name__ == "__main__":
    main()
