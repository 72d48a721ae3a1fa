"""The gRPC side of the audit log every service serves: the AuditService servicer.

A service's __main__ builds an `AuditLog` on its engine, passes ``on_denied=audit.record_denied`` to its
`ServiceApp`, and calls `add_audit_service(app, audit)`.
"""

from __future__ import annotations

from typing import Any

from plexsync.common.audit import AuditLog
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
