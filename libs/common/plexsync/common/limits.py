"""Per-caller rate limits: a token bucket per identity, RESOURCE_EXHAUSTED with RetryInfo when it runs dry.

Limits apply to the roles other systems and people hold (reader, admin by default): the services' own calls to each
other are bounded by their work, and throttling the scanner's write stream would only slow a scan down.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from plexsync.common.access import Role, current_caller
from plexsync.common.errors import ResourceExhaustedError
from plexsync.common.interceptors import run_first, wrap_async_behavior


class RateLimitedError(ResourceExhaustedError):
    """A caller sent more calls than its rate allows."""

    reason = "RATE_LIMITED"


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """Token buckets keyed by caller identity: `rate` calls a second on average, bursts of up to `burst`."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def acquire(self, identity: str) -> float:
        """Take one call's token; 0.0 when allowed, else the seconds until a token is available."""
        now = self.clock()
        bucket = self._buckets.get(identity)
        if bucket is None:
            bucket = self._buckets[identity] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls over a caller's rate with RESOURCE_EXHAUSTED and RetryInfo saying when to come back.

    Installed inside the auth interceptor, so the caller is known; a call counts once, whatever its shape."""

    def __init__(self, limiter: RateLimiter, roles: frozenset[Role]) -> None:
        self._limiter = limiter
        self._roles = roles

    def _check(self, request: Any) -> Any:
        caller = current_caller()
        if caller is None or not (caller.roles & self._roles):
            return request
        wait = self._limiter.acquire(caller.identity)
        if wait > 0:
            raise RateLimitedError(
                f"caller {caller.identity!r} is over its rate of {self._limiter.rate:g} calls a second "
                f"(bursts of {self._limiter.burst:g}); retry in {wait:.2f} s",
                retry_after=wait,
            )
        return request

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith("/plexsync."):
            return handler
        return wrap_async_behavior(handler, lambda behavior, _: run_first(behavior, self._check))
