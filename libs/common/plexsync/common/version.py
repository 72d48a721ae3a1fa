"""`plexsync.v1.VersionService`: which build a service runs, so `plexsync doctor` can show it for each.

Every ServiceApp serves it; the version is the installed plexsync package's (one package for every service)."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any, TypeAlias

from plexsync.v1 import version_pb2, version_pb2_grpc

# grpc ships no type hints; handlers receive a grpc.aio.ServicerContext.
Context: TypeAlias = Any
SERVICE_NAME = "plexsync.v1.VersionService"


def package_version() -> str:
    try:
        return metadata.version("plexsync")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


class VersionServicer(version_pb2_grpc.VersionServiceServicer):
    def __init__(self, service: str) -> None:
        self._reply = version_pb2.GetVersionResponse(
            service=service, version=package_version(), python_version=platform.python_version()
        )

    async def GetVersion(
        self, request: version_pb2.GetVersionRequest, context: Context
    ) -> version_pb2.GetVersionResponse:
        return self._reply
