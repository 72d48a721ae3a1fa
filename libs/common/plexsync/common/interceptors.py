"""Server interceptors every service installs: bearer-token auth and domain-error mapping.

Both wrap the method handler instead of the call so they see streaming RPCs too.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from plexsync.common import errors
from plexsync.common.grpc_errors import to_rpc_status

log = logging.getLogger(__name__)

# Who is calling the current RPC (e.g. "scanner", "cli"); empty when auth is exempt.
caller_identity: contextvars.ContextVar[str] = contextvars.ContextVar("caller_identity", default="")

EXEMPT_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

Before = Callable[[Any], Awaitable[None]]


def _wrap_handler(
    handler: grpc.RpcMethodHandler,
    wrap_call: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> grpc.RpcMethodHandler:
    """Return the handler with its behaviour function wrapped, whatever its streaming shape."""
    for attr in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, attr)
        if behavior is not None:
            return handler._replace(**{attr: wrap_call(behavior)})
    return handler


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], exc: errors.PlexsyncError) -> None:
    status = to_rpc_status(exc)
    await context.abort(status.code, status.details, status.trailing_metadata)


def _guard(behavior: Callable[..., Any], before: Before | None) -> Callable[..., Any]:
    """Run `before` then the behaviour, mapping domain errors and unexpected ones to statuses."""

    async def handle(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if isinstance(exc, errors.PlexsyncError):
            await abort_with(context, exc)
        log.exception("unhandled error in RPC", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the service log for details")

    if inspect.isasyncgenfunction(behavior):

        async def stream_wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            try:
                if before is not None:
                    await before(context)
                async for response in behavior(request, context):
                    yield response
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:
                await handle(exc, context)

        return stream_wrapper

    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            if before is not None:
                await before(context)
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await handle(exc, context)

    return wrapper


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Checks `authorization: Bearer <token>` for service-to-service calls.

    `tokens` maps token -> caller identity. `policy` maps a full method name
    ("/plexsync.v1.AuthService/GetServerCredentials") to the identities allowed to call it;
    methods not in the policy are open to every authenticated caller. Health and reflection are exempt.
    """

    def __init__(self, tokens: Mapping[str, str], policy: Mapping[str, frozenset[str]] | None = None) -> None:
        self._tokens = dict(tokens)
        self._policy = dict(policy or {})

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        identity = self._identify(metadata.get("authorization"))
        allowed = self._policy.get(method)

        async def check(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if identity is None:
                raise errors.UnauthenticatedError(
                    "missing or invalid service credentials: send 'authorization: Bearer <token>' with a token "
                    "listed in the server's PLEXSYNC_SERVICE_TOKENS"
                )
            if allowed is not None and identity not in allowed:
                raise errors.PermissionDeniedError(
                    f"caller {identity!r} may not call {method.rsplit('/', 1)[-1]}; "
                    f"allowed: {', '.join(sorted(allowed))}"
                )
            caller_identity.set(identity)

        return _wrap_handler(handler, lambda behavior: _guard(behavior, check))

    def _identify(self, header: str | bytes | None) -> str | None:
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        return self._tokens.get(token.strip())
