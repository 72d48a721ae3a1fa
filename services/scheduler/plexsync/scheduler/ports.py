"""What the scheduling domain needs from its peers and from the work queue, as protocols.

The gRPC adapters (`peers`) and the JetStream adapter (`queue`) implement them; the domain (`service`) knows
nothing of gRPC or NATS.
"""

from __future__ import annotations

from typing import Protocol

from plexsync.v1 import common_pb2


class Catalog(Protocol):
    async def get_library(self, library_id: str) -> common_pb2.Library: ...

    async def list_libraries(self, server_id: str = "") -> list[common_pb2.Library]: ...

    async def update_library(self, library: common_pb2.Library, paths: list[str]) -> common_pb2.Library: ...


class Scanner(Protocol):
    async def sync_server(self, server_id: str) -> None: ...

    async def get_scan(self, scan_id: str) -> common_pb2.Scan | None: ...


class Servers(Protocol):
    async def server_ids(self) -> list[str]: ...


class JobQueue(Protocol):
    """The scanners' work queue and the job events."""

    async def publish_job(self, job: common_pb2.Job, traceparent: str) -> int:
        """Hand a job to the scanners; returns its stream sequence (the job id de-duplicates re-sends)."""
        ...

    async def remove_job(self, stream_seq: int) -> None: ...

    async def request_cancel(self, job_id: str, reason: str) -> None: ...

    async def job_event(self, kind: str, job: common_pb2.Job) -> None: ...
