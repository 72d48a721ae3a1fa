"""Channels to other plexsync services, carrying this process's bearer token and retry policy."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from plexsync.common.config import CommonSettings
from plexsync.common.grpc_server import MAX_MESSAGE_BYTES
from plexsync.common.telemetry import client_interceptors
from plexsync.common.tls import client_credentials

T = TypeVar("T")

# Transparent retries for calls that failed before reaching the peer's handler logic.
_RETRY_POLICY = {
    "name": [{}],
    "retryPolicy": {
        "maxAttempts": 4,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    },
}
_SERVICE_CONFIG = json.dumps({"methodConfig": [_RETRY_POLICY]})
# round_robin over every address a name resolves to, for addresses written with a resolver scheme
# (`dns:///catalog.plexsync.svc.cluster.local:50051`, `ipv4:10.0.0.1:50051,10.0.0.2:50051`): a Kubernetes headless
# Service's DNS name lists every ready pod, so calls spread over the replicas instead of riding one long-lived
# HTTP/2 connection to whichever pod a ClusterIP picked. A bare `host:port` keeps pick_first: one server, and a
# connection lost to a restart is re-made by the next call instead of sitting out round_robin's reconnect backoff.
_BALANCED_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [_RETRY_POLICY]})
_BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")


class _BearerHeader:
    """Adds `authorization: Bearer` to a call's metadata (for insecure, in-cluster channels)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._header)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files each interceptor under one call shape only, so each shape needs its own class.
class _UnaryUnaryBearer(_BearerHeader, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStreamBearer(_BearerHeader, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnaryBearer(_BearerHeader, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


class _StreamStreamBearer(_BearerHeader, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


def bearer_interceptors(token: str) -> list[Any]:
    """Client interceptors that send `token` on every call shape."""
    return [cls(token) for cls in (_UnaryUnaryBearer, _UnaryStreamBearer, _StreamUnaryBearer, _StreamStreamBearer)]


def channel_target(address: str) -> str:
    """`host:port` as a `dns:///` target (re-resolved as pods come and go); a target with a scheme stays as is."""
    if address.startswith(_TARGET_SCHEMES) or "://" in address:
        return address
    return f"dns:///{address}"


_TARGET_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")


def service_channel(address: str, token: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    """A channel to a peer that sends `token` as a bearer credential on every call: TLS with `credentials`
    (plexsync.common.tls.client_credentials), plain TCP without."""
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.service_config", _BALANCED_SERVICE_CONFIG if address.startswith(_BALANCED_SCHEMES) else _SERVICE_CONFIG),
        ("grpc.service_config_disable_resolution", 1),  # ours, not one from a DNS TXT record
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    interceptors = [*client_interceptors(), *bearer_interceptors(token)]
    if credentials is not None:
        return grpc.aio.secure_channel(channel_target(address), credentials, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(channel_target(address), options=options, interceptors=interceptors)


def peer_channel(settings: CommonSettings, address: str) -> grpc.aio.Channel:
    token = settings.service_token.get_secret_value()
    if not token:
        raise RuntimeError("PLEXSYNC_SERVICE_TOKEN is empty: this service needs a token to call its peers")
    return service_channel(address, token, client_credentials(settings))


async def all_pages(page: Callable[[str], Awaitable[tuple[list[T], str]]]) -> list[T]:
    """Every item of a paged List call: ``page(token)`` returns one page's items and its next_page_token."""
    items: list[T] = []
    token = ""
    while True:
        found, token = await page(token)
        items.extend(found)
        if not token:
            return items
