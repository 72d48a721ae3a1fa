"""Errors a plexsync call can raise: one class per gRPC status a caller handles differently, with AIP-193 details.

Every error carries the gRPC `code`, the server's message and, when the server sent them (it does for every error),
the google.rpc details: ErrorInfo (`reason`, `domain`, `metadata`), BadRequest (`field_violations`), ResourceInfo
(`resource`) and RetryInfo (`retry_delay`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


@dataclass(frozen=True)
class Resource:
    """The resource a NOT_FOUND names (google.rpc.ResourceInfo)."""

    type: str
    name: str


@dataclass(frozen=True)
class ErrorDetails:
    """The google.rpc details of a status, decoded."""

    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: tuple[FieldViolation, ...] = ()
    resource: Resource | None = None
    retry_delay: float | None = None  # seconds


class PlexsyncError(Exception):
    """A plexsync call failed; `code` is the gRPC status code, `details` what the server said about it."""

    def __init__(self, code: grpc.StatusCode, message: str, details: ErrorDetails, method: str = "") -> None:
        super().__init__(f"{code.name}: {message}" + (f" ({method})" if method else ""))
        self.code = code
        self.message = message
        self.details = details
        self.method = method

    @property
    def reason(self) -> str:
        return self.details.reason

    @property
    def field_violations(self) -> tuple[FieldViolation, ...]:
        return self.details.field_violations

    @property
    def resource(self) -> Resource | None:
        return self.details.resource

    @property
    def retry_delay(self) -> float | None:
        return self.details.retry_delay


class InvalidArgumentError(PlexsyncError):
    """The request is wrong; `field_violations` say which fields and why."""


class NotFoundError(PlexsyncError):
    """What the request names does not exist; `resource` says what."""


class AlreadyExistsError(PlexsyncError):
    pass


class FailedPreconditionError(PlexsyncError):
    """The system is not in a state to do it (e.g. a resume token older than the kept change log)."""


class AbortedError(PlexsyncError):
    pass


class UnauthenticatedError(PlexsyncError):
    """No token, or one the service does not know."""


class PermissionDeniedError(PlexsyncError):
    """The token's role may not call this method."""


class UnavailableError(PlexsyncError):
    """The service (or something it needs) is away; retried by the client before it is raised."""


class ResourceExhaustedError(PlexsyncError):
    """Too many calls or too large a message; `retry_delay` says when to try again, if the server said."""


class DeadlineExceededError(PlexsyncError):
    pass


class CancelledError(PlexsyncError):
    pass


class ServerError(PlexsyncError):
    """INTERNAL, UNKNOWN and the other codes a caller cannot fix; the message names a trace id to report."""


_CLASSES: dict[grpc.StatusCode, type[PlexsyncError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
}


def decode_details(status: status_pb2.Status) -> ErrorDetails:
    """The ErrorInfo, BadRequest, ResourceInfo and RetryInfo of a google.rpc.Status (others are ignored)."""
    reason, domain, metadata = "", "", {}
    violations: list[FieldViolation] = []
    resource: Resource | None = None
    retry: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            res = error_details_pb2.ResourceInfo()
            detail.Unpack(res)
            resource = Resource(res.resource_type, res.resource_name)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            ri = error_details_pb2.RetryInfo()
            detail.Unpack(ri)
            retry = ri.retry_delay.ToMilliseconds() / 1000
    return ErrorDetails(reason, domain, metadata, tuple(violations), resource, retry)


def from_rpc_error(error: grpc.RpcError, method: str = "") -> PlexsyncError:
    """The PlexsyncError for a failed call (`error` is what grpcio raised)."""
    code: grpc.StatusCode = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message: str = (error.details() if hasattr(error, "details") else None) or ""
    details = ErrorDetails()
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                details = decode_details(status_pb2.Status.FromString(value))
            except DecodeError:  # a garbled trailer must not hide the status itself
                details = ErrorDetails()
    return _CLASSES.get(code, ServerError)(code, message, details, method)
