"""Roles against the real services: a reader can change nothing, each internal call is its owner's alone, and a
service token can be rotated with both tokens valid at once.

Every method comes from the generated descriptors, so a new RPC is tried without touching this file. Calls are raw
bytes (an empty message) on synchronous channels: a refused call never reaches a handler, so trying every one
changes nothing, which the last step checks."""

from __future__ import annotations

import base64
import importlib
import json
import pkgutil
import secrets
from collections.abc import Iterator
from typing import Any

import grpc
import plexsync.v1
import pytest
from google.protobuf.descriptor import MethodDescriptor
from plexsync.common.access import METHOD_POLICY, Role
from plexsync.v1 import auth_pb2, common_pb2, scheduler_pb2

from tests.integration.scanner.support import fakeplex_process
from tests.support.stack import IDENTITIES, ServiceStack

pytestmark = pytest.mark.timeout(180)

SPEC: dict[str, Any] = {"seed": 5, "sections": [{"kind": "movie", "title": "Films", "count": 2}]}
ROTATED_READER_TOKEN = "rotated-" + secrets.token_urlsafe(12)


def _methods() -> list[MethodDescriptor]:
    found: list[MethodDescriptor] = []
    for module in pkgutil.iter_modules(plexsync.v1.__path__):
        if module.name.endswith("_pb2"):
            for service in importlib.import_module(f"plexsync.v1.{module.name}").DESCRIPTOR.services_by_name.values():
                found.extend(service.methods)
    return found


METHODS = [m for m in _methods() if m.containing_service.name != "AuditService"]


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


class Raw:
    """Synchronous raw-bytes calls of any shape to the stack's services."""

    def __init__(self, stack: ServiceStack) -> None:
        self.stack = stack
        self.channels = {name: grpc.insecure_channel(address) for name, address in stack.addresses.items()}

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()

    def call(self, method: MethodDescriptor, token: str, body: bytes = b"") -> tuple[grpc.StatusCode, str]:
        channel = self.channels[method.containing_service.name.removesuffix("Service").lower()]
        metadata = (("authorization", f"Bearer {token}"),)
        path = path_of(method)
        try:
            if method.server_streaming:
                shape = channel.stream_stream if method.client_streaming else channel.unary_stream
                request: Any = iter([body]) if method.client_streaming else body
                for _ in shape(path)(request, timeout=3, metadata=metadata):
                    break
            elif method.client_streaming:
                channel.stream_unary(path)(iter([body]), timeout=15, metadata=metadata)
            else:
                channel.unary_unary(path)(body, timeout=15, metadata=metadata)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""


@pytest.fixture(scope="module")
def raw(service_stack: ServiceStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Raw]:
    with fakeplex_process(tmp_path_factory.mktemp("fakeplex"), "--library-spec", json.dumps(SPEC)) as fake:
        service_stack.extra_env["PLEXSYNC_TOKEN_KEYS"] = "t1:" + base64.b64encode(secrets.token_bytes(32)).decode()
        service_stack.extra_env["PLEXSYNC_SCHEDULER_SERVER_SYNC_SECONDS"] = "86400"
        service_stack.extra_env["PLEXSYNC_SCHEDULER_REFRESH_INTERVAL_SECONDS"] = "86400"
        for name in ("catalog", "auth", "scanner", "scheduler"):
            service_stack.reserve(name)
        rotated = service_stack.env("catalog")["PLEXSYNC_SERVICE_TOKENS"] + f",reader@reader:{ROTATED_READER_TOKEN}"
        service_stack.start("catalog", PLEXSYNC_SERVICE_TOKENS=rotated)
        service_stack.start("auth", PLEXSYNC_PLEX_TV_URL=fake["url"], PLEXSYNC_GDM_ENABLED="false")
        service_stack.start("scanner")
        service_stack.start("scheduler")
        r = Raw(service_stack)
        added = r.channels["auth"].unary_unary("/plexsync.v1.AuthService/AddServer")(
            auth_pb2.AddServerRequest(url=fake["url"], token=fake["token"], name="Kept").SerializeToString(),
            timeout=30,
            metadata=(("authorization", f"Bearer {service_stack.tokens['cli']}"),),
        )
        assert auth_pb2.AddServerResponse.FromString(added).server.id
        try:
            yield r
        finally:
            r.close()


