"""Connections from the CLI to the services, with the caller's bearer token and readable failures."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from plexsync.common.grpc_errors import error_info, field_violations, retry_delay
from plexsync.common.tls import TlsConfigError, channel_credentials_from_files
from plexsync.v1 import auth_pb2_grpc, catalog_pb2_grpc, scanner_pb2_grpc, scheduler_pb2_grpc

T = TypeVar("T")

DEFAULT_ADDRESSES = {
    "auth": "127.0.0.1:50051",
    "catalog": "127.0.0.1:50052",
    "scanner": "127.0.0.1:50053",
    "scheduler": "127.0.0.1:50054",
}


class CliError(Exception):
    """A failure to show the user as one clear message (and exit 1); `component` names what failed: "cli" (the
    command line or local settings), a service ("scanner"), or the service's dependency it reported ("plex")."""

    def __init__(self, message: str, *, component: str = "cli") -> None:
        super().__init__(message)
        self.component = component


# A command: parsed arguments and the services in, exit code out.
Handler = Callable[[argparse.Namespace, "Services"], int]


@dataclass
class Endpoints:
    """Where the services are and the token to present, from flags or the environment."""

    addresses: dict[str, str] = field(default_factory=dict)
    token: str = ""
    # TLS: the CA that verifies the services (set: TLS, unset: plain TCP) and our client certificate for mTLS.
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @classmethod
    def from_env(cls) -> Endpoints:
        addresses = {
            name: os.environ.get(f"PLEXSYNC_{name.upper()}_ADDR", default)
            for name, default in DEFAULT_ADDRESSES.items()
        }
        token = os.environ.get("PLEXSYNC_CLI_TOKEN") or os.environ.get("PLEXSYNC_SERVICE_TOKEN", "")
        return cls(
            addresses=addresses,
            token=token,
            tls_ca_file=os.environ.get("PLEXSYNC_TLS_CA_FILE", ""),
            tls_cert_file=os.environ.get("PLEXSYNC_TLS_CERT_FILE", ""),
            tls_key_file=os.environ.get("PLEXSYNC_TLS_KEY_FILE", ""),
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials when PLEXSYNC_TLS_CA_FILE is set; a file that cannot be used is a CliError."""
        if not self.tls_ca_file:
            return None
        try:
            return channel_credentials_from_files(self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        except TlsConfigError as exc:
            raise CliError(f"the CLI's TLS settings (PLEXSYNC_TLS_*_FILE): {exc}") from None


class Services:
    """Lazily opened stubs for each service."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self._channels: dict[str, grpc.Channel] = {}

    def _channel(self, name: str) -> grpc.Channel:
        if name not in self._channels:
            address = self.endpoints.addresses[name]
            credentials = self.endpoints.credentials()
            self._channels[name] = (
                grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
            )
        return self._channels[name]

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.endpoints.token}"),) if self.endpoints.token else ()

    @property
    def auth(self) -> auth_pb2_grpc.AuthServiceStub:
        return auth_pb2_grpc.AuthServiceStub(self._channel("auth"))

    @property
    def catalog(self) -> catalog_pb2_grpc.CatalogServiceStub:
        return catalog_pb2_grpc.CatalogServiceStub(self._channel("catalog"))

    @property
    def scanner(self) -> scanner_pb2_grpc.ScannerServiceStub:
        return scanner_pb2_grpc.ScannerServiceStub(self._channel("scanner"))

    @property
    def scheduler(self) -> scheduler_pb2_grpc.SchedulerServiceStub:
        return scheduler_pb2_grpc.SchedulerServiceStub(self._channel("scheduler"))

    def call(self, service: str, method: Callable[..., T], request: Any, timeout: float | None = 30) -> T:
        """Call `method` and turn gRPC failures into a CliError that says what to do."""
        try:
            return method(request, metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise describe_error(service, self.endpoints.addresses[service], exc) from None

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


# Where to look up the ids a service did not find.
_NOT_FOUND_HINTS = {
    "auth": "`plexsync servers list` shows server ids",
    "catalog": "`plexsync libraries list` shows library ids, `plexsync items list` item ids",
    "scanner": "`plexsync scans list` shows scan ids",
    "scheduler": "`plexsync jobs list` shows job ids, `plexsync schedule list` library ids",
}


# Words gRPC puts in UNAVAILABLE details when the failure is the TLS handshake, not an absent server.
_TLS_WORDS = ("ssl", "tls", "handshake", "certificate", "socket closed")
# Words in a service's UNAVAILABLE message when what it could not reach is Plex (or plex.tv) rather than a peer.
_PLEX_WORDS = ("plex", "server '", "connection")
_LOGS = "its log (.dev/logs/{service}.log under `make up`)"


def describe_error(service: str, address: str, exc: grpc.RpcError) -> CliError:
    """One message naming the component that failed, what went wrong and what to do about it.

    Every plexsync service puts an ErrorInfo in its errors: with one, the service answered (and its message says
    what it could not do, e.g. reach Plex); without one, the failure is the channel's (the service was not reached,
    refused the connection's TLS, or did not answer in time)."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    answered = isinstance(exc, grpc.Call) and error_info(exc) is not None
    env_addr = f"PLEXSYNC_{service.upper()}_ADDR"
    logs = _LOGS.format(service=service)
    if code == grpc.StatusCode.UNAVAILABLE and not answered:
        if any(w in details.lower() for w in _TLS_WORDS):
            return CliError(
                f"no TLS connection to the {service} service at {address} ({details}). Set PLEXSYNC_TLS_CA_FILE to the "
                "CA that signed its certificate (and PLEXSYNC_TLS_CERT_FILE/PLEXSYNC_TLS_KEY_FILE when it requires "
                'client certificates); after `make up TLS=1`: eval "$(.venv/bin/python -m plexsync.devstack env)"',
                component=service,
            )
        return CliError(
            f"cannot reach the {service} service at {address} ({details}). Is it running? `make status` shows what "
            f"runs; start the stack with `make up`, or point {env_addr} at it.",
            component=service,
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        delay = retry_delay(exc)
        retry = f"try again in {delay:g} s" if delay else "try again shortly"
        if any(w in details.lower() for w in _PLEX_WORDS):
            return CliError(
                f"the {service} service is running but cannot reach Plex: {details}. `plexsync servers check` "
                "shows which of the server's connections answer and `plexsync servers discover` refreshes them "
                f"from plex.tv; then {retry}.",
                component="plex",
            )
        return CliError(
            f"the {service} service is running but something it needs is unavailable: {details}. "
            f"{retry.capitalize()}; `make status` shows the services, {logs} what failed.",
            component=service,
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return CliError(
            f"the {service} service refused our credentials: set PLEXSYNC_CLI_TOKEN to a token listed for 'cli' in "
            'its PLEXSYNC_SERVICE_TOKENS (after `make up`: eval "$(.venv/bin/python -m plexsync.devstack env)")',
            component=service,
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return CliError(
            f"the {service} service does not allow this for our identity ({details}): use the token of an identity "
            "with the admin role in PLEXSYNC_CLI_TOKEN (docs/security.md lists what each role may call)",
            component=service,
        )
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return CliError(
            f"the {service} service at {address} does not offer this call ({details}): is {env_addr} pointing at the "
            f"{service} service, and is it as new as this command?",
            component=service,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and not answered:
        return CliError(
            f"the {service} service at {address} did not answer in time; see {logs}, then try again",
            component=service,
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and not answered:
        return CliError(
            f"the {service} service's answer was larger than the CLI accepts ({details}): ask for less (--limit)",
            component=service,
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violations = field_violations(exc)
        problem = "; ".join(f"{f}: {d}" for f, d in violations) if violations else details
        return CliError(
            f"invalid argument ({service}): {problem}. Fix it and run the command again (--help shows the arguments)",
            component=service,
        )
    if code == grpc.StatusCode.NOT_FOUND:
        hint = f" ({_NOT_FOUND_HINTS[service]})" if service in _NOT_FOUND_HINTS else ""
        return CliError(f"{service}: NOT_FOUND: {details}{hint}", component=service)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        delay = retry_delay(exc)
        return CliError(
            f"the {service} service is limiting our calls: {details}; try again "
            + (f"in {delay:g} s" if delay else "in a moment"),
            component=service,
        )
    if code == grpc.StatusCode.ABORTED:
        return CliError(f"the {service} service: {details} (a concurrent change won; run it again)", component=service)
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS, None):
        name = code.name if code is not None else "an error"
        return CliError(
            f"the {service} service failed unexpectedly ({name}: {details}); {logs} has the details "
            "(look for the trace id), and the command may succeed when run again",
            component=service,
        )
    # FAILED_PRECONDITION, ALREADY_EXISTS, CANCELLED, OUT_OF_RANGE, a service's DEADLINE_EXCEEDED: the services'
    # messages say what to do.
    return CliError(f"{service}: {code.name}: {details}", component=service)
