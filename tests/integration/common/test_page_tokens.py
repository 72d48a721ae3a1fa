"""Every List method that pages, on the real services, refuses a page token it did not sign (AIP-158).

The methods come from the generated descriptors (any request with a `page_token` field), so a new paged method
is tried without touching this file. The forged token has the right format and a made-up position, signed with
another key, as someone who read the code would make one."""

from __future__ import annotations

import base64
import importlib
import pkgutil
import secrets
import uuid
from collections.abc import Iterator

import grpc
import plexsync.v1
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from plexsync.common import pagination
from plexsync.common.grpc_errors import field_violations
from plexsync.v1 import catalog_pb2, common_pb2

from tests.support.stack import ServiceStack

pytestmark = pytest.mark.timeout(240)

SERVICES = ("catalog", "auth", "scanner", "scheduler")
SERVER_ID = str(uuid.uuid4())


def _paged_methods() -> list[MethodDescriptor]:
    found: list[MethodDescriptor] = []
    for module in pkgutil.iter_modules(plexsync.v1.__path__):
        if module.name.endswith("_pb2"):
            for service in importlib.import_module(f"plexsync.v1.{module.name}").DESCRIPTOR.services_by_name.values():
                found.extend(m for m in service.methods if "page_token" in m.input_type.fields_by_name)
    return found


@pytest.fixture(scope="module")
def stack(service_stack: ServiceStack) -> Iterator[ServiceStack]:
    service_stack.extra_env["PLEXSYNC_TOKEN_KEYS"] = "t1:" + base64.b64encode(secrets.token_bytes(32)).decode()
    service_stack.extra_env["PLEXSYNC_GDM_ENABLED"] = "false"
    for name in SERVICES:
        service_stack.reserve(name)
    for name in SERVICES:
        service_stack.start(name)
    yield service_stack


def _forged() -> str:
    saved = pagination._key
    pagination.configure_token_key(secrets.token_bytes(32))
    try:
        return pagination.encode_token([str(uuid.uuid4()), "2024-01-01T00:00:00+00:00"], "0" * 16)
    finally:
        pagination.configure_token_key(saved)


def test_every_paged_list_method_refuses_a_forged_token(stack: ServiceStack) -> None:
    methods = _paged_methods()
    assert {"ListServers", "ListItems", "ListScans", "ListJobs", "ListAuditEvents"} <= {m.name for m in methods}
    token = stack.tokens["test"]
    metadata = (("authorization", f"Bearer {token}"),)
    channels = {name: grpc.insecure_channel(stack.addresses[name]) for name in SERVICES}
    try:
        register = channels["catalog"].unary_unary("/plexsync.v1.CatalogService/RegisterLibraries")
        reply = catalog_pb2.RegisterLibrariesResponse.FromString(
            register(
                catalog_pb2.RegisterLibrariesRequest(
                    server_id=SERVER_ID,
                    server_name="s",
                    sections=[catalog_pb2.LibrarySection(plex_key="1", name="L", kind=common_pb2.LIBRARY_KIND_MOVIES)],
                ).SerializeToString(),
                timeout=30,
                metadata=metadata,
            )
        )
        library_id = reply.libraries[0].id
        forged = _forged()
        wrong = {}
        for method in methods:
            request: Message = GetMessageClass(method.input_type)()
            for name, value in (
                ("page_token", forged),
                ("library_id", library_id),
                ("server_id", SERVER_ID),
                ("query", "a"),
            ):
                if name in method.input_type.fields_by_name:
                    setattr(request, name, value)
            service = method.containing_service.name.removesuffix("Service").lower()
            channel = channels.get(service, channels["catalog"])  # AuditService: every service serves its own
            path = f"/{method.containing_service.full_name}/{method.name}"
            try:
                channel.unary_unary(path)(request.SerializeToString(), timeout=30, metadata=metadata)
                wrong[path] = "OK"
            except grpc.RpcError as exc:
                fields = [f for f, _ in field_violations(exc)]
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT or "page_token" not in fields:
                    wrong[path] = f"{exc.code().name} {fields} {exc.details()}"
        assert not wrong, wrong
    finally:
        for channel in channels.values():
            channel.close()
