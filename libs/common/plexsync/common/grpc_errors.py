"""Translate domain errors into canonical gRPC statuses with rich details (google.rpc.*)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from plexsync.common import errors

_CODES: list[tuple[type[errors.PlexsyncError], grpc.StatusCode]] = [
    (errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.AbortedError, grpc.StatusCode.ABORTED),
    (errors.UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.UnavailableError, grpc.StatusCode.UNAVAILABLE),
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


def to_rpc_status(exc: errors.PlexsyncError) -> grpc.Status:
    """A grpc.Status carrying BadRequest field violations for invalid arguments."""
    code = status_code_for(exc)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=clip(str(exc), MAX_MESSAGE_BYTES))
    if isinstance(exc, errors.InvalidArgumentError):
        bad_request = error_details_pb2.BadRequest(field_violations=_violations(exc))
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    return rpc_status.to_status(status)


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs of an INVALID_ARGUMENT error received by a client."""
    status = rpc_status.from_call(error)
    if status is None:
        return []
    found: list[tuple[str, str]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend((v.field, v.description) for v in bad_request.field_violations)
    return found
