"""Channels to a plexsync service: bearer token, TLS (or plain TCP only when asked), deadlines, retries, errors.

One interceptor does it all for every call on the channel: it adds `authorization: Bearer <token>`, gives unary
calls the default deadline when the caller set none (streams get none: a watch may run for days), retries a unary
call that failed UNAVAILABLE with exponential backoff and jitter (waiting at least what the server's RetryInfo asks)
within that deadline, and raises a `PlexsyncError` subclass instead of grpc.RpcError, for unary calls and streams.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from plexsync_client.errors import from_rpc_error

MAX_MESSAGE_BYTES = 16 * 2**20


@dataclass(frozen=True)
class TlsOptions:
    """TLS to the service: verify it against `ca_file` (the system's roots when None); present `cert_file` and
    `key_file` when the service requires client certificates (mTLS); `server_name` overrides the name checked."""

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of unary calls that answer UNAVAILABLE: up to `attempts` tries in all, waiting `initial_backoff`
    seconds, then `multiplier` times more each time up to `max_backoff` (with full jitter), within the deadline."""

    attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def delay(self, attempt: int, server_delay: float | None) -> float:
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return max(random.uniform(0, ceiling), server_delay or 0.0)


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class ChannelOptions:
    """How to reach a service. `tls` None means plain TCP and needs `insecure=True`: never a silent downgrade."""

    token: str | None = None
    tls: TlsOptions | None = None
    insecure: bool = False
    timeout: float | None = 30.0  # seconds; the default deadline of unary calls
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    grpc_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.tls is None and not self.insecure:
            raise ValueError("no TLS options given: pass tls=TlsOptions(...), or insecure=True for plain TCP")
        if self.tls is not None and self.insecure:
            raise ValueError("tls and insecure=True contradict each other")
        if self.tls is not None and (self.tls.cert_file is None) != (self.tls.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")


def _read(path: str | Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def open_channel(target: str, options: ChannelOptions) -> grpc.Channel:
    """A grpc.Channel to `target` ("host:port") with the options' interceptor."""
    grpc_options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 0),
        *options.grpc_options,
    ]
    if options.tls is None:
        channel = grpc.insecure_channel(target, options=grpc_options)
    else:
        tls = options.tls
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(tls.ca_file),
            private_key=_read(tls.key_file),
            certificate_chain=_read(tls.cert_file),
        )
        if tls.server_name:
            grpc_options.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.secure_channel(target, credentials, options=grpc_options)
    return grpc.intercept_channel(channel, PlexsyncInterceptor(options))


class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(self, base: Any, timeout: float | None, metadata: list[tuple[str, str | bytes]]) -> None:
        self.method = base.method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class MappedStream:
    """A response stream whose failures are PlexsyncErrors; `cancel()` ends it (the call's other methods pass)."""

    def __init__(self, call: Any, method: str) -> None:
        self._call = call
        self._method = method

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, self._method) from None

    def cancel(self) -> bool:
        return bool(self._call.cancel())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class PlexsyncInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Token, default deadline, UNAVAILABLE retries and error mapping for every call of a channel."""

    def __init__(self, options: ChannelOptions, sleep: Callable[[float], None] = time.sleep) -> None:
        self._options = options
        self._sleep = sleep

    def _details(self, base: Any, timeout: float | None) -> _ClientCallDetails:
        metadata = list(base.metadata or ())
        if self._options.token:
            metadata.append(("authorization", f"Bearer {self._options.token}"))
        return _ClientCallDetails(base, timeout, metadata)

    def _unary(self, continuation: Callable[[Any, Any], Any], base: Any, request: Any, *, retry: bool) -> Any:
        timeout = base.timeout if base.timeout is not None else self._options.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        policy = self._options.retry if retry else NO_RETRY
        attempt = 1
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            outcome = continuation(self._details(base, remaining), request)
            error = outcome.exception()
            if error is None:
                return outcome
            mapped = from_rpc_error(error, base.method)
            if mapped.code != grpc.StatusCode.UNAVAILABLE or attempt >= policy.attempts:
                raise mapped from None
            pause = policy.delay(attempt, mapped.retry_delay)
            if deadline is not None and time.monotonic() + pause >= deadline:
                raise mapped from None
            self._sleep(pause)
            attempt += 1

    def intercept_unary_unary(self, continuation: Callable[[Any, Any], Any], details: Any, request: Any) -> Any:
        return self._unary(continuation, details, request, retry=True)

    def intercept_stream_unary(self, continuation: Callable[[Any, Any], Any], details: Any, requests: Any) -> Any:
        return self._unary(continuation, details, requests, retry=False)  # a request iterator cannot be replayed

    def intercept_unary_stream(self, continuation: Callable[[Any, Any], Any], details: Any, request: Any) -> Any:
        return MappedStream(continuation(self._details(details, details.timeout), request), details.method)

    def intercept_stream_stream(self, continuation: Callable[[Any, Any], Any], details: Any, requests: Any) -> Any:
        return MappedStream(continuation(self._details(details, details.timeout), requests), details.method)
