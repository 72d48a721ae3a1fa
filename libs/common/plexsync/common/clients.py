"""Channels to other plexsync services, carrying this process's bearer token and retry policy; over TLS, they follow
their credential files (a renewed client certificate or CA is used without a restart)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import grpc
from plexsync.common.config import CommonSettings
from plexsync.common.grpc_server import MAX_MESSAGE_BYTES
from plexsync.common.telemetry import client_interceptors
from plexsync.common.tls import TlsConfigError, channel_credentials_from_files, files_signature

T = TypeVar("T")
log = logging.getLogger(__name__)

# How often a call may stat the TLS files of its channel, and how long a replaced channel lives on for the calls
# still running on it.
CHECK_INTERVAL_SECONDS = 5.0
RETIRE_GRACE_SECONDS = 60.0

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


class _CurrentCallable:
    """A stub's multicallable that makes each call on its ReloadingChannel's current underlying channel."""

    def __init__(self, owner: ReloadingChannel, shape: str, method: str, *args: Any) -> None:
        self._owner, self._shape, self._method, self._args = owner, shape, method, args
        self._channel: grpc.aio.Channel | None = None
        self._callable: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self._owner.current()
        if channel is not self._channel:  # built once per underlying channel, as a stub would
            self._callable = getattr(channel, self._shape)(self._method, *self._args)
            self._channel = channel
        return self._callable(*args, **kwargs)


class ReloadingChannel(grpc.aio.Channel):
    """A TLS channel that follows its files: the CA it trusts and the client certificate and key it presents.

    Stubs take their multicallables once; these make every call on the current underlying channel. At most every
    `check_interval` seconds a call stats the files (size, mtime, inode, as ReloadingServerCredentials does); when
    they changed and load and validate, `connect` builds a new channel (same target, options and interceptors) and
    the previous one is closed `grace` seconds later, in the background, once its in-flight calls are done. Files
    that do not validate yet (a half-written rotation) keep the current channel; `close()` closes every channel."""

    def __init__(
        self,
        target: str,
        connect: Callable[[grpc.ChannelCredentials], grpc.aio.Channel],
        ca_file: str,
        cert_file: str = "",
        key_file: str = "",
        *,
        check_interval: float = CHECK_INTERVAL_SECONDS,
        grace: float = RETIRE_GRACE_SECONDS,
    ) -> None:
        self._target, self._connect, self._files = target, connect, (ca_file, cert_file, key_file)
        self._check_interval, self._grace = check_interval, grace
        try:  # before reading: a change while the files are read is seen at the next check
            self._signature = files_signature(*self._files)
        except OSError:
            self._signature = ()
        self._channel: grpc.aio.Channel = connect(channel_credentials_from_files(*self._files))
        self._checked = time.monotonic()
        self._rejected: tuple[tuple[int, int, int], ...] | None = ()  # the files last warned about (None: missing)
        self._retiring: set[grpc.aio.Channel] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.reloads = 0

    def current(self) -> grpc.aio.Channel:
        """The channel new calls go to, rebuilt first when the files changed since the last check."""
        now = time.monotonic()
        if not self._closed and now - self._checked >= self._check_interval:
            self._checked = now
            self._reload_if_changed()
        return self._channel

    def _reload_if_changed(self) -> None:
        signature: tuple[tuple[int, int, int], ...] | None = None
        try:
            signature = files_signature(*self._files)
            if signature == self._signature:
                return
            credentials = channel_credentials_from_files(*self._files)
        except (OSError, TlsConfigError) as exc:
            if signature != self._rejected:  # once per state of the files, not at every check
                self._rejected = signature
                log.warning(
                    "TLS client files changed but cannot be used yet; keeping the previous ones",
                    extra={"target": self._target, "error": str(exc)},
                )
            return
        old, self._channel = self._channel, self._connect(credentials)
        self._signature, self._rejected = signature, ()
        self.reloads += 1
        self._retiring.add(old)
        task = asyncio.get_running_loop().create_task(self._close_later(old), name=f"retire-channel {self._target}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info(
            "TLS client certificate reloaded",
            extra={"target": self._target, "ca_file": self._files[0], "cert_file": self._files[1]},
        )

    async def _close_later(self, channel: grpc.aio.Channel) -> None:
        await asyncio.sleep(self._grace)
        await channel.close()
        self._retiring.discard(channel)

    async def close(self, grace: float | None = None) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        channels, self._retiring = [*self._retiring, self._channel], set()
        await asyncio.gather(*(channel.close(grace) for channel in channels))

    async def __aenter__(self) -> ReloadingChannel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.current().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return _CurrentCallable(
            self, "unary_unary", method, request_serializer, response_deserializer, _registered_method
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return _CurrentCallable(
            self, "unary_stream", method, request_serializer, response_deserializer, _registered_method
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return _CurrentCallable(
            self, "stream_unary", method, request_serializer, response_deserializer, _registered_method
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return _CurrentCallable(
            self, "stream_stream", method, request_serializer, response_deserializer, _registered_method
        )


def peer_channel(
    settings: CommonSettings,
    address: str,
    *,
    check_interval: float = CHECK_INTERVAL_SECONDS,
    grace: float = RETIRE_GRACE_SECONDS,
) -> grpc.aio.Channel:
    """A channel to the peer at `address` with this process's token: plain TCP without PLEXSYNC_TLS_CA_FILE, else
    TLS that re-reads the CA, certificate and key files when they change (ReloadingChannel)."""
    token = settings.service_token.get_secret_value()
    if not token:
        raise RuntimeError("PLEXSYNC_SERVICE_TOKEN is empty: this service needs a token to call its peers")
    if not settings.tls_ca_file:
        return service_channel(address, token)

    def connect(credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
        return service_channel(address, token, credentials)

    return ReloadingChannel(
        address,
        connect,
        settings.tls_ca_file,
        settings.tls_cert_file,
        settings.tls_key_file,
        check_interval=check_interval,
        grace=grace,
    )


async def all_pages(page: Callable[[str], Awaitable[tuple[list[T], str]]]) -> list[T]:
    """Every item of a paged List call: ``page(token)`` returns one page's items and its next_page_token."""
    items: list[T] = []
    token = ""
    while True:
        found, token = await page(token)
        items.extend(found)
        if not token:
            return items
