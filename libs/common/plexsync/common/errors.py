"""Domain errors that know nothing of gRPC; `grpc_errors` maps them to status codes.

Domain code raises these; handlers stay thin because one interceptor translates them.
Messages must say what to do and must never contain a secret. Each kind has a stable UPPER_SNAKE `reason`
(sent as google.rpc.ErrorInfo.reason, AIP-193): callers may branch on it, so never rename one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

# How long a caller should wait before retrying an UNAVAILABLE call when the error does not say (RetryInfo).
DEFAULT_RETRY_AFTER_SECONDS = 1.0


class PlexsyncError(Exception):
    """Base of every error a caller can act on."""

    reason: ClassVar[str] = "FAILED_PRECONDITION"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request (maps to google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


class InvalidArgumentError(PlexsyncError):
    """The caller sent something invalid; lists every offending field."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Iterable[FieldViolation] | FieldViolation, message: str = "") -> None:
        self.violations = [violations] if isinstance(violations, FieldViolation) else list(violations)
        text = message or "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(text or "invalid argument")

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgumentError:
        return cls(FieldViolation(field, description))


class NotFoundError(PlexsyncError):
    """The named resource does not exist.

    `kind` words the message ("library"); `resource_type` is the resource's stable type for
    google.rpc.ResourceInfo, the full name of its proto message ("plexsync.v1.Library"), and `ident` its name."""

    reason = "RESOURCE_NOT_FOUND"

    def __init__(self, kind: str, ident: str, hint: str = "", *, resource_type: str) -> None:
        super().__init__(f"{kind} {ident!r} not found" + (f": {hint}" if hint else ""))
        self.kind = kind
        self.ident = ident
        self.resource_type = resource_type

    @property
    def resource_name(self) -> str:
        return self.ident


class AlreadyExistsError(PlexsyncError):
    """The resource exists already."""

    reason = "RESOURCE_ALREADY_EXISTS"


class FailedPreconditionError(PlexsyncError):
    """The system is not in a state that allows the operation (e.g. a scan is already running)."""

    reason = "FAILED_PRECONDITION"


class AbortedError(PlexsyncError):
    """The operation lost a race with a concurrent one (a conflicting write); retrying it may succeed."""

    reason = "CONCURRENT_CONFLICT"


class UnauthenticatedError(PlexsyncError):
    """Credentials are missing or invalid."""

    reason = "INVALID_CREDENTIALS"


class PermissionDeniedError(PlexsyncError):
    """The caller is known but not allowed to do this."""

    reason = "PERMISSION_DENIED"


class UnavailableError(PlexsyncError):
    """A dependency (Plex, plex.tv, a peer service) cannot be reached now; retrying after `retry_after` seconds
    may help (sent as google.rpc.RetryInfo)."""

    reason = "DEPENDENCY_UNAVAILABLE"

    def __init__(self, message: str = "", *, retry_after: float = DEFAULT_RETRY_AFTER_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ResourceExhaustedError(PlexsyncError):
    """The caller exceeded a limit (a rate limit, a quota); it may retry after `retry_after` seconds."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str = "", *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceededError(PlexsyncError):
    """The operation did not finish in the time allowed."""

    reason = "DEADLINE_EXCEEDED"


class CancelledError(PlexsyncError):
    """The operation was cancelled."""

    reason = "CANCELLED"


def collect_violations(checks: Iterable[tuple[bool, str, str]]) -> None:
    """Raise InvalidArgumentError for every (failed, field, description) check that failed."""
    violations = [FieldViolation(field, description) for failed, field, description in checks if failed]
    if violations:
        raise InvalidArgumentError(violations)


def parse_uuid(value: str, field_name: str, *, required: bool = True) -> uuid.UUID | None:
    """A UUID from a request field; INVALID_ARGUMENT naming the field when it is empty (if required) or malformed."""
    if not value:
        if required:
            raise InvalidArgumentError.single(field_name, "is required")
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgumentError.single(field_name, f"must be a UUID, got {value[:64]!r}") from None
