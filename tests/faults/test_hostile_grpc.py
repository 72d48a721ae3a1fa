"""Hostile gRPC input to every public RPC of every service, as real processes: a status code and a clear message,
never UNKNOWN or INTERNAL, never a crash, and the data already there left alone.

One module-scoped stack (catalog, auth, scanner, scheduler, fakeplex, PostgreSQL, NATS). The methods come from
the generated descriptors, so a new RPC is covered without touching this file. Calls are raw bytes on a
synchronous channel: the bytes sent are exactly the ones chosen, and hypothesis drives a plain function.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import importlib
import json
import os
import pkgutil
import random
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import plexsync.v1
import psutil
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plexsync.common.grpc_errors import field_violations
from plexsync.common.grpc_server import MAX_MESSAGE_BYTES
from plexsync.v1 import auth_pb2, catalog_pb2, common_pb2, scanner_pb2, scheduler_pb2

from tests.integration.scanner.support import fakeplex_process
from tests.support.stack import ServiceStack, reset_jetstream

pytestmark = pytest.mark.timeout(240)

SPEC: dict[str, Any] = {"seed": 16, "sections": [{"kind": "movie", "title": "Reference", "count": 4}]}
SCHEDULER_ENV = {
    "PLEXSYNC_SCHEDULER_TICK_SECONDS": "0.5",
    "PLEXSYNC_SCHEDULER_LEADER_POLL_SECONDS": "0.5",
    "PLEXSYNC_SCHEDULER_REFRESH_INTERVAL_SECONDS": "86400",
    "PLEXSYNC_SCHEDULER_SERVER_SYNC_SECONDS": "86400",
}
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
CALLERS = ("cli", "scanner", "scheduler", "catalog", "auth")  # tried in turn when a method is restricted
STREAM_WINDOW = 0.2  # a response stream still open after this is fine: it is cancelled
CORRUPT = b"\xff\xff\xff\xff\x0f"  # a tag whose varint never ends properly
TRUNCATED = b"\x0a\x10ab"  # field 1 announces 16 bytes, two follow


def _services() -> list[Any]:
    found = []
    for module in pkgutil.iter_modules(plexsync.v1.__path__):
        if module.name.endswith("_pb2"):
            descriptor = importlib.import_module(f"plexsync.v1.{module.name}").DESCRIPTOR
            found.extend(descriptor.services_by_name.values())
    return sorted(found, key=lambda s: s.full_name)


SERVICES = _services()
METHODS: list[MethodDescriptor] = [m for s in SERVICES for m in s.methods]
IDS = [f"{m.containing_service.name}.{m.name}" for m in METHODS]


# Served by every process (the shared bootstrap registers them); the catalog stands for all of them here.
EVERYWHERE = {"AuditService", "VersionService"}


def process_of(method: MethodDescriptor) -> str:
    service = method.containing_service.name
    return "catalog" if service in EVERYWHERE else service.removesuffix("Service").lower()


# ----------------------------------------------------------------------------- the stack and raw calls
class Calls:
    """Synchronous channels to every service; raw-bytes calls of any streaming shape."""

    def __init__(self, stack: ServiceStack) -> None:
        self.stack = stack
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self.channels = {name: grpc.insecure_channel(addr, options=options) for name, addr in stack.addresses.items()}
        self.callers: dict[str, str] = {}

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()

    def call(
        self, method: MethodDescriptor, body: bytes, identity: str = "cli", timeout: float = 15
    ) -> tuple[grpc.StatusCode, str]:
        """(code, details) of one call carrying `body`; OK also for a response stream still open after a while."""
        channel = self.channels[process_of(method)]
        path = f"/{method.containing_service.full_name}/{method.name}"
        metadata = (("authorization", f"Bearer {self.stack.tokens[identity]}"),)
        try:
            if method.server_streaming:
                if method.client_streaming:
                    stream = channel.stream_stream(path)(iter([body]), timeout=STREAM_WINDOW, metadata=metadata)
                else:
                    stream = channel.unary_stream(path)(body, timeout=STREAM_WINDOW, metadata=metadata)
                for _ in stream:
                    stream.cancel()
                    return grpc.StatusCode.OK, ""
            elif method.client_streaming:
                channel.stream_unary(path)(iter([body]), timeout=timeout, metadata=metadata)
            else:
                channel.unary_unary(path)(body, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if method.server_streaming and code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                return grpc.StatusCode.OK, ""
            return code, details
        return grpc.StatusCode.OK, ""

    def caller(self, method: MethodDescriptor) -> str:
        """An identity allowed to call `method` (the cli for most; a peer service for internal ones)."""
        key = method.full_name
        if key not in self.callers:
            for identity in CALLERS:
                code, _ = self.call(method, CORRUPT, identity)
                if code != grpc.StatusCode.PERMISSION_DENIED:
                    self.callers[key] = identity
                    break
            else:
                raise AssertionError(f"no identity in {CALLERS} may call {method.full_name}")
        return self.callers[key]

    def stub_call(self, service: str, method: str, request: Message, response: type[Message]) -> Any:
        path = f"/plexsync.v1.{service}/{method}"
        channel = self.channels[service.removesuffix("Service").lower()]
        metadata = (("authorization", f"Bearer {self.stack.tokens['cli']}"),)
        raw = channel.unary_unary(path)(request.SerializeToString(), timeout=15, metadata=metadata)
        return response.FromString(raw)

    def serving(self, name: str) -> bool:
        raw = self.channels[name].unary_unary("/grpc.health.v1.Health/Check")(
            health_pb2.HealthCheckRequest().SerializeToString(), timeout=5
        )
        return bool(health_pb2.HealthCheckResponse.FromString(raw).status == health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with fakeplex_process(tmp_path_factory.mktemp("fakeplex"), "--library-spec", json.dumps(SPEC)) as info:
        yield info


@pytest.fixture(scope="module")
def calls(service_stack: ServiceStack, fake: dict[str, Any], nats_url: str) -> Iterator[Calls]:
    asyncio.run(reset_jetstream(nats_url))
    service_stack.extra_env["PLEXSYNC_TOKEN_KEYS"] = "t1:" + base64.b64encode(secrets.token_bytes(32)).decode()
    for name in ("catalog", "auth", "scanner", "scheduler"):
        service_stack.reserve(name)
    service_stack.start("catalog")
    service_stack.start("auth", PLEXSYNC_PLEX_TV_URL=fake["url"], PLEXSYNC_GDM_ENABLED="false")
    service_stack.start("scanner")
    service_stack.start("scheduler", **SCHEDULER_ENV)
    assert {process_of(m) for m in METHODS} <= set(service_stack.addresses), "a service this module does not start"
    c = Calls(service_stack)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def reference(calls: Calls, fake: dict[str, Any]) -> dict[str, Any]:
    """A server, its library and its items, synced before any hostile call; they must survive all of them."""
    added = calls.stub_call(
        "AuthService",
        "AddServer",
        auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"], name="Reference"),
        auth_pb2.AddServerResponse,
    )
    server_id = added.server.id
    trigger = calls.stub_call(
        "SchedulerService",
        "TriggerSync",
        scheduler_pb2.TriggerSyncRequest(server_id=server_id),
        scheduler_pb2.TriggerSyncResponse,
    )
    assert trigger.jobs
    deadline = time.monotonic() + 60
    for job in trigger.jobs:
        while True:
            got = calls.stub_call(
                "SchedulerService", "GetJob", scheduler_pb2.GetJobRequest(job_id=job.id), scheduler_pb2.GetJobResponse
            )
            if got.job.status == common_pb2.JOB_STATUS_SUCCEEDED:
                break
            assert got.job.status not in (common_pb2.JOB_STATUS_FAILED, common_pb2.JOB_STATUS_CANCELLED), got.job
            assert time.monotonic() < deadline, f"reference sync not done: {got.job}"
            time.sleep(0.2)
    libraries = calls.stub_call(
        "CatalogService",
        "ListLibraries",
        catalog_pb2.ListLibrariesRequest(server_id=server_id),
        catalog_pb2.ListLibrariesResponse,
    ).libraries
    assert len(libraries) == 1
    items = calls.stub_call(
        "CatalogService",
        "ListItems",
        catalog_pb2.ListItemsRequest(library_id=libraries[0].id),
        catalog_pb2.ListItemsResponse,
    ).items
    assert len(items) == SPEC["sections"][0]["count"]
    return {"server_id": server_id, "library_id": libraries[0].id, "items": {i.id: _essence(i) for i in items}}


def _essence(item: common_pb2.Item) -> tuple[str, str, str, int]:
    return item.rating_key, item.title, item.library_id, item.state


# ----------------------------------------------------------------------------- (a) bytes that are no message
def _bad_utf8(message: Descriptor) -> bytes | None:
    """Field bytes putting invalid UTF-8 into the message's first string field, if it has one."""
    for field in message.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            return bytes([(field.number << 3) | 2]) + b"\x02\xff\xfe" if field.number < 16 else None
    return None


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_bytes_that_are_no_message_answer_invalid_argument(
    calls: Calls, reference: dict[str, Any], method: Any
) -> None:
    identity = calls.caller(method)
    payloads = [CORRUPT, TRUNCATED]
    bad_utf8 = _bad_utf8(method.input_type)
    if bad_utf8 is not None:
        payloads.append(bad_utf8)
    for body in payloads:
        code, details = calls.call(method, body, identity)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (body, code, details)
        assert details.startswith(f"the request is not a valid {method.input_type.full_name}: "), details
        assert "class" not in details and "Error" not in details, details
    rng = random.Random(method.full_name)
    for _ in range(4):
        body = rng.randbytes(rng.randint(1, 300))  # may happen to parse: any clean answer will do
        code, details = calls.call(method, body, identity)
        assert code not in NEVER, (body, code, details)
    # A stranger is turned away before the bytes are looked at.
    metadata = (("authorization", "Bearer not-a-token"),)
    path = f"/{method.containing_service.full_name}/{method.name}"
    channel = calls.channels[process_of(method)]
    with pytest.raises(grpc.RpcError) as info:
        if method.client_streaming:
            channel.stream_unary(path)(iter([CORRUPT]), timeout=10, metadata=metadata)
        elif method.server_streaming:
            list(channel.unary_stream(path)(CORRUPT, timeout=10, metadata=metadata))
        else:
            channel.unary_unary(path)(CORRUPT, timeout=10, metadata=metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("service", "method", "request_", "field"),
    [
        ("AuthService", "AddServer", auth_pb2.AddServerRequest(url="http://" + "a" * 70_000, token="t" * 20), "url"),
        ("AuthService", "AddServer", auth_pb2.AddServerRequest(url="http://[::1", token="t" * 20), "url"),
        ("AuthService", "AddServer", auth_pb2.AddServerRequest(url="http://xn--:32400", token="t" * 20), "url"),
        ("ScannerService", "ListScans", scanner_pb2.ListScansRequest(library_id="not-a-uuid"), "library_id"),
        ("CatalogService", "ListItems", catalog_pb2.ListItemsRequest(library_id="not-a-uuid"), "library_id"),
    ],
    ids=[
        "AddServer-70k-url",
        "AddServer-bracket",
        "AddServer-bad-idna",
        "ListScans-library_id",
        "ListItems-library_id",
    ],
)
def test_values_once_let_through_name_the_field(
    calls: Calls, reference: dict[str, Any], service: str, method: str, request_: Message, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        calls.stub_call(service, method, request_, common_pb2.Item)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert [f for f, _ in field_violations(info.value)] == [field]


# ----------------------------------------------------------------------------- (b) valid messages, hostile values
HUGE = "x" * 100_000
STRINGS = st.sampled_from(
    [
        "",
        " ",
        "not-a-uuid",
        "00000000-0000-0000-0000-000000000000",
        str(uuid.UUID(int=1)),
        HUGE,
        "\x00",
        "é" * 2000,
        "../../../etc/passwd",
        "'; DROP TABLE items; --",
        "%s%n{0}",
        "\U0010ffff" * 10,
        "-1",
        "9" * 40,
        "http://[::1",
        "http://" + "a" * 70_000,
    ]
) | st.text(max_size=20)
SMALL_STRINGS = st.text(max_size=8)
INT32 = st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]) | st.integers(-(2**31), 2**31 - 1)
INT64 = st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]) | st.integers(-(2**63), 2**63 - 1)
UINT32 = st.sampled_from([0, 2**32 - 1]) | st.integers(0, 2**32 - 1)
UINT64 = st.sampled_from([0, 2**64 - 1]) | st.integers(0, 2**64 - 1)
T = FieldDescriptor
SCALARS: dict[int, st.SearchStrategy[Any]] = {
    T.TYPE_BOOL: st.booleans(),
    T.TYPE_FLOAT: st.floats(width=32),
    T.TYPE_DOUBLE: st.floats(),
    T.TYPE_BYTES: st.binary(max_size=32) | st.just(b"\xff" * 100_000),
    **dict.fromkeys((T.TYPE_INT32, T.TYPE_SINT32, T.TYPE_SFIXED32), INT32),
    **dict.fromkeys((T.TYPE_INT64, T.TYPE_SINT64, T.TYPE_SFIXED64), INT64),
    **dict.fromkeys((T.TYPE_UINT32, T.TYPE_FIXED32), UINT32),
    **dict.fromkeys((T.TYPE_UINT64, T.TYPE_FIXED64), UINT64),
}
MAX_DEPTH = 2


