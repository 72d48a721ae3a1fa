"""The gRPC side of the audit log every service serves: the AuditService servicer and the method interceptor.

A service's __main__ builds an `AuditLog` on its engine, passes ``on_denied=audit.record_denied`` and
``extra_interceptors=[MethodInterceptor()]`` to its `ServiceApp`, and calls `add_audit_service(app, audit)`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from plexsync.common.audit import AuditLog, set_current_method
from plexsync.v1 import audit_pb2, audit_pb2_grpc

SERVICE_NAME = "plexsync.v1.AuditService"


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """ListAuditEvents over the service's own schema."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: Any
    ) -> audit_pb2.ListAuditEventsResponse:
        return await self.audit.list(request)


def add_audit_service(app: Any, audit: AuditLog) -> None:
    """Register the AuditService on a `ServiceApp` (typed Any: grpc_server imports nothing of the audit log)."""
    app.add_service(SERVICE_NAME, audit_pb2_grpc.add_AuditServiceServicer_to_server, AuditServicer(audit))


def _with_method(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            set_current_method(method)
            async for response in behavior(request, context):
                yield response

        return stream

    async def unary(request: Any, context: Any) -> Any:
        set_current_method(method)
        return await behavior(request, context)

    return unary


class MethodInterceptor(grpc.aio.ServerInterceptor):
    """Makes the full method name of the RPC being handled available to `audit.current_method()`."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        for attr in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behavior = getattr(handler, attr)
            if behavior is not None:
                return handler._replace(**{attr: _with_method(behavior, method)})
        return handler
