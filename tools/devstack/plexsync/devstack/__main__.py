"""`python -m plexsync.devstack up|down|status|env`: the developer stack behind `make up` / `make down`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from plexsync.devstack import infra
from plexsync.devstack.process import ServiceStartError
from plexsync.devstack.stack import Stack, login_hint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plexsync.devstack", description=__doc__)
    parser.add_argument("--dir", type=Path, default=infra.DEV_DIR, help="state folder (default .dev)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start PostgreSQL, NATS, fakeplex and every service (idempotent)")
    up.add_argument("--tls", action="store_true", help="serve mutual TLS with dev certificates (<dir>/tls)")
    up.add_argument("fakeplex_args", nargs=argparse.REMAINDER, help="extra fakeplex arguments after --")
    sub.add_parser("down", help="stop everything `up` started")
    sub.add_parser("status", help="show what runs")
    env = sub.add_parser("env", help="print shell exports for talking to the stack as IDENTITY")
    env.add_argument("--identity", default="cli")
    args = parser.parse_args(argv)
    stack = Stack(args.dir)

    if args.command == "up":
        extra = [a for a in args.fakeplex_args if a != "--"]
        try:
            state = stack.up(fakeplex_args=extra, tls=args.tls)
        except (ServiceStartError, RuntimeError) as exc:
            print(f"make up failed: {exc}", file=sys.stderr)
            return 1
        for name, status in stack.status().items():
            print(f"  {name:<10} {status}")
        for note in stack.notes:
            print(f"  {note}")
        print(f"fakeplex: {state.fakeplex_url}   logs: {stack.log_dir}")
        print(login_hint(state.fakeplex_url))
        if state.tls_dir:
            print(f"gRPC: mutual TLS, dev CA and certificates in {state.tls_dir} (`env` exports the CLI's)")
        else:
            print("gRPC: plain TCP, no TLS (PLEXSYNC_GRPC_INSECURE=true; `make up TLS=1` for mutual TLS)")
        print('talk to it:  eval "$(.venv/bin/python -m plexsync.devstack env)"   stop it:  make down')
        return 0
    if args.command == "down":
        stopped = stack.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    if args.command == "status":
        report = stack.status()
        if not report:
            print("nothing started (run `make up`)")
        for name, status in report.items():
            print(f"  {name:<10} {status}")
        return 0
    loaded = stack.load()
    if loaded is None:
        print("no stack: run `make up` first", file=sys.stderr)
        return 1
    for key, value in loaded.service_env(args.identity).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
