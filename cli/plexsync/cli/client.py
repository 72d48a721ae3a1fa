"""Connections from the CLI to the services, with the caller's bearer token and readable failures."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from plexsync.common.grpc_errors import field_violations
from plexsync.v1 import auth_pb2_grpc, catalog_pb2_grpc, scanner_pb2_grpc, scheduler_pb2_grpc

T = TypeVar("T")

DEFAULT_ADDRESSES = {
    "auth": "127.0.0.1:50051",
    "catalog": "127.0.0.1:50052",
    "scanner": "127.0.0.1:50053",
    "scheduler": "127.0.0.1:50054",
}


class CliError(Exception):
    """A failure to show the user as one clear message (and exit 1)."""


# A command: parsed arguments and the services in, exit code out.
Handler = Callable[[argparse.Namespace, "Services"], int]


@dataclass
class Endpoints:
    """Where the services are and the token to present, from flags or the environment."""

    addresses: dict[str, str] = field(default_factory=dict)
    token: str = ""

    @classmethod
    def from_env(cls) -> Endpoints:
        addresses = {
            name: os.environ.get(f"PLEXSYNC_{name.upper()}_ADDR", default)
            for name, default in DEFAULT_ADDRESSES.items()
        }
        token = os.environ.get("PLEXSYNC_CLI_TOKEN") or os.environ.get("PLEXSYNC_SERVICE_TOKEN", "")
        return cls(addresses=addresses, token=token)


class Services:
    """Lazily opened stubs for each service."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self._channels: dict[str, grpc.Channel] = {}

    def _channel(self, name: str) -> grpc.Channel:
        if name not in self._channels:
            self._channels[name] = grpc.insecure_channel(self.endpoints.addresses[name])
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


def describe_error(service: str, address: str, exc: grpc.RpcError) -> CliError:
    """One message naming the service, what went wrong and what to do about it."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        return CliError(
            f"cannot reach the {service} service at {address} ({details}). Is it running? Start the stack with "
            f"`make up`, or point PLEXSYNC_{service.upper()}_ADDR at it."
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return CliError(
            f"the {service} service refused our credentials: set PLEXSYNC_CLI_TOKEN to a token listed for 'cli' in "
            'its PLEXSYNC_SERVICE_TOKENS (after `make up`: eval "$(.venv/bin/python -m plexsync.devstack env)")'
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return CliError(f"the {service} service does not allow this for our identity ({details})")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return CliError(
            f"the {service} service at {address} does not offer this call ({details}): is "
            f"PLEXSYNC_{service.upper()}_ADDR pointing at the {service} service, and is it as new as this command?"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CliError(f"the {service} service at {address} did not answer in time; see its log, then try again")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violations = field_violations(exc)
        if violations:
            return CliError(f"invalid argument ({service}): " + "; ".join(f"{f}: {d}" for f, d in violations))
    name = code.name if code is not None else "ERROR"
    hint = (
        f" ({_NOT_FOUND_HINTS[service]})" if code == grpc.StatusCode.NOT_FOUND and service in _NOT_FOUND_HINTS else ""
    )
    return CliError(f"{service}: {name}: {details}{hint}")
