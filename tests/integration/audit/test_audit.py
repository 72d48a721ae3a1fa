"""The audit log against the real services: each kind of change and every refused call leaves a row in the owning
service's schema and an event on NATS, no token ever reaches either, ListAuditEvents pages and filters, and
`plexsync audit` merges the four logs.

The tests run in file order on one stack: the first three make the changes and refusals, the later ones read
what they left."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import nats
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js.api import DeliverPolicy
from plexsync.common.db import libpq_url
from plexsync.common.grpc_errors import field_violations
from plexsync.devstack.process import start_fakeplex
from plexsync.fakeplex.control import FakePlexControl
from plexsync.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    catalog_pb2,
    catalog_pb2_grpc,
    common_pb2,
    scanner_pb2,
    scanner_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

from tests.support.stack import ServiceStack, reset_jetstream

pytestmark = pytest.mark.timeout(300)

SERVICES = ("auth", "catalog", "scanner", "scheduler")
SPEC: dict[str, Any] = {"seed": 7, "sections": [{"kind": "movie", "title": "Films", "count": 3}]}
FAKEPLEX_ARGS = ["--host", "127.0.0.1", "--port", "0", "--pin-auto-approve-after", "1", "--remote-host", "",
                 "--relay-listen", "", "--library-spec", json.dumps(SPEC),
                 # A plex.tv account token of its own, so the tokens stored for the account and the server differ.
                 "--account-token", "acct-" + secrets.token_urlsafe(12)]  # fmt: skip


class Stack:
    """The module's services with sync stubs, the fakeplex it talks to, and what the first test made."""

    def __init__(self, services: ServiceStack, fake: dict[str, Any]) -> None:
        self.services = services
        self.fake = fake
        self.channels = {name: grpc.insecure_channel(services.addresses[name]) for name in SERVICES}
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channels["auth"])
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self.channels["catalog"])
        self.scanner = scanner_pb2_grpc.ScannerServiceStub(self.channels["scanner"])
        self.scheduler = scheduler_pb2_grpc.SchedulerServiceStub(self.channels["scheduler"])
        self.made: dict[str, str] = {}

    def audit(self, service: str) -> audit_pb2_grpc.AuditServiceStub:
        return audit_pb2_grpc.AuditServiceStub(self.channels[service])

    def md(self, identity: str = "cli") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.services.tokens[identity]}"),)

    def events(self, service: str, **filters: Any) -> list[audit_pb2.AuditEvent]:
        """Every event of one service matching the filters, newest first (all pages)."""
        found: list[audit_pb2.AuditEvent] = []
        request = audit_pb2.ListAuditEventsRequest(page_size=1000, **filters)
        while True:
            reply = self.audit(service).ListAuditEvents(request, metadata=self.md(), timeout=15)
            found.extend(reply.events)
            if not reply.next_page_token:
                return found
            request.page_token = reply.next_page_token

    def secrets(self) -> list[str]:
        """Every token of the deployment: fakeplex's server and account tokens, every service token."""
        return [self.fake["token"], self.fake["account_token"], *self.services.tokens.values()]

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


