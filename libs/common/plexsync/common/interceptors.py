"""Server interceptors every service installs: bearer-token auth, domain-error mapping, request decoding.

All wrap the method handler instead of the call so they see streaming RPCs too.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from plexsync.common import errors
from plexsync.common.access import (
    METHOD_POLICY,
    Caller,
    DenialSink,
    DeniedCall,
    Role,
    ServiceToken,
    TokenTable,
    denial_message,
    set_current_caller,
)
from plexsync.common.grpc_errors import internal_status, make_status, to_rpc_status
from plexsync.common.telemetry import current_trace_id

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


def wrap_async_behavior(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Callable[..., Any], bool], Callable[..., Any]]
) -> grpc.RpcMethodHandler:
    """The handler with its async behaviour replaced by `wrap(behavior, streaming_request)`.

    A synchronous behaviour runs in a thread with grpc's own handling; it is left as it is."""
    for attr in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, attr)
        if behavior is None:
            continue
        if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
            return handler
        return handler._replace(**{attr: wrap(behavior, attr.startswith("stream_"))})
    return handler


def run_first(behavior: Callable[..., Any], prepare: Callable[[Any], Any]) -> Callable[..., Any]:
    """`behavior` called with `prepare(request)`: a check that raises a domain error, or wraps a request stream."""
    if inspect.isasyncgenfunction(behavior):

        async def stream_wrapper(request: Any, context: Any) -> AsyncIterator[Any]:
            async for response in behavior(prepare(request), context):
                yield response

        return stream_wrapper

    async def wrapper(request: Any, context: Any) -> Any:
        return await behavior(prepare(request), context)

    return wrapper


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], exc: errors.PlexsyncError) -> None:
    status = to_rpc_status(exc)
    await context.abort(status.code, status.details, status.trailing_metadata)


