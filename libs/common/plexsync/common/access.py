"""Who may call what: caller roles, the service tokens that carry them, and one policy table for every RPC.

Every plexsync RPC has an entry in `METHOD_POLICY` (a unit test reads the protos and fails on a missing one), so a
new method is closed until someone decides who may call it. The auth interceptor (interceptors.py) enforces it;
this module knows nothing of gRPC.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What a caller is for. Roles are fixed; identities (names) are the operator's."""

    SCANNER = "scanner"  # the scanner service: writes scan results, fetches Plex credentials
    SCHEDULER = "scheduler"  # the scheduler service: dispatches scans, re-enumerates servers
    ADMIN = "admin"  # the CLI and operators: everything public, including changes
    READER = "reader"  # other systems: List/Get/Search/Watch only


# An identity with no "@role" in PLEXSYNC_SERVICE_TOKENS takes its role from its name.
DEFAULT_ROLES: dict[str, Role] = {role.value: role for role in Role} | {"cli": Role.ADMIN}


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of the current RPC.

    `role` is the caller's role; `also` holds further roles of a token configured with several
    (`identity@scanner+admin:TOKEN`, for test stacks and all-in-one setups; production gives each identity one)."""

    identity: str
    role: Role
    peer: str
    also: frozenset[Role] = frozenset()
    method: str = ""  # the full gRPC method being handled ("/plexsync.v1.AuthService/AddServer")

    @property
    def roles(self) -> frozenset[Role]:
        return self.also | {self.role}

    @property
    def role_label(self) -> str:
        return "+".join([self.role.value, *sorted(r.value for r in self.also - {self.role})])

    def may_call(self, allowed: frozenset[Role]) -> bool:
        return bool(self.roles & allowed)


@dataclass(frozen=True)
class DeniedCall:
    """A call refused by the interceptor (for the audit log); never carries the presented token."""

    identity: str | None
    role: str | None
    method: str
    peer: str
    reason: str
    code: str  # "UNAUTHENTICATED" or "PERMISSION_DENIED"
    trace_id: str


DenialSink = Callable[[DeniedCall], Awaitable[None]]

_current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("plexsync_caller", default=None)


def current_caller() -> Caller | None:
    """The caller of the RPC being handled (None outside an authenticated RPC)."""
    return _current_caller.get()


def set_current_caller(caller: Caller | None) -> None:
    _current_caller.set(caller)


class TokenFormatError(ValueError):
    """PLEXSYNC_SERVICE_TOKENS cannot be parsed; the message never contains a token."""


@dataclass(frozen=True)
class ServiceToken:
    identity: str
    role: Role
    digest: bytes  # SHA-256 of the token: what is kept in memory and compared
    also: frozenset[Role] = frozenset()

    def caller(self, peer: str, method: str = "") -> Caller:
        return Caller(self.identity, self.role, peer, self.also, method)


def parse_service_tokens(raw: str) -> list[ServiceToken]:
    """Parse `identity:token` / `identity@role:token` entries, comma separated.

    An identity may appear with several tokens (rotation: the old and the new are both valid until the old one is
    removed). Errors name the entry's position and identity, never its token."""
    parsed: list[ServiceToken] = []
    for position, entry in enumerate((e.strip() for e in raw.split(",")), start=1):
        if not entry:
            continue
        name, sep, token = entry.partition(":")
        identity, at, role_name = name.strip().partition("@")
        token = token.strip()
        if not sep or not identity or not token or (at and not role_name):
            raise TokenFormatError(
                f"PLEXSYNC_SERVICE_TOKENS entry {position} must look like 'identity:TOKEN' or 'identity@role:TOKEN'"
            )
        also: list[Role] = []
        if at:
            try:
                role, *also = (Role(name.strip().lower()) for name in role_name.split("+"))
            except ValueError:
                raise TokenFormatError(
                    f"PLEXSYNC_SERVICE_TOKENS entry {position} ({identity}) names role {role_name!r}; "
                    f"roles are {', '.join(r.value for r in Role)}"
                ) from None
        elif identity in DEFAULT_ROLES:
            role = DEFAULT_ROLES[identity]
        else:
            raise TokenFormatError(
                f"PLEXSYNC_SERVICE_TOKENS entry {position}: identity {identity!r} needs a role "
                f"('{identity}@reader:TOKEN'; roles are {', '.join(r.value for r in Role)})"
            )
        parsed.append(ServiceToken(identity, role, _digest(token), frozenset(also)))
    return parsed


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """Looks up a presented bearer token in constant time with respect to every accepted token.

    Each presented token is hashed and compared with `hmac.compare_digest` against every accepted digest (no early
    exit), so neither the timing of a match nor of a miss tells how much of a guess was right."""

    def __init__(self, tokens: Iterable[ServiceToken]) -> None:
        self._tokens = tuple(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def identify(self, presented: str) -> ServiceToken | None:
        digest = _digest(presented)
        found: ServiceToken | None = None
        for candidate in self._tokens:
            if hmac.compare_digest(candidate.digest, digest):
                found = candidate
        return found


_R = frozenset({Role.READER, Role.ADMIN})  # public reads
_A = frozenset({Role.ADMIN})  # changes
_SC = frozenset({Role.SCANNER})  # the scanner's internal write path


def _with(base: frozenset[Role], *extra: Role) -> frozenset[Role]:
    return base | frozenset(extra)


METHOD_POLICY: dict[str, frozenset[Role]] = {
    # AuthService
    "/plexsync.v1.AuthService/StartPinLogin": _A,
    "/plexsync.v1.AuthService/CompletePinLogin": _A,
    "/plexsync.v1.AuthService/CancelPinLogin": _A,
    "/plexsync.v1.AuthService/AddServer": _A,
    "/plexsync.v1.AuthService/DiscoverServers": _A,
    "/plexsync.v1.AuthService/ListServers": _with(_R, Role.SCANNER, Role.SCHEDULER),
    "/plexsync.v1.AuthService/GetServer": _with(_R, Role.SCANNER, Role.SCHEDULER),
    "/plexsync.v1.AuthService/RemoveServer": _A,
    "/plexsync.v1.AuthService/CheckServer": _A,
    "/plexsync.v1.AuthService/GetServerCredentials": _SC,
    "/plexsync.v1.AuthService/CheckToken": _A,  # diagnostics
    # CatalogService
    "/plexsync.v1.CatalogService/RegisterLibraries": _SC,
    "/plexsync.v1.CatalogService/ListLibraries": _with(_R, Role.SCANNER, Role.SCHEDULER),
    "/plexsync.v1.CatalogService/GetLibrary": _with(_R, Role.SCANNER, Role.SCHEDULER),
    # The scheduler forwards an admin's UpdateSchedule (enabled, interval) to the library it belongs to.
    "/plexsync.v1.CatalogService/UpdateLibrary": _with(_A, Role.SCHEDULER),
    "/plexsync.v1.CatalogService/SetPathReplacements": _A,
    "/plexsync.v1.CatalogService/SetLibraryRules": _A,
    "/plexsync.v1.CatalogService/ListPathReplacements": _with(_R, Role.SCANNER),
    "/plexsync.v1.CatalogService/GetItemEtags": _SC,
    "/plexsync.v1.CatalogService/WriteItems": _SC,
    "/plexsync.v1.CatalogService/FinishScan": _SC,
    "/plexsync.v1.CatalogService/MarkItemsMissing": _SC,
    "/plexsync.v1.CatalogService/ListItems": _R,
    "/plexsync.v1.CatalogService/GetItem": _R,
    "/plexsync.v1.CatalogService/SearchItems": _R,
    "/plexsync.v1.CatalogService/ListCollections": _R,
    "/plexsync.v1.CatalogService/ListNetworks": _R,
    "/plexsync.v1.CatalogService/GetLibraryStats": _with(_R, Role.SCHEDULER),
    "/plexsync.v1.CatalogService/WatchChanges": _R,
    # ScannerService
    "/plexsync.v1.ScannerService/SyncServer": _with(_A, Role.SCHEDULER),
    "/plexsync.v1.ScannerService/ScanLibrary": _A,
    "/plexsync.v1.ScannerService/GetScan": _with(_R, Role.SCHEDULER),
    "/plexsync.v1.ScannerService/ListScans": _with(_R, Role.SCHEDULER),
    "/plexsync.v1.ScannerService/CancelScan": _A,
    "/plexsync.v1.ScannerService/WatchScan": _with(_R, Role.SCHEDULER),
    "/plexsync.v1.ScannerService/ListWatchers": _R,
    "/plexsync.v1.ScannerService/TestPaths": _A,  # diagnostics
    "/plexsync.v1.ScannerService/TestRules": _A,  # a dry run reads Plex with the server's token
    # SchedulerService (a DEEP TriggerSync is admin-only, checked by the handler: the policy cannot see the mode)
    "/plexsync.v1.SchedulerService/TriggerSync": _with(_A, Role.SCANNER),
    "/plexsync.v1.SchedulerService/GetJob": _R,
    "/plexsync.v1.SchedulerService/ListJobs": _R,
    "/plexsync.v1.SchedulerService/CancelJob": _A,
    "/plexsync.v1.SchedulerService/WatchJobs": _R,
    "/plexsync.v1.SchedulerService/GetSchedule": _R,
    "/plexsync.v1.SchedulerService/ListSchedules": _R,
    "/plexsync.v1.SchedulerService/UpdateSchedule": _A,
    "/plexsync.v1.SchedulerService/GetSchedulerStatus": _R,
    # VersionService (every service): harmless to anyone authenticated
    "/plexsync.v1.VersionService/GetVersion": _with(_R, Role.SCANNER, Role.SCHEDULER),
    # AuditService (every service): identities, addresses and what changed are for operators, not other systems
    "/plexsync.v1.AuditService/ListAuditEvents": _A,
}


def denial_message(caller: Caller, method: str, allowed: frozenset[Role]) -> str:
    """PERMISSION_DENIED's text: names the caller's role and the method, and who may call it."""
    short = method.rsplit("/", 1)[-1]
    return (
        f"role {caller.role_label!r} (caller {caller.identity!r}) may not call {short}; "
        f"allowed roles: {', '.join(sorted(r.value for r in allowed))}"
    )
