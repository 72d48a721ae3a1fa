"""Every scanner replica runs a `WatchSupervisor`: it takes the watch of each Plex server nobody holds, keeps
the leases it holds renewed (persisting its watchers' status with them), and stops a watcher whose lease it
lost. So each server has exactly one active watcher across the replicas, and a dead holder's servers move to
another replica within the lease TTL plus one poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from plexsync.scanner.realtime.leases import Lease, WatchLeases
from plexsync.scanner.realtime.watcher import ServerWatcher

log = logging.getLogger(__name__)


class ServerDirectory(Protocol):
    async def server_ids(self) -> list[str]: ...


class WatchSupervisor:
    def __init__(
        self,
        *,
        leases: WatchLeases,
        servers: ServerDirectory,
        make_watcher: Callable[[str, Lease], ServerWatcher],
        poll_seconds: float,
        servers_every_seconds: float = 10.0,
    ) -> None:
        self.leases, self.servers, self.make_watcher = leases, servers, make_watcher
        self.poll, self.servers_every = poll_seconds, servers_every_seconds
        self.watchers: dict[str, tuple[ServerWatcher, asyncio.Task[None]]] = {}
        self._server_ids: list[str] = []
        self._servers_at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="realtime-supervisor")

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("real-time supervisor tick failed", exc_info=True)
            await asyncio.sleep(self.poll)

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._servers_at >= self.servers_every:
            self._server_ids = await self.servers.server_ids()
            self._servers_at = loop.time()
        wanted = set(self._server_ids)
        for server_id, (watcher, task) in list(self.watchers.items()):
            if server_id not in wanted:
                await self._stop(server_id, release=True)
            elif task.done():
                # A watcher only ends by failing unexpectedly (it retries everything else): start a new one.
                if not task.cancelled() and task.exception() is not None:
                    log.error("real-time watcher crashed", exc_info=task.exception())
                await self._stop(server_id, release=False)
            elif not await self.leases.renew(watcher.status):
                log.warning("lost the watch of a server to another replica", extra={"server_id": server_id})
                await self._stop(server_id, release=False)
        for server_id in sorted(wanted - self.watchers.keys()):
            lease = await self.leases.acquire(server_id)
            if lease.acquired:
                watcher = self.make_watcher(server_id, lease)
                task = asyncio.create_task(watcher.run(), name=f"realtime-watch-{server_id}")
                self.watchers[server_id] = (watcher, task)
                log.info(
                    "watching a server in real time",
                    extra={"server_id": server_id, "took_over_from": lease.previous_holder},
                )

    async def _stop(self, server_id: str, *, release: bool) -> None:
        _, task = self.watchers.pop(server_id)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        if release:
            with contextlib.suppress(Exception):
                await self.leases.release(server_id)

    async def close(self) -> None:
        """Stop every watcher and release its lease, so another replica takes over at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        for server_id in list(self.watchers):
            await self._stop(server_id, release=True)
