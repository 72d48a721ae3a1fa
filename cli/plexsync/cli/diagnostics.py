"""The diagnostics: `servers check`, `token check`, `paths test` and `doctor` (all of them plus each service's
health and version, in one report).

Each check turns what the services answer into problems, "fail" (syncing is broken: no connection answers, a
token is rejected, files are unavailable, a service is down) or "warn" (worth a look: a losing connection is
down, a certificate does not verify, files only stream from Plex). A command exits 1 when there is a failure.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from plexsync.cli.client import DEFAULT_ADDRESSES, CliError, Handler, Services
from plexsync.cli.output import console, enum_label, print_json, print_table, to_dict
from plexsync.common.readiness import LIVENESS_SERVICE
from plexsync.v1 import auth_pb2, catalog_pb2, common_pb2, scanner_pb2, version_pb2, version_pb2_grpc
from rich.markup import escape

Command = Callable[[Any, str, Handler, str], argparse.ArgumentParser]
FAIL, WARN = "fail", "warn"
DEFAULT_DOCTOR_SAMPLE = 5
HEALTH_TIMEOUT = 5.0
# A check of every connection waits for the slowest probe (auth's probe timeout) plus a TLS handshake.
CHECK_TIMEOUT = 60.0


@dataclass(frozen=True)
class Problem:
    level: str  # FAIL or WARN
    check: str  # "services", "servers", "tokens", "paths"
    message: str


def _label(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def _exit_code(problems: list[Problem]) -> int:
    return 1 if any(p.level == FAIL for p in problems) else 0


def _print_problems(problems: list[Problem]) -> None:
    for p in problems:
        style = "red" if p.level == FAIL else "yellow"
        console.print(f"[{style}]{p.level}[/{style}] {p.check}: {escape(p.message)}", highlight=False)


# ---- servers check -----------------------------------------------------------------------------------------


def _tls_text(tls: auth_pb2.ConnectionTls | None) -> str:
    if tls is None or tls.status == auth_pb2.TLS_STATUS_UNSPECIFIED:
        return ""
    label = _label(auth_pb2.TlsStatus.Name(tls.status), "TLS_STATUS_").replace("_", " ")
    if tls.status == auth_pb2.TLS_STATUS_NOT_USED:
        return "- (http)"
    return f"{label}: {tls.error}" if tls.error else label


def server_problems(reply: auth_pb2.CheckServerResponse) -> list[Problem]:
    name = reply.server.name or reply.server.id
    problems: list[Problem] = []
    if reply.server.status == auth_pb2.SERVER_STATUS_TOKEN_INVALID:
        problems.append(Problem(FAIL, "servers", f"{name}: the server rejects the stored token; log in again"))
    elif not reply.HasField("chosen"):
        problems.append(Problem(FAIL, "servers", f"{name}: none of {len(reply.probes)} connection(s) answered"))
    tls = {t.uri: t for t in reply.tls}
    for conn in reply.probes:
        if not conn.reachable and reply.HasField("chosen"):
            problems.append(Problem(WARN, "servers", f"{name}: {conn.uri} is unreachable ({conn.last_error})"))
        check = tls.get(conn.uri)
        if check is not None and check.status == auth_pb2.TLS_STATUS_INVALID:
            problems.append(Problem(WARN, "servers", f"{name}: {conn.uri} has an invalid certificate ({check.error})"))
    return problems


def _print_server_check(reply: auth_pb2.CheckServerResponse) -> None:
    tls = {t.uri: t for t in reply.tls}
    rows = [
        (
            c.uri,
            enum_label(auth_pb2.ConnectionKind.Name(c.kind)),
            "yes" if c.reachable else "no",
            f"{c.latency.ToNanoseconds() / 1e6:.1f} ms" if c.HasField("latency") else "",
            _tls_text(tls.get(c.uri)),
            "wins" if reply.HasField("chosen") and c.uri == reply.chosen.uri else c.last_error,
        )
        for c in reply.probes
    ]
    status = enum_label(auth_pb2.ServerStatus.Name(reply.server.status))
    print_table(f"Connections of {reply.server.name} ({status})", ["uri", "kind", "reachable", "latency", "TLS",
                                                                    "note"], rows)  # fmt: skip


def check_servers(svc: Services, server_id: str) -> list[auth_pb2.CheckServerResponse]:
    if server_id:
        ids = [server_id]
    else:
        ids = [
            s.id for s in svc.call("auth", svc.auth.ListServers, auth_pb2.ListServersRequest(page_size=1000)).servers
        ]
    request = auth_pb2.CheckServerRequest
    return [svc.call("auth", svc.auth.CheckServer, request(server_id=i), timeout=CHECK_TIMEOUT) for i in ids]


def cmd_servers_check(args: argparse.Namespace, svc: Services) -> int:
    replies = check_servers(svc, args.server_id or "")
    problems = [p for reply in replies for p in server_problems(reply)]
    if args.json:
        found = [to_dict(r) | {"problems": [asdict(p) for p in server_problems(r)]} for r in replies]
        print_json(found[0] if args.server_id else found)
        return _exit_code(problems)
    if not replies:
        print("no servers: log in (`plexsync login`) or add one (`plexsync servers add`)")
    for reply in replies:
        _print_server_check(reply)
    _print_problems(problems)
    return _exit_code(problems)


# ---- token check -------------------------------------------------------------------------------------------


def _verdict(value: auth_pb2.TokenVerdict.ValueType) -> str:
    return _label(auth_pb2.TokenVerdict.Name(value), "TOKEN_VERDICT_").replace("_", " ")


def token_problems(reply: auth_pb2.CheckTokenResponse) -> list[Problem]:
    problems: list[Problem] = []
    for a in reply.accounts:
        who = f"account {a.username or a.account_id}"
        if a.plex_tv == auth_pb2.TOKEN_VERDICT_REJECTED:
            problems.append(Problem(FAIL, "tokens", f"{who}: plex.tv rejects the token; log in again"))
        elif a.plex_tv == auth_pb2.TOKEN_VERDICT_UNREACHABLE:
            problems.append(Problem(WARN, "tokens", f"{who}: plex.tv could not be asked ({a.error})"))
    for s in reply.servers:
        who = f"server {s.name or s.server_id}"
        if s.server == auth_pb2.TOKEN_VERDICT_REJECTED:
            problems.append(Problem(FAIL, "tokens", f"{who}: the server rejects its token; log in again"))
        elif s.server == auth_pb2.TOKEN_VERDICT_UNREACHABLE:
            problems.append(Problem(FAIL, "tokens", f"{who}: the token could not be checked ({s.error})"))
        elif s.server == auth_pb2.TOKEN_VERDICT_NO_TOKEN:
            problems.append(Problem(WARN, "tokens", f"{who}: no token stored (found by GDM only); scans need one"))
        if s.plex_tv == auth_pb2.TOKEN_VERDICT_REJECTED:
            problems.append(Problem(WARN, "tokens", f"{who}: plex.tv rejects the server's token"))
    return problems


def _print_tokens(reply: auth_pb2.CheckTokenResponse) -> None:
    print_table("Account tokens", ["account", "plex.tv", "error"],
                [(a.username or a.account_id, _verdict(a.plex_tv), a.error) for a in reply.accounts])  # fmt: skip
    rows = [(s.name or s.server_id, _verdict(s.plex_tv), _verdict(s.server), s.uri, s.error) for s in reply.servers]
    print_table("Server tokens", ["server", "plex.tv", "server", "asked at", "error"], rows)


def check_tokens(svc: Services, server_id: str) -> auth_pb2.CheckTokenResponse:
    request = auth_pb2.CheckTokenRequest(server_id=server_id)
    reply: auth_pb2.CheckTokenResponse = svc.call("auth", svc.auth.CheckToken, request, timeout=CHECK_TIMEOUT)
    return reply


def cmd_token_check(args: argparse.Namespace, svc: Services) -> int:
    reply = check_tokens(svc, args.server or "")
    problems = token_problems(reply)
    if args.json:
        print_json(to_dict(reply) | {"problems": [asdict(p) for p in problems]})
    else:
        _print_tokens(reply)
        _print_problems(problems)
    return _exit_code(problems)


# ---- paths test --------------------------------------------------------------------------------------------


def _rule_text(test: scanner_pb2.PathTest) -> str:
    return f"{test.rule.plex_path} -> {test.rule.local_path}" if test.HasField("rule") else "(no rule matched)"


def path_problems(reply: scanner_pb2.TestPathsResponse) -> list[Problem]:
    problems: list[Problem] = []
    name = reply.library.name or reply.library.id
    for state, level, what in (
        (common_pb2.ITEM_STATE_UNAVAILABLE, FAIL, "unavailable (not here, and remote streaming is off)"),
        (common_pb2.ITEM_STATE_REMOTE_ONLY, WARN, "not here: they only stream from Plex"),
    ):
        bad = [f for f in reply.files if f.state == state]
        if bad:
            example = bad[0]
            problems.append(Problem(level, "paths", f"library {name}: {len(bad)} of {len(reply.files)} sampled "
                                    f"file(s) are {what}, e.g. {example.local_path or '(no file)'} "
                                    f"[{_rule_text(example)}]"))  # fmt: skip
    return problems


def _print_paths(reply: scanner_pb2.TestPathsResponse) -> None:
    streaming = "on" if reply.library.remote_streaming_enabled else "off"
    rows = [
        (
            f.title,
            f.plex_path,
            f.local_path if f.local_path != f.plex_path else "(unchanged)",
            "yes" if f.exists else "no",
            enum_label(common_pb2.ItemState.Name(f.state)),
            _rule_text(f),
        )
        for f in reply.files
    ]
    items = len({f.rating_key for f in reply.files})
    title = (f"Paths of {reply.library.name}: {len(reply.files)} file(s) of {items} sampled item(s) (of "
             f"{reply.total_items}), remote streaming {streaming}")  # fmt: skip
    print_table(title, ["item", "plex path", "local path", "exists", "state", "rule"], rows)
    if not reply.rules:
        print("the server has no path replacements: Plex's paths are used as they are")


def test_paths(svc: Services, library_id: str, sample: int) -> scanner_pb2.TestPathsResponse:
    request = scanner_pb2.TestPathsRequest(library_id=library_id, sample_size=sample)
    reply: scanner_pb2.TestPathsResponse = svc.call("scanner", svc.scanner.TestPaths, request, timeout=CHECK_TIMEOUT)
    return reply


def cmd_paths_test(args: argparse.Namespace, svc: Services) -> int:
    reply = test_paths(svc, args.library_id, args.sample)
    problems = path_problems(reply)
    if args.json:
        print_json(to_dict(reply) | {"problems": [asdict(p) for p in problems]})
    else:
        _print_paths(reply)
        _print_problems(problems)
    return _exit_code(problems)


# ---- doctor ------------------------------------------------------------------------------------------------


@dataclass
class ServiceHealth:
    name: str
    address: str
    readiness: str = ""
    liveness: str = ""
    version: str = ""
    python_version: str = ""
    error: str = ""

    @property
    def serving(self) -> bool:
        return self.readiness == "serving"


def _health(svc: Services, channel: grpc.Channel, service: str) -> str:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    reply = stub.Check(request, metadata=svc.metadata, timeout=HEALTH_TIMEOUT)
    return _label(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), "").replace("_", " ")


def service_health(svc: Services, name: str) -> ServiceHealth:
    """Readiness (the "" health name), liveness (`liveness`) and version of one service."""
    found = ServiceHealth(name, svc.endpoints.addresses.get(name, DEFAULT_ADDRESSES[name]))
    channel = svc._channel(name)
    try:
        found.readiness = _health(svc, channel, "")
    except grpc.RpcError as exc:
        found.readiness, found.error = "unreachable", f"{exc.code().name}: {exc.details()}"
        return found
    try:
        found.liveness = _health(svc, channel, LIVENESS_SERVICE)
    except grpc.RpcError as exc:
        found.liveness, found.error = "unknown", f"liveness: {exc.code().name}: {exc.details()}"
    try:
        version = version_pb2_grpc.VersionServiceStub(channel).GetVersion(
            version_pb2.GetVersionRequest(), metadata=svc.metadata, timeout=HEALTH_TIMEOUT
        )
    except grpc.RpcError as exc:
        found.error = f"GetVersion: {exc.code().name}: {exc.details()}"
    else:
        found.version, found.python_version = version.version, version.python_version
    return found


def health_problems(found: list[ServiceHealth]) -> list[Problem]:
    problems: list[Problem] = []
    for h in found:
        if not h.serving:
            problems.append(Problem(FAIL, "services", f"{h.name} at {h.address} is {h.readiness}"
                                    + (f" ({h.error})" if h.error else "")))  # fmt: skip
        elif h.liveness != "serving":
            problems.append(Problem(FAIL, "services", f"{h.name}: liveness is {h.liveness}"))
        elif not h.version:
            problems.append(Problem(WARN, "services", f"{h.name}: no version ({h.error})"))
    versions = {h.version for h in found if h.version}
    if len(versions) > 1:
        problems.append(
            Problem(WARN, "services", f"the services run different versions: {', '.join(sorted(versions))}")
        )
    return problems


def _libraries(svc: Services) -> Iterator[common_pb2.Library]:
    token = ""
    while True:
        request = catalog_pb2.ListLibrariesRequest(page_size=1000, page_token=token)
        reply = svc.call("catalog", svc.catalog.ListLibraries, request)
        yield from reply.libraries
        token = reply.next_page_token
        if not token:
            return


def doctor_report(svc: Services, sample: int) -> dict[str, Any]:
    """Every check, each one skipped (with a failure saying why) when the service it needs is down."""
    health = [service_health(svc, name) for name in DEFAULT_ADDRESSES]
    problems = health_problems(health)
    serving = {h.name for h in health if h.serving}
    report: dict[str, Any] = {"services": [asdict(h) for h in health], "servers": [], "tokens": None, "paths": []}
    if "auth" in serving:
        try:
            for reply in check_servers(svc, ""):
                report["servers"].append(reply)
                problems.extend(server_problems(reply))
            report["tokens"] = check_tokens(svc, "")
            problems.extend(token_problems(report["tokens"]))
        except CliError as exc:
            problems.append(Problem(FAIL, "servers", str(exc)))
    if {"catalog", "scanner", "auth"} <= serving:
        try:
            libraries = [lib for lib in _libraries(svc) if not lib.removed]
        except CliError as exc:
            problems.append(Problem(FAIL, "paths", str(exc)))
            libraries = []
        for library in libraries:
            try:
                tested = test_paths(svc, library.id, sample)
            except CliError as exc:
                problems.append(Problem(FAIL, "paths", f"library {library.name}: {exc}"))
                continue
            report["paths"].append(tested)
            problems.extend(path_problems(tested))
    report["problems"] = problems
    return report


def _print_doctor(report: dict[str, Any]) -> None:
    health: list[dict[str, str]] = report["services"]
    print_table("Services", ["service", "address", "readiness", "liveness", "version", "python", "error"],
                [(h["name"], h["address"], h["readiness"], h["liveness"], h["version"], h["python_version"],
                  h["error"]) for h in health])  # fmt: skip
    for reply in report["servers"]:
        _print_server_check(reply)
    if report["tokens"] is not None:
        _print_tokens(report["tokens"])
    rows = []
    for reply in report["paths"]:
        counts = {s: sum(1 for f in reply.files if f.state == s) for s in (common_pb2.ITEM_STATE_NORMAL,
                  common_pb2.ITEM_STATE_REMOTE_ONLY, common_pb2.ITEM_STATE_UNAVAILABLE)}  # fmt: skip
        rules = sorted({_rule_text(f) for f in reply.files})
        rows.append((reply.library.name, len(reply.files), *counts.values(), "; ".join(rules)))
    if rows:
        print_table("Paths (a sample of each library)", ["library", "files", "normal", "remote only", "unavailable",
                                                         "rules"], rows)  # fmt: skip
    problems: list[Problem] = report["problems"]
    _print_problems(problems)
    fails = sum(p.level == FAIL for p in problems)
    if problems:
        print(f"doctor: {fails} failure(s), {len(problems) - fails} warning(s)")
    else:
        print("doctor: everything looks fine")


def cmd_doctor(args: argparse.Namespace, svc: Services) -> int:
    report = doctor_report(svc, args.sample)
    problems: list[Problem] = report["problems"]
    if args.json:
        tokens = report["tokens"]
        print_json({
            "ok": _exit_code(problems) == 0,
            "problems": [asdict(p) for p in problems],
            "services": report["services"],
            "servers": [to_dict(r) for r in report["servers"]],
            "tokens": to_dict(tokens) if tokens is not None else None,
            "paths": [to_dict(r) for r in report["paths"]],
        })  # fmt: skip
    else:
        _print_doctor(report)
    return _exit_code(problems)


def register(sub: Any, command: Command) -> None:
    """Add `token check` and `doctor` (`servers check` and `paths test` sit in their groups in main.py)."""
    token = sub.add_parser("token", help="the stored Plex tokens").add_subparsers(dest="action", required=True)
    check = command(token, "check", cmd_token_check, "are the stored tokens still accepted by plex.tv and servers")
    check.add_argument("--server", help="only this server (and its account)")
    doctor = command(sub, "doctor", cmd_doctor, "check services, servers, tokens and paths; exit 1 on a failure")
    doctor.add_argument("--sample", type=int, default=DEFAULT_DOCTOR_SAMPLE, help="items per library for paths")