@pytest.fixture(scope="module")
def stack(service_stack: ServiceStack, nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    asyncio.run(reset_jetstream(nats_url))
    log = Path(tmp_path_factory.mktemp("fakeplex")) / "fakeplex.log"
    child, fake = start_fakeplex(FAKEPLEX_ARGS, log)
    try:
        service_stack.extra_env.update(
            {
                "PLEXSYNC_TOKEN_KEYS": "t1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
                "PLEXSYNC_PLEX_TV_URL": fake["url"],
                "PLEXSYNC_GDM_ENABLED": "false",
                "PLEXSYNC_SCHEDULER_SERVER_SYNC_SECONDS": "86400",
                "PLEXSYNC_SCHEDULER_TICK_SECONDS": "3600",
            }
        )
        for name in SERVICES:
            service_stack.reserve(name)
        for name in SERVICES:
            service_stack.start(name)
        s = Stack(service_stack, fake)
        try:
            yield s
        finally:
            s.close()
    finally:
        child.stop(timeout=5)


def rows(stack: Stack, schema: str) -> list[dict[str, Any]]:
    with psycopg.connect(libpq_url(stack.services.database_url)) as conn:
        cur = conn.execute(f"SELECT row_to_json(a)::text FROM {schema}.audit_events a ORDER BY id")
        return [json.loads(r[0]) for r in cur.fetchall()]


def raw_rows(stack: Stack, schema: str) -> list[str]:
    """Each row as PostgreSQL's text of every column, for a search that cannot miss a column."""
    with psycopg.connect(libpq_url(stack.services.database_url)) as conn:
        return [r[0] for r in conn.execute(f"SELECT a::text FROM {schema}.audit_events a").fetchall()]


def nats_audit_messages(nats_url: str) -> list[tuple[str, bytes]]:
    """(subject, payload) of every audit event in the events stream."""

    async def read() -> list[tuple[str, bytes]]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            sub = await js.subscribe("plexsync.v1.audit.>", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
            found: list[tuple[str, bytes]] = []
            while True:
                try:
                    msg = await sub.next_msg(timeout=2)
                except nats.errors.TimeoutError:
                    return found
                found.append((msg.subject, msg.data))
        finally:
            await nc.close()

    return asyncio.run(read())


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def struct(message: Any, name: str) -> dict[str, Any] | None:
    return MessageToDict(getattr(message, name)) if message.HasField(name) else None


def one(events: list[audit_pb2.AuditEvent], action: str, **match: Any) -> audit_pb2.AuditEvent:
    found = [e for e in events if e.action == action and all(getattr(e, k) == v for k, v in match.items())]
    assert len(found) == 1, f"{action} {match}: {[MessageToDict(e) for e in events]}"
    return found[0]


def test_every_kind_of_change_is_recorded_by_its_owner_with_who_and_before_after(stack: Stack) -> None:
    md = stack.md()
    pin = stack.auth.StartPinLogin(auth_pb2.StartPinLoginRequest(), metadata=md, timeout=15)
    login = stack.auth.CompletePinLogin(
        auth_pb2.CompletePinLoginRequest(pin_id=pin.pin_id, timeout=Duration(seconds=30), discover_servers=True),
        metadata=md,
        timeout=60,
    )
    assert len(login.servers) == 1
    server_id = login.servers[0].id
    # The same server by URL, with a different token it accepts: the stored token is replaced.
    added = stack.auth.AddServer(
        auth_pb2.AddServerRequest(url=stack.fake["url"], token=stack.fake["account_token"], name="Added"),
        metadata=md,
        timeout=30,
    )
    assert added.server.id == server_id
    synced = stack.scanner.SyncServer(scanner_pb2.SyncServerRequest(server_id=server_id), metadata=md, timeout=60)
    library_id = synced.libraries[0].id
    stack.catalog.UpdateLibrary(
        catalog_pb2.UpdateLibraryRequest(
            library=common_pb2.Library(id=library_id, realtime_enabled=False),
            update_mask=FieldMask(paths=["realtime_enabled"]),
        ),
        metadata=md,
        timeout=15,
    )
    for local in ("/mnt/one", "/mnt/two"):
        stack.catalog.SetPathReplacements(
            catalog_pb2.SetPathReplacementsRequest(
                server_id=server_id, rules=[common_pb2.PathReplacement(plex_path="/data", local_path=local)]
            ),
            metadata=md,
            timeout=15,
        )
    stack.scheduler.UpdateSchedule(
        scheduler_pb2.UpdateScheduleRequest(
            schedule=scheduler_pb2.Schedule(library_id=library_id, deep_every=3),
            update_mask=FieldMask(paths=["deep_every"]),
        ),
        metadata=md,
        timeout=30,
    )
    triggered = stack.scheduler.TriggerSync(
        scheduler_pb2.TriggerSyncRequest(library_id=library_id, mode=common_pb2.SCAN_MODE_DEEP),
        metadata=md,
        timeout=30,
    )
    job_id = triggered.jobs[0].id

    def finished() -> bool:
        job = stack.scheduler.GetJob(scheduler_pb2.GetJobRequest(job_id=job_id), metadata=md, timeout=15).job
        return job.status in (common_pb2.JOB_STATUS_SUCCEEDED, common_pb2.JOB_STATUS_FAILED)

    # The scan fetches credentials too; the later tests read a log that no longer grows.
    wait_for("the deep scan to end", finished, timeout=120)
    stack.made.update(server_id=server_id, library_id=library_id, account_id=login.account.id)

    auth = stack.events("auth")
    cli = {"actor_identity": "cli", "actor_role": "admin"}
    logged_in = one(auth, "login.completed", **cli, method="/plexsync.v1.AuthService/CompletePinLogin")
    assert logged_in.resource_type == "account" and logged_in.resource_id == login.account.id
    assert logged_in.peer.startswith("ipv4:127.0.0.1:") and len(logged_in.trace_id) == 32
    one(auth, "token.stored", resource_type="account", resource_id=login.account.id, **cli)
    discovered = one(auth, "servers.discover", **cli)
    after = struct(discovered, "after")
    assert after is not None and after["added"] == 1 and after["servers"][0]["id"] == server_id
    one(auth, "token.stored", resource_type="server", resource_id=server_id, **cli)
    add = one(auth, "server.add", resource_id=server_id, **cli)
    before, after = struct(add, "before"), struct(add, "after")
    assert before is not None and after is not None
    assert before["source"] == "plex_tv" and after["name"] == "Added"
    one(auth, "token.replaced", resource_type="server", resource_id=server_id, **cli)
    fetches = [e for e in auth if e.action == "credentials.fetch"]
    assert fetches and all(e.actor_identity == "scanner" and e.actor_role == "scanner" for e in fetches)
    assert all(e.resource_id == server_id and e.method.endswith("/GetServerCredentials") for e in fetches)
    fetched = struct(fetches[-1], "after")
    assert fetched is not None and fetched["base_url"].startswith("http://127.0.0.1:")

    catalog = stack.events("catalog")
    registered = one(catalog, "libraries.register", actor_identity="scanner", resource_id=server_id)
    assert struct(registered, "after") == {"added": ["Films"], "updated": [], "removed": []}
    update = one(catalog, "library.update", resource_id=library_id, **cli)
    assert (struct(update, "before") or {})["realtime_enabled"] is True
    assert (struct(update, "after") or {})["realtime_enabled"] is False
    rules = [e for e in catalog if e.action == "path_rules.set"]
    assert [struct(e, "after") for e in rules] == [
        {"rules": [{"plex_path": "/data", "local_path": "/mnt/two"}]},
        {"rules": [{"plex_path": "/data", "local_path": "/mnt/one"}]},
    ], "newest first"
    assert struct(rules[0], "before") == {"rules": [{"plex_path": "/data", "local_path": "/mnt/one"}]}
    assert struct(rules[1], "before") == {"rules": []}

    scheduler = stack.events("scheduler")
    schedule = one(scheduler, "schedule.update", resource_id=library_id, **cli)
    assert (struct(schedule, "before") or {}).get("deep_every", 0) != 3
    assert (struct(schedule, "after") or {})["deep_every"] == 3
    deep = one(scheduler, "sync.trigger_deep", resource_type="library", resource_id=library_id, **cli)
    assert (struct(deep, "after") or {})["libraries"] == [library_id]


def test_every_denied_call_is_recorded_by_the_service_that_refused_it(stack: Stack) -> None:
    reader = stack.md("reader")
    attempts: list[tuple[str, Callable[[], Any], str]] = [
        ("auth", lambda: stack.auth.AddServer(auth_pb2.AddServerRequest(url="http://x"), metadata=reader, timeout=15),
         "/plexsync.v1.AuthService/AddServer"),
        ("catalog", lambda: stack.catalog.SetPathReplacements(
            catalog_pb2.SetPathReplacementsRequest(server_id=stack.made["server_id"]), metadata=reader, timeout=15),
         "/plexsync.v1.CatalogService/SetPathReplacements"),
        ("scanner", lambda: stack.scanner.ScanLibrary(
            scanner_pb2.ScanLibraryRequest(library_id=stack.made["library_id"]), metadata=reader, timeout=15),
         "/plexsync.v1.ScannerService/ScanLibrary"),
        ("scheduler", lambda: stack.scheduler.UpdateSchedule(
            scheduler_pb2.UpdateScheduleRequest(), metadata=reader, timeout=15),
         "/plexsync.v1.SchedulerService/UpdateSchedule"),
    ]  # fmt: skip
    for service, attempt, method in attempts:
        with pytest.raises(grpc.RpcError) as refused:
            attempt()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        denied = one(stack.events(service, outcome=audit_pb2.AUDIT_OUTCOME_DENIED, actor_identity="reader"),
                     "call.denied", method=method)  # fmt: skip
        assert denied.actor_role == "reader" and denied.service == service
        assert denied.peer.startswith("ipv4:127.0.0.1:")
        assert denied.reason.startswith("PERMISSION_DENIED: role 'reader'") and method.rsplit("/")[-1] in denied.reason
    unknown = "not-a-token-" + secrets.token_urlsafe(8)
    with pytest.raises(grpc.RpcError) as refused:
        stack.auth.ListServers(
            auth_pb2.ListServersRequest(), metadata=(("authorization", f"Bearer {unknown}"),), timeout=15
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    anonymous = [e for e in stack.events("auth", action="call.denied") if e.method.endswith("/ListServers")]
    assert len(anonymous) == 1 and anonymous[0].actor_identity == "" and anonymous[0].actor_role == ""
    assert anonymous[0].reason.startswith("UNAUTHENTICATED") and unknown not in str(rows(stack, "auth"))
    stack.made["unknown_token"] = unknown


def test_an_invalidated_token_a_removed_server_and_a_refused_credential_fetch_are_recorded(stack: Stack) -> None:
    server = stack.made["server_id"]

    async def revoke() -> None:
        async with FakePlexControl(stack.fake["control_url"]) as control:
            await control.revoke_token(stack.fake["account_token"])  # the server's token since AddServer

    asyncio.run(revoke())
    checked = stack.auth.CheckServer(auth_pb2.CheckServerRequest(server_id=server), metadata=stack.md(), timeout=30)
    assert checked.server.status == auth_pb2.SERVER_STATUS_TOKEN_INVALID
    invalidated = one(stack.events("auth", action="token.invalidated"), "token.invalidated", resource_id=server)
    assert invalidated.actor_identity == "cli" and "401" in invalidated.reason
    stack.auth.RemoveServer(auth_pb2.RemoveServerRequest(server_id=server), metadata=stack.md(), timeout=15)
    removed = one(stack.events("auth", action="server.remove"), "server.remove", resource_id=server)
    assert removed.actor_identity == "cli" and not removed.HasField("after")
    assert (struct(removed, "before") or {})["name"] == "Added"
    one(stack.events("auth", action="token.deleted"), "token.deleted", resource_id=server, actor_identity="cli")
    with pytest.raises(grpc.RpcError) as missing:
        stack.auth.GetServerCredentials(
            auth_pb2.GetServerCredentialsRequest(server_id=server), metadata=stack.md("scanner"), timeout=15
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    failed = one(stack.events("auth", outcome=audit_pb2.AUDIT_OUTCOME_FAILURE), "credentials.fetch", resource_id=server)
    assert failed.actor_identity == "scanner" and failed.reason.startswith("NotFoundError: server")


def test_every_row_is_published_on_nats_as_its_audit_event(stack: Stack, nats_url: str) -> None:
    expected: dict[str, tuple[str, audit_pb2.AuditEvent]] = {}
    for service in SERVICES:
        for event in stack.events(service):
            expected[event.event_id] = (f"plexsync.v1.audit.{service}.{event.action}", event)
    assert {e.service for _, e in expected.values()} == set(SERVICES)

    def published() -> dict[str, tuple[str, audit_pb2.AuditEvent]] | None:
        got = {}
        for subject, data in nats_audit_messages(nats_url):
            event = audit_pb2.AuditEvent.FromString(data)
            got[event.event_id] = (subject, event)
        return got if expected.keys() <= got.keys() else None

    got = wait_for("every audit row on NATS", published)
    for event_id, (subject, event) in expected.items():
        assert got[event_id] == (subject, event)


def test_no_token_appears_in_any_audit_row_or_event(stack: Stack, nats_url: str) -> None:
    tokens = [*stack.secrets(), stack.made["unknown_token"]]
    texts = [text for schema in SERVICES for text in raw_rows(stack, schema)]
    assert len(texts) >= 15
    payloads = [data for _, data in nats_audit_messages(nats_url)]
    assert len(payloads) >= len(texts)
    for token in tokens:
        assert not [t for t in texts if token in t], "a token in an audit row"
        assert not [p for p in payloads if token.encode() in p], "a token in an audit event"


def test_list_audit_events_pages_newest_first_and_filters(stack: Stack) -> None:
    audit, md = stack.audit("auth"), stack.md()
    everything = stack.events("auth")
    assert len(everything) >= 8
    stamps = [(e.time.seconds, e.time.nanos) for e in everything]
    assert stamps == sorted(stamps, reverse=True)
    paged: list[audit_pb2.AuditEvent] = []
    request = audit_pb2.ListAuditEventsRequest(page_size=3)
    while True:
        reply = audit.ListAuditEvents(request, metadata=md, timeout=15)
        assert len(reply.events) <= 3
        paged.extend(reply.events)
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    # Reading (and the reader's refused read below) adds no rows: only changes and refusals are recorded.
    assert [e.event_id for e in paged] == [e.event_id for e in everything]

    def ids(**filters: Any) -> set[str]:
        return {e.event_id for e in stack.events("auth", **filters)}

    assert ids(action="server.add") == {e.event_id for e in everything if e.action == "server.add"}
    assert ids(action="token.") == {e.event_id for e in everything if e.action.startswith("token.")}
    assert len(ids(action="token.")) == 5  # account stored; server stored, replaced, invalidated, deleted
    assert ids(actor_identity="scanner") == {e.event_id for e in everything if e.action == "credentials.fetch"}
    assert len(ids(action="credentials.fetch", outcome=audit_pb2.AUDIT_OUTCOME_FAILURE)) == 1
    server = stack.made["server_id"]
    assert ids(resource_type="server", resource_id=server) == {
        e.event_id for e in everything if e.resource_type == "server" and e.resource_id == server
    }
    assert ids(outcome=audit_pb2.AUDIT_OUTCOME_DENIED) == {e.event_id for e in everything if e.action == "call.denied"}
    assert ids(action="call.denied", outcome=audit_pb2.AUDIT_OUTCOME_SUCCESS) == set()
    oldest, newest = everything[-1].time.ToDatetime(UTC), everything[0].time.ToDatetime(UTC)
    stamp = Timestamp()
    stamp.FromDatetime(newest + timedelta(microseconds=1))
    assert ids(start_time=stamp) == set()
    assert ids(end_time=stamp) == {e.event_id for e in everything}
    stamp.FromDatetime(oldest)
    assert ids(end_time=stamp) == set()
    assert everything[-1].event_id in ids(start_time=stamp)

    first = audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(page_size=1), metadata=md, timeout=15)
    capped = audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(page_size=5000), metadata=md, timeout=15)
    assert len(capped.events) == len(everything), "a page size above the maximum is lowered to it (AIP-158)"
    bad = [
        audit_pb2.ListAuditEventsRequest(page_token="garbage"),
        audit_pb2.ListAuditEventsRequest(page_token=first.next_page_token, action="server.add"),
        audit_pb2.ListAuditEventsRequest(page_size=-1),
        audit_pb2.ListAuditEventsRequest(start_time=stamp, end_time=stamp),
    ]
    fields = []
    for request in bad:
        with pytest.raises(grpc.RpcError) as invalid:
            audit.ListAuditEvents(request, metadata=md, timeout=15)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        fields.append([f for f, _ in field_violations(invalid.value)])
    assert fields == [["page_token"], ["page_token"], ["page_size"], ["end_time"]]
    with pytest.raises(grpc.RpcError) as refused:
        audit.ListAuditEvents(audit_pb2.ListAuditEventsRequest(), metadata=stack.md("reader"), timeout=15)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(stack.events("auth", action="call.denied", actor_identity="reader")) == 2


def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLEXSYNC_")}
    env.update({f"PLEXSYNC_{n.upper()}_ADDR": a for n, a in stack.services.addresses.items()})
    env["PLEXSYNC_CLI_TOKEN"] = stack.services.tokens["cli"]
    return subprocess.run([sys.executable, "-m", "plexsync.cli", "audit", *args], env=env, text=True,
                          capture_output=True, timeout=120)  # fmt: skip


def test_plexsync_audit_merges_every_service_newest_first_and_filters(stack: Stack) -> None:
    result = run_cli(stack, "--json", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    merged = json.loads(result.stdout)
    expected = {e.event_id for service in SERVICES for e in stack.events(service)}
    assert {e["event_id"] for e in merged} == expected
    times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in merged]
    assert times == sorted(times, reverse=True)

    result = run_cli(stack, "--json", "--actor", "reader", "--outcome", "denied")
    assert result.returncode == 0, result.stderr
    denied = json.loads(result.stdout)
    assert {e["service"] for e in denied} == set(SERVICES)
    assert all(e["action"] == "call.denied" and e["actor_role"] == "reader" for e in denied)

    result = run_cli(stack, "--json", "--limit", "2", "--service", "catalog", "--action", "path_rules.set")
    assert [e["after"]["rules"][0]["local_path"] for e in json.loads(result.stdout)] == ["/mnt/two", "/mnt/one"]
    assert run_cli(stack, "--json", "--since", "1d", "--until", "23h").stdout.strip() == "[]"

    table = run_cli(stack, "--service", "auth", "--action", "server.add")
    assert table.returncode == 0, table.stderr
    assert "server.add" in table.stdout and "cli (admin)" in table.stdout and stack.made["server_id"] in table.stdout
    assert '"name": "Added"' in table.stdout, "the detail column shows what changed"

    # A service that cannot be asked is named; the others are still shown, and the exit code says so.
    down = subprocess.run(
        [sys.executable, "-m", "plexsync.cli", "audit", "--json"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PLEXSYNC_")},
             **{f"PLEXSYNC_{n.upper()}_ADDR": a for n, a in stack.services.addresses.items()},
             "PLEXSYNC_SCANNER_ADDR": "127.0.0.1:1", "PLEXSYNC_CLI_TOKEN": stack.services.tokens["cli"]},
        text=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert down.returncode == 1 and "scanner" in down.stderr
    assert {e["service"] for e in json.loads(down.stdout)} == {"auth", "catalog", "scheduler"}