def _guard(behavior: Callable[..., Any], before: Before | None) -> Callable[..., Any]:
    """Run `before` then the behaviour, mapping domain errors and unexpected ones to statuses."""

    async def handle(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if isinstance(exc, errors.PlexsyncError):
            await abort_with(context, exc)
        log.exception("unhandled error in RPC", exc_info=exc)
        status = internal_status(internal_error_message())
        await context.abort(status.code, status.details, status.trailing_metadata)

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


def internal_error_message() -> str:
    """What a caller sees of an unexpected failure: no internals, but the trace id that finds it in the logs."""
    trace_id = current_trace_id()
    where = f" (trace_id {trace_id})" if trace_id else ""
    return f"internal error{where}; see the service log for details"


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Checks `authorization: Bearer <token>` and the caller's role against the method's policy.

    `tokens` are the accepted service tokens (plexsync.common.access); `policy` maps a full method name
    ("/plexsync.v1.AuthService/GetServerCredentials") to the roles allowed to call it. A method with no entry is
    closed to everyone, so a new RPC cannot be left open by accident. Health and reflection are exempt. Every refused
    call is handed to `on_denied` (the audit log) without the presented token."""

    def __init__(
        self,
        tokens: Iterable[ServiceToken],
        policy: Mapping[str, frozenset[Role]] | None = None,
        on_denied: DenialSink | None = None,
    ) -> None:
        self._tokens = TokenTable(tokens)
        self._policy = dict(METHOD_POLICY if policy is None else policy)
        self._on_denied = on_denied

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
        token = self._identify(metadata.get("authorization"))
        allowed = self._policy.get(method)

        async def check(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            peer = context.peer() or ""
            if token is None:
                await self._denied(None, method, peer, "UNAUTHENTICATED", "missing or invalid service credentials")
                raise errors.UnauthenticatedError(
                    "missing or invalid service credentials: send 'authorization: Bearer <token>' with a token "
                    "listed in the server's PLEXSYNC_SERVICE_TOKENS"
                )
            caller = token.caller(peer, method)
            if allowed is None or not caller.may_call(allowed):
                reason = (
                    f"{method.rsplit('/', 1)[-1]} has no access policy, so no role may call it"
                    if allowed is None
                    else denial_message(caller, method, allowed)
                )
                await self._denied(caller, method, peer, "PERMISSION_DENIED", reason)
                raise errors.PermissionDeniedError(reason)
            set_current_caller(caller)
            caller_identity.set(caller.identity)

        return _wrap_handler(handler, lambda behavior: _guard(behavior, check))

    async def _denied(self, caller: Caller | None, method: str, peer: str, code: str, reason: str) -> None:
        log.warning(
            "refused a call to %s: %s",
            method,
            reason,
            extra={"code": code, "peer": peer, "identity": caller.identity if caller else None},
        )
        if self._on_denied is None:
            return
        denied = DeniedCall(
            identity=caller.identity if caller else None,
            role=caller.role_label if caller else None,
            method=method,
            peer=peer,
            reason=reason,
            code=code,
            trace_id=current_trace_id(),
        )
        try:
            await self._on_denied(denied)
        except Exception:
            log.exception("could not record a refused call", extra={"method": method})

    def _identify(self, header: str | bytes | None) -> ServiceToken | None:
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self._tokens.identify(token.strip())


class Undecodable:
    """Stands in for request bytes that are not a valid message.

    grpc.aio calls the deserializer outside the handler and answers any exception from it as UNKNOWN with the
    exception's text; returning this instead lets the handler wrapper answer INVALID_ARGUMENT."""

    __slots__ = ("message_name", "reason", "size")

    def __init__(self, message_name: str, reason: str, size: int) -> None:
        self.message_name = message_name
        self.reason = reason
        self.size = size

    def description(self) -> str:
        return f"the request is not a valid {self.message_name}: {self.reason}"


def _decode_reason(exc: Exception) -> str:
    if isinstance(exc, DecodeError):
        # upb says "Error parsing message with type 'x.Y': String field had bad UTF-8"; keep the part after the name.
        reason = str(exc).rpartition("': ")[2].strip()
        if reason:
            return reason[0].lower() + reason[1:]
    return "its bytes could not be decoded"


def tolerant_deserializer(deserializer: Callable[[bytes], Any], message_name: str) -> Callable[[bytes], Any]:
    """`deserializer` returning an `Undecodable` instead of raising."""

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:
            return Undecodable(message_name, _decode_reason(exc), len(raw))

    return deserialize


def _message_name(deserializer: Callable[[bytes], Any], method: str) -> str:
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    full_name = getattr(descriptor, "full_name", None)
    return full_name if isinstance(full_name, str) else f"request of {method}"


async def _reject(request: Undecodable, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    log.warning(
        "rejected a request that is not a valid %s: %s",
        request.message_name,
        request.reason,
        extra={"method": method, "request_bytes": request.size},
    )
    status = make_status(grpc.StatusCode.INVALID_ARGUMENT, request.description(), "MALFORMED_REQUEST")
    await context.abort(status.code, status.details, status.trailing_metadata)


def _decoding_guard(behavior: Callable[..., Any], method: str, streaming_request: bool) -> Callable[..., Any]:
    """Answer INVALID_ARGUMENT for an `Undecodable` request (or stream message) before the behaviour sees it."""

    async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await _reject(request, method, context)
            yield request

    if inspect.isasyncgenfunction(behavior):

        async def stream_wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            if streaming_request:
                request = checked(request, context)
            elif isinstance(request, Undecodable):
                await _reject(request, method, context)
            async for response in behavior(request, context):
                yield response

        return stream_wrapper

    async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if streaming_request:
            request = checked(request, context)
        elif isinstance(request, Undecodable):
            await _reject(request, method, context)
        return await behavior(request, context)

    return wrapper


class RequestDecodingInterceptor(grpc.aio.ServerInterceptor):
    """Requests whose bytes are not a valid message answer INVALID_ARGUMENT, on every method of every service.

    Installed innermost, so authentication is checked first and a stranger learns nothing about the schema."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        for attr in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, attr)
            if behavior is None:
                continue
            if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
                return handler  # a synchronous behaviour runs in a thread; leave grpc's own handling to it
            return handler._replace(
                request_deserializer=tolerant_deserializer(
                    handler.request_deserializer, _message_name(handler.request_deserializer, method)
                ),
                **{attr: _decoding_guard(behavior, method, streaming_request=attr.startswith("stream_"))},
            )
        return handler