def _scalar(field: FieldDescriptor, small: bool = False) -> st.SearchStrategy[Any]:
    if field.type == T.TYPE_STRING:
        return SMALL_STRINGS if small else STRINGS
    if field.enum_type is not None:
        return st.sampled_from([v.number for v in field.enum_type.values]) | INT32  # open enums: any int32
    return SCALARS[field.type]


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        values = _value(value, depth)
        return None if values is None else st.dictionaries(_scalar(key), values, max_size=3)
    one = _value(field, depth)
    if one is None or not field.is_repeated:
        return one
    if field.message_type is not None:
        return st.lists(one, max_size=3)
    return st.lists(one, max_size=3) | _scalar(field, small=True).map(lambda v: [v] * 5000)


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if field.message_type is None:
        return _scalar(field)
    return None if depth >= MAX_DEPTH else messages(field.message_type, depth + 1)


@functools.cache
def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `descriptor` whose fields are unset or hostile: boundaries, huge, malformed, long lists."""
    cls = message_factory.GetMessageClass(descriptor)
    fields = {f.name: st.none() | s for f in descriptor.fields if (s := _field(f, depth)) is not None}
    return st.fixed_dictionaries(fields).map(functools.partial(_build, cls, descriptor))


def _build(cls: Callable[[], Message], descriptor: Descriptor, values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        if value is None:
            continue
        field = descriptor.fields_by_name[name]
        target = getattr(message, name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, val in value.items():
                if isinstance(val, Message):
                    target[key].CopyFrom(val)
                else:
                    target[key] = val
        elif field.is_repeated:
            target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


@pytest.mark.parametrize("method", METHODS, ids=IDS)
@settings(max_examples=25, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_values_get_a_clean_status(
    calls: Calls, reference: dict[str, Any], method: Any, data: st.DataObject
) -> None:
    request = data.draw(messages(method.input_type), label="request")
    code, details = calls.call(method, request.SerializeToString(), calls.caller(method))
    assert code not in NEVER, (code, details)
    assert "Traceback" not in details and "<class" not in details, details
    assert "metadata size exceeds" not in details, details  # an error quoting a huge input hides the real status


def test_every_service_still_serving_and_the_reference_data_intact(calls: Calls, reference: dict[str, Any]) -> None:
    for name in ("catalog", "auth", "scanner", "scheduler"):
        assert calls.serving(name), name
    server = calls.stub_call(
        "AuthService",
        "GetServer",
        auth_pb2.GetServerRequest(server_id=reference["server_id"]),
        auth_pb2.GetServerResponse,
    ).server
    assert server.id == reference["server_id"]
    library = calls.stub_call(
        "CatalogService",
        "GetLibrary",
        catalog_pb2.GetLibraryRequest(library_id=reference["library_id"]),
        catalog_pb2.GetLibraryResponse,
    ).library
    assert not library.removed
    for item_id, essence in reference["items"].items():
        item = calls.stub_call(
            "CatalogService", "GetItem", catalog_pb2.GetItemRequest(item_id=item_id), catalog_pb2.GetItemResponse
        ).item
        assert _essence(item) == essence


# ----------------------------------------------------------------------------- (c) over the size limit
def test_a_message_over_the_size_limit_is_resource_exhausted(calls: Calls, reference: dict[str, Any]) -> None:
    body = b"x" * (MAX_MESSAGE_BYTES + 1)  # never parsed: the size alone is refused
    for service in SERVICES:
        method = next(m for m in service.methods if not m.client_streaming and not m.server_streaming)
        code, details = calls.call(method, body, calls.caller(method), timeout=30)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (method.full_name, code, details)
        assert "larger than max" in details and "Traceback" not in details, details
        assert calls.serving(process_of(method))


# ----------------------------------------------------------------------------- (d) a client that vanishes
VANISHING_CLIENT = """
import asyncio, sys, grpc
async def main():
    token, streams = sys.argv[1], int(sys.argv[2])
    calls = []
    for target in sys.argv[3:]:
        address, path = target.split("|")
        channel = grpc.aio.insecure_channel(address)
        await channel.channel_ready()
        stub = channel.unary_stream(path)
        calls += [stub(b"", metadata=(("authorization", "Bearer " + token),)) for _ in range(streams)]
    await asyncio.sleep(2)  # the calls start at once; by now every request is sent
    print("open", sum(not c.done() for c in calls), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def _open_and_vanish(token: str, targets: list[str]) -> None:
    """A client process opens 1,000 streams per target and is killed (no goodbye, the sockets just drop)."""
    client = subprocess.Popen(
        [sys.executable, "-c", VANISHING_CLIENT, token, "1000", *targets], stdout=subprocess.PIPE, env={**os.environ}
    )
    try:
        assert client.stdout is not None
        line = client.stdout.readline().decode()
        assert line.split() == ["open", str(1000 * len(targets))], line  # none refused or ended
        time.sleep(1)  # every stream reaches its handler
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait(10)
    time.sleep(2)  # the server notices the dropped connection and ends its streams


def test_a_client_that_opens_1000_streams_and_vanishes_leaves_the_services_as_they_were(
    calls: Calls, reference: dict[str, Any], service_stack: ServiceStack
) -> None:
    watches = [m for m in METHODS if m.server_streaming and not m.client_streaming and m.name.startswith("Watch")]
    assert {m.name for m in watches} >= {"WatchChanges", "WatchJobs"}
    # Streams that stay open with an empty request: WatchScan needs a scan, so it ends at once (NOT_FOUND).
    watches = [m for m in watches if m.name != "WatchScan"]
    pids = {child.name: child.pid for child in service_stack.children}
    names = sorted({process_of(m) for m in watches})
    baseline = {name: _rss(pids[name]) for name in names}
    targets = [f"{service_stack.addresses[process_of(m)]}|/{m.containing_service.full_name}/{m.name}" for m in watches]
    for _ in range(2):  # RSS seldom shrinks; a second round that grew it again would be what the first leaked
        _open_and_vanish(service_stack.tokens["cli"], targets)
    deadline = time.monotonic() + 15
    while True:
        after = {name: _rss(pids[name]) for name in names}
        settled = all(after[n] <= baseline[n] + 50 * 2**20 for n in names)
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert settled, {n: (baseline[n] >> 20, after[n] >> 20) for n in names}
    for name in ("catalog", "auth", "scanner", "scheduler"):
        assert calls.serving(name), name
    for method in watches:  # and a new stream is served as before
        code, details = calls.call(method, b"")
        assert code == grpc.StatusCode.OK, (method.full_name, code, details)


def test_no_service_logged_an_error(calls: Calls, service_stack: ServiceStack) -> None:
    """Hostile input is the caller's problem: WARNING at most from our code and from grpc (which logged an ERROR
    traceback for every undecodable request). Other libraries' noise is not this module's subject."""
    for child in service_stack.children:
        errors = []
        for line in child.log_file.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("ERROR", "CRITICAL") and entry.get("logger", "").startswith(("plexsync", "grpc")):
                errors.append((entry["logger"], entry["message"][:200]))
        assert not errors, (child.name, errors[:5])
