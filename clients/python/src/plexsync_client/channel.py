"""Channels to a plexsync service: bearer token, TLS (or plain TCP only when asked), deadlines, retries, errors.

One interceptor does it all for every call on the channel: it adds `authorization: Bearer <token>`, gives unary
calls the default deadline when the caller set none (streams get none: a watch may run for days), retries a unary
call that failed UNAVAILABLE (or RESOURCE_EXHAUSTED with RetryInfo: a rate limit) with exponential backoff and
jitter (waiting at least what the server's RetryInfo asks) within that deadline, and raises a `PlexsyncError`
subclass instead of grpc.RpcError, for unary calls and streams.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from plexsync_client.errors import PlexsyncError, from_rpc_error

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


# ------------------------------------------------------------------ shared by this module and plexsync_client.aio
# RetryPolicy above and the functions below are what the sync channel (here) and the asyncio one (aio.py) have in
# common: the channel arguments and credentials, the call metadata, the default deadline and the retry decision.

# The codes after which a unary call is tried again (the service is away, e.g. restarting).
RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})


def channel_arguments(options: ChannelOptions) -> list[tuple[str, Any]]:
    """The grpc channel arguments for `options` (message size, keepalive, TLS name override, the caller's own)."""
    arguments: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 0),
        *options.grpc_options,
    ]
    if options.tls is not None and options.tls.server_name:
        arguments.append(("grpc.ssl_target_name_override", options.tls.server_name))
    return arguments


def channel_credentials(tls: TlsOptions) -> grpc.ChannelCredentials:
    """The TLS credentials for `tls`: its CA (or the system's roots) and, for mTLS, its client certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file),
        private_key=_read(tls.key_file),
        certificate_chain=_read(tls.cert_file),
    )


def call_metadata(metadata: Any, token: str | None) -> list[tuple[str, str | bytes]]:
    """A call's metadata with the bearer token added (when there is one)."""
    pairs: list[tuple[str, str | bytes]] = list(metadata or ())
    if token:
        pairs.append(("authorization", f"Bearer {token}"))
    return pairs


def method_name(method: str | bytes) -> str:
    """The method of a call's details as text (grpc.aio gives bytes)."""
    return method.decode() if isinstance(method, bytes) else method


def unary_deadline(timeout: float | None, options: ChannelOptions) -> float | None:
    """The time.monotonic() deadline of a unary call: its own timeout, else the options' default (None: none)."""
    timeout = timeout if timeout is not None else options.timeout
    return None if timeout is None else time.monotonic() + timeout


def retryable(error: PlexsyncError) -> bool:
    """UNAVAILABLE, and RESOURCE_EXHAUSTED that carries RetryInfo (a per-caller rate limit saying when to come back;
    a message too large carries none and is not worth repeating)."""
    if error.code in RETRY_CODES:
        return True
    return error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_delay is not None


def remaining(deadline: float | None) -> float | None:
    """Seconds left until `deadline` (None: no deadline)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def retry_pause(policy: RetryPolicy, attempt: int, error: PlexsyncError, deadline: float | None) -> float | None:
    """How long to wait before trying a unary call again after attempt number `attempt` failed with `error`;
    None when it must be raised instead (a code not retried, no attempts left, or the pause would pass the
    deadline). The pause is the policy's backoff, and at least the server's RetryInfo."""
    if not retryable(error) or attempt >= policy.attempts:
        return None
    pause = policy.delay(attempt, error.retry_delay)
    if deadline is not None and time.monotonic() + pause >= deadline:
        return None
    return pause


def open_channel(target: str, options: ChannelOptions) -> grpc.Channel:
    """A grpc.Channel to `target` ("host:port") with the options' interceptor."""
    arguments = channel_arguments(options)
    if options.tls is None:
        channel = grpc.insecure_channel(target, options=arguments)
    else:
        channel = grpc.secure_channel(target, channel_credentials(options.tls), options=arguments)
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
        return _ClientCallDetails(base, timeout, call_metadata(base.metadata, self._options.token))

    def _unary(self, continuation: Callable[[Any, Any], Any], base: Any, request: Any, *, retry: bool) -> Any:
        deadline = unary_deadline(base.timeout, self._options)
        policy = self._options.retry if retry else NO_RETRY
        attempt = 1
        while True:
            outcome = continuation(self._details(base, remaining(deadline)), request)
            error = outcome.exception()
            if error is None:
                return outcome
            mapped = from_rpc_error(error, base.method)
            pause = retry_pause(policy, attempt, mapped, deadline)
            if pause is None:
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
