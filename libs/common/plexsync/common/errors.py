"""Domain errors that know nothing of gRPC; `grpc_errors` maps them to status codes.

Domain code raises these; handlers stay thin because one interceptor translates them.
Messages must say what to do and must never contain a secret.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass


class PlexsyncError(Exception):
    """Base of every error a caller can act on."""


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request (maps to google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


class InvalidArgumentError(PlexsyncError):
    """The caller sent something invalid; lists every offending field."""

    def __init__(self, violations: Iterable[FieldViolation] | FieldViolation, message: str = "") -> None:
        self.violations = [violations] if isinstance(violations, FieldViolation) else list(violations)
        text = message or "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(text or "invalid argument")

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgumentError:
        return cls(FieldViolation(field, description))


class NotFoundError(PlexsyncError):
    """The named resource does not exist."""

    def __init__(self, kind: str, ident: str, hint: str = "") -> None:
        super().__init__(f"{kind} {ident!r} not found" + (f": {hint}" if hint else ""))
        self.kind = kind
        self.ident = ident


class AlreadyExistsError(PlexsyncError):
    """The resource exists already."""


class FailedPreconditionError(PlexsyncError):
    """The system is not in a state that allows the operation (e.g. a scan is already running)."""


class AbortedError(PlexsyncError):
    """The operation lost a race with a concurrent one (a conflicting write); retrying it may succeed."""


class UnauthenticatedError(PlexsyncError):
    """Credentials are missing or invalid."""


class PermissionDeniedError(PlexsyncError):
    """The caller is known but not allowed to do this."""


class UnavailableError(PlexsyncError):
    """A dependency (Plex, plex.tv, a peer service) cannot be reached now; retrying may help."""


class DeadlineExceededError(PlexsyncError):
    """The operation did not finish in the time allowed."""


class CancelledError(PlexsyncError):
    """The operation was cancelled."""


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
