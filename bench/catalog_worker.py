"""Catalog ingest worker: CPU per movie of `bulk.speculate` by piece size, in paired runs.

    .venv/bin/python bench/catalog_worker.py                       # 1,000 movies, pieces 1000/400/200/100/50
    .venv/bin/python bench/catalog_worker.py --rounds 60 --pieces 1000,100

The worker turns a WriteItems batch of new items into COPY payloads (parse, flatten ~330 protobuf fields per
movie into ~33 rows, column checks, COPY text). This times that work in this process, without gRPC or
PostgreSQL, for the same 1,000 movies as bench/catalog_ingest.py, cut into pieces of each size. The machine
this runs on is shared and its speed drifts by up to 2x within seconds, so the variants run one after the
other in every round and each is compared with the one-piece run of the same round (the median of those
paired ratios is the figure to quote; the medians of the raw times move with the machine).
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import time
import uuid

from plexsync.catalog import bulk, ingest
from plexsync.catalog.writer import COPY_TABLES
from plexsync.v1 import catalog_pb2

from bench.catalog_ingest import build_movie


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000, help="movies per batch")
    parser.add_argument("--rounds", type=int, default=30, help="paired rounds")
    parser.add_argument("--pieces", default="1000,400,200,100,50", help="piece sizes (items), comma-separated")
    args = parser.parse_args()
    sizes = [int(s) for s in args.pieces.split(",")]
    reference = max(sizes)

    request = catalog_pb2.WriteItemsRequest(library_id=str(uuid.uuid4()))
    request.items.extend(build_movie(n) for n in range(args.items))
    incoming = ingest.prepare_batch(request, args.items)
    ids = ingest.uuid7_texts(len(incoming))
    states = [inc.state for inc in incoming]
    digests = [inc.digest for inc in incoming]
    library_id = uuid.UUID(request.library_id)
    chunks = {
        size: [ingest.frame_items([inc.wire for inc in incoming[k : k + size]]) for k in range(0, len(incoming), size)]
        for size in sizes
    }
    expected = bulk.speculate(chunks[reference], ids, states, digests, library_id, COPY_TABLES)
    assert expected is not None
    for size in sizes:  # every piece size must give the same payloads
        assert bulk.speculate(chunks[size], ids, states, digests, library_id, COPY_TABLES) == expected

    times: dict[int, list[float]] = {size: [] for size in sizes}
    gc.disable()  # as in the worker (writer.no_gc)
    for _ in range(args.rounds):
        for size in sizes:
            start = time.perf_counter()
            bulk.speculate(chunks[size], ids, states, digests, library_id, COPY_TABLES)
            times[size].append(time.perf_counter() - start)
    gc.enable()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nworker flattening: {args.items} movies (bench/catalog_ingest.py's), {args.rounds} paired rounds, "
        f"peak RSS of this process {peak_mb:.0f} MB"
    )
    print(
        "| piece (items) | seconds per batch (median) | µs per movie | items/s | ratio to one piece (paired median) |"
    )
    print("|---:|---:|---:|---:|---:|")
    base = times[reference]
    for size in sizes:
        median = statistics.median(times[size])
        ratio = statistics.median(t / b for t, b in zip(times[size], base, strict=True))
        print(f"| {size} | {median:.4f} | {median * 1e6 / args.items:.1f} | {args.items / median:,.0f} | {ratio:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
