"""``python -m plexsync.fakeplex``: run the emulator as a process (for the demo, Makefile and benches)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import orjson
from plexsync.fakeplex.library import Library, LibrarySpec
from plexsync.fakeplex.server import DEFAULT_TOKEN, FakePlex, run_forever


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m plexsync.fakeplex", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=32400, help="0 picks a free port")
    p.add_argument("--token", default=DEFAULT_TOKEN, help="server access token (X-Plex-Token)")
    p.add_argument("--extra-token", action="append", default=[], help="another accepted token")
    p.add_argument("--account-token", default=None, help="plex.tv token a PIN yields (default: --token)")
    p.add_argument("--movies", type=int, default=50)
    p.add_argument("--shows", type=int, default=5)
    p.add_argument("--seasons", type=int, default=2, help="seasons per show")
    p.add_argument("--episodes", type=int, default=5, help="episodes per season")
    p.add_argument("--other-videos", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--library-spec", default=None, help="JSON (or a JSON file) with seed and sections")
    p.add_argument("--remote-host", default="127.0.0.2", help="'remote' connection host ('' to disable)")
    p.add_argument("--relay-listen", default="127.0.0.1:0", help="'relay' connection host:port ('' disables)")
    p.add_argument("--extra-listen", action="append", default=[], help="additional host:port listener")
    p.add_argument(
        "--control-listen",
        default=None,
        help="host:port serving plex.tv and the control API that is not one of the server's connections",
    )
    p.add_argument(
        "--tls-listen",
        default=None,
        help="host:port of an 'https' connection (listed as remote) with a generated *.<hash>.plex.direct cert",
    )
    p.add_argument("--tls-ca-file", default=None, help="where to write the CA certificate clients should trust")
    p.add_argument("--request-log-size", type=int, default=2000, help="requests kept for GET /__fakeplex/requests")
    p.add_argument("--friendly-name", default="FakePlex")
    p.add_argument("--pin-auto-approve-after", type=int, default=None, help="approve PINs on the Nth poll")
    p.add_argument("--pin-ttl", type=int, default=1800, help="PIN lifetime in seconds")
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="delay every Plex/plex.tv request (not control calls) this long, like a server over a network",
    )
    p.add_argument("--latency-jitter-ms", type=float, default=None, help="up to this much more (default: 10%%)")
    p.add_argument(
        "--ready-file",
        default=None,
        help="written once listening (JSON: url, control_url, token, connections, tls_ca_file, ...)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.latency_ms < 0 or (args.latency_jitter_ms or 0) < 0:
        parser.error("--latency-ms and --latency-jitter-ms must not be negative")
    if args.library_spec:
        spec = LibrarySpec.from_json(args.library_spec)
    else:
        spec = LibrarySpec.from_sizes(
            movies=args.movies,
            shows=args.shows,
            seasons=args.seasons,
            episodes=args.episodes,
            other_videos=args.other_videos,
            seed=args.seed,
        )
    fp = FakePlex(
        host=args.host,
        port=args.port,
        token=args.token,
        extra_tokens=args.extra_token,
        account_token=args.account_token,
        library=Library(spec),
        remote=args.remote_host or None,
        relay=args.relay_listen or None,
        extra_listen=args.extra_listen,
        friendly_name=args.friendly_name,
        pin_ttl=args.pin_ttl,
        pin_auto_approve_after=args.pin_auto_approve_after,
        fault_seed=args.fault_seed,
        control_listen=args.control_listen or None,
        tls_listen=args.tls_listen or None,
        tls_ca_file=args.tls_ca_file or None,
        request_log_size=args.request_log_size,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
    )

    def ready(server: FakePlex) -> None:
        print(f"fakeplex listening on {server.url} (token {server.token}, pid {os.getpid()})", flush=True)
        if args.ready_file:
            tmp = Path(args.ready_file + ".tmp")
            tmp.write_bytes(orjson.dumps(server.info(), option=orjson.OPT_INDENT_2))
            tmp.replace(args.ready_file)

    async def runner() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_forever(fp, ready)

    try:
        asyncio.run(runner())
    except OSError as e:
        print(f"fakeplex: cannot listen: {e}", file=sys.stderr)
        raise SystemExit(2) from e


if __name__ == "__main__":
    main()