@pytest.mark.parametrize("identity", ["reader", "scanner", "scheduler", "cli"])
def test_every_method_outside_a_role_is_permission_denied_naming_role_and_method(raw: Raw, identity: str) -> None:
    role = Role(IDENTITIES[identity])
    token = raw.stack.tokens[identity]
    refused = [m for m in METHODS if role not in METHOD_POLICY[path_of(m)]]
    assert refused, f"{identity} may call everything?"
    wrong = {}
    for method in refused:
        code, details = raw.call(method, token)
        if code != grpc.StatusCode.PERMISSION_DENIED or f"'{role.value}'" not in details or method.name not in details:
            wrong[method.name] = (code.name, details)
    assert not wrong, f"{identity} was not refused properly: {wrong}"


def test_a_reader_cannot_mutate_anything(raw: Raw) -> None:
    """Every method that is not List/Get/Search/Watch is refused to a reader, and what is stored stays."""
    token = raw.stack.tokens["reader"]
    mutating = [m for m in METHODS if not m.name.startswith(("List", "Get", "Search", "Watch"))]
    assert {"AddServer", "RemoveServer", "WriteItems", "FinishScan", "SetPathReplacements", "UpdateSchedule"} <= {
        m.name for m in mutating
    }
    for method in mutating:
        code, _ = raw.call(method, token)
        assert code == grpc.StatusCode.PERMISSION_DENIED, method.name
    listing = auth_pb2.ListServersResponse.FromString(
        raw.channels["auth"].unary_unary("/plexsync.v1.AuthService/ListServers")(
            b"", timeout=15, metadata=(("authorization", f"Bearer {token}"),)
        )
    )
    assert [s.name for s in listing.servers] == ["Kept"]


def test_a_scanner_cannot_add_servers_and_only_the_scanner_fetches_credentials(raw: Raw) -> None:
    add = next(m for m in METHODS if m.name == "AddServer")
    code, details = raw.call(
        add, raw.stack.tokens["scanner"], auth_pb2.AddServerRequest(url="http://x").SerializeToString()
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == "role 'scanner' (caller 'scanner') may not call AddServer; allowed roles: admin"
    credentials = next(m for m in METHODS if m.name == "GetServerCredentials")
    for identity in ("cli", "scheduler", "reader"):
        assert raw.call(credentials, raw.stack.tokens[identity])[0] == grpc.StatusCode.PERMISSION_DENIED


def test_only_admin_triggers_a_deep_sync(raw: Raw) -> None:
    trigger = next(m for m in METHODS if m.name == "TriggerSync")
    deep = scheduler_pb2.TriggerSyncRequest(all=True, mode=common_pb2.SCAN_MODE_DEEP).SerializeToString()
    code, details = raw.call(trigger, raw.stack.tokens["scanner"], deep)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "DEEP" in details and "'scanner'" in details
    assert raw.call(trigger, raw.stack.tokens["reader"], deep)[0] == grpc.StatusCode.PERMISSION_DENIED


def test_rotation_old_and_new_tokens_both_work(raw: Raw) -> None:
    list_libraries = next(m for m in METHODS if m.name == "ListLibraries")
    assert raw.call(list_libraries, raw.stack.tokens["reader"])[0] == grpc.StatusCode.OK
    assert raw.call(list_libraries, ROTATED_READER_TOKEN)[0] == grpc.StatusCode.OK
    code, details = raw.call(list_libraries, ROTATED_READER_TOKEN[:-1])
    assert code == grpc.StatusCode.UNAUTHENTICATED and ROTATED_READER_TOKEN[:-1] not in details
