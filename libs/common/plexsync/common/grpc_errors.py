"""Translate domain errors into canonical gRPC statuses with rich details (google.rpc.*, AIP-193).

Every error carries an ErrorInfo (a stable reason and the service's domain, e.g. "catalog.plexsync.dev");
INVALID_ARGUMENT adds BadRequest field violations, NOT_FOUND a ResourceInfo, UNAVAILABLE and RESOURCE_EXHAUSTED
a RetryInfo.
"""

from __future__ import annotations

import math
from typing import TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from plexsync.common import errors

DOMAIN_SUFFIX = "plexsync.dev"
_domain = DOMAIN_SUFFIX


def set_service_domain(service: str) -> None:
    """Name this process's service in ErrorInfo.domain ("catalog" → "catalog.plexsync.dev"); ServiceApp calls it."""
    global _domain
    _domain = f"{service}.{DOMAIN_SUFFIX}"


def service_domain() -> str:
    return _domain


_CODES: list[tuple[type[errors.PlexsyncError], grpc.StatusCode]] = [
    (errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.AbortedError, grpc.StatusCode.ABORTED),
    (errors.UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.CancelledError, grpc.StatusCode.CANCELLED),
]


def status_code_for(exc: errors.PlexsyncError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.FAILED_PRECONDITION


# The status travels in trailers, and a client refuses trailers over its metadata limit (8 KiB soft, 16 KiB hard by
# default) with RESOURCE_EXHAUSTED instead of the real status: a message quoting a huge input must be clipped.
MAX_MESSAGE_BYTES = 1000
MAX_FIELD_BYTES = 200
MAX_DESCRIPTION_BYTES = 500
MAX_VIOLATIONS_BYTES = 2500


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, marked with an ellipsis when cut."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "…"


def _violations(exc: errors.InvalidArgumentError) -> list[error_details_pb2.BadRequest.FieldViolation]:
    out: list[error_details_pb2.BadRequest.FieldViolation] = []
    budget = MAX_VIOLATIONS_BYTES
    for i, v in enumerate(exc.violations):
        field, description = clip(v.field, MAX_FIELD_BYTES), clip(v.description, MAX_DESCRIPTION_BYTES)
        budget -= len(field.encode()) + len(description.encode())
        if budget < 0:
            out.append(
                error_details_pb2.BadRequest.FieldViolation(
                    field="request", description=f"{len(exc.violations) - i} more invalid fields not listed"
                )
            )
            break
        out.append(error_details_pb2.BadRequest.FieldViolation(field=field, description=description))
    return out


def _pack(status: status_pb2.Status, message: Message) -> None:
    detail = any_pb2.Any()
    detail.Pack(message)
    status.details.append(detail)


def _retry_delay(seconds: float) -> duration_pb2.Duration:
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(max(0, math.ceil(seconds * 1000)))
    return delay


def make_status(
    code: grpc.StatusCode, message: str, reason: str, *details: Message, metadata: dict[str, str] | None = None
) -> grpc.Status:
    """A grpc.Status with `message` clipped, an ErrorInfo (`reason`, this service's domain) and `details`."""
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=clip(message, MAX_MESSAGE_BYTES))
    info = error_details_pb2.ErrorInfo(reason=reason, domain=_domain)
    for key, value in (metadata or {}).items():
        info.metadata[key] = clip(value, MAX_FIELD_BYTES)
    _pack(status, info)
    for detail in details:
        _pack(status, detail)
    return rpc_status.to_status(status)


def internal_status(message: str) -> grpc.Status:
    """INTERNAL for an unexpected failure (`message` names no internals, only where to look)."""
    return make_status(grpc.StatusCode.INTERNAL, message, "INTERNAL_ERROR")


def to_rpc_status(exc: errors.PlexsyncError) -> grpc.Status:
    """A grpc.Status for a domain error, with the AIP-193 details of its kind."""
    details: list[Message] = []
    metadata: dict[str, str] = {}
    if isinstance(exc, errors.InvalidArgumentError):
        details.append(error_details_pb2.BadRequest(field_violations=_violations(exc)))
    elif isinstance(exc, errors.NotFoundError):
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=clip(exc.resource_type, MAX_FIELD_BYTES),
                resource_name=clip(exc.resource_name, MAX_FIELD_BYTES),
            )
        )
        metadata["resource_type"] = exc.resource_type
    elif isinstance(exc, errors.UnavailableError | errors.ResourceExhaustedError):
        details.append(error_details_pb2.RetryInfo(retry_delay=_retry_delay(exc.retry_after)))
    return make_status(status_code_for(exc), str(exc), exc.reason, *details, metadata=metadata)


def _details(error: grpc.RpcError) -> list[any_pb2.Any]:
    status = rpc_status.from_call(error)
    return list(status.details) if status is not None else []


M = TypeVar("M", bound=Message)


def _first(error: grpc.RpcError, kind: type[M]) -> M | None:
    for detail in _details(error):
        found = kind()
        if detail.TypeName() == found.DESCRIPTOR.full_name:
            detail.Unpack(found)
            return found
    return None


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo (reason, domain) of an error received by a client."""
    return _first(error, error_details_pb2.ErrorInfo)


def resource_info(error: grpc.RpcError) -> error_details_pb2.ResourceInfo | None:
    """The ResourceInfo of a NOT_FOUND received by a client."""
    return _first(error, error_details_pb2.ResourceInfo)


def retry_delay(error: grpc.RpcError) -> float | None:
    """Seconds the server asked the client to wait before retrying (RetryInfo), if it said."""
    info = _first(error, error_details_pb2.RetryInfo)
    return info.retry_delay.ToMilliseconds() / 1000 if info is not None else None


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs of an INVALID_ARGUMENT error received by a client."""
    found: list[tuple[str, str]] = []
    for detail in _details(error):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend((v.field, v.description) for v in bad_request.field_violations)
    return found


def relayed_not_found(service: str, error: grpc.RpcError) -> errors.NotFoundError:
    """A peer's NOT_FOUND as our own, keeping its message and the resource it named."""
    info = resource_info(error)
    err = errors.NotFoundError(
        service,
        info.resource_name if info is not None else "",
        resource_type=info.resource_type if info is not None else "",
    )
    details = error.details() if isinstance(error, grpc.Call) else None
    err.args = (details or str(err),)
    return err
