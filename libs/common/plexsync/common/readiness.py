"""Readiness that follows the dependencies a service needs to serve; liveness that does not.

Kubernetes restarts a pod whose liveness fails and stops routing to one whose readiness fails. A service that
lost PostgreSQL should stop taking calls (readiness NOT_SERVING) but must not be restarted for it (a restart
does not bring the database back, and a restart storm makes the outage worse). So the health service reports
two things: the service names and the overall "" status follow the `DependencyMonitor`'s checks, and
``liveness`` stays SERVING from start-up to shutdown. The probes: readiness asks for "" (or the service's
name), liveness for ``liveness``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

LIVENESS_SERVICE = "liveness"
Check = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class DependencyState:
    """What the monitor last saw of one dependency."""

    name: str
    ok: bool = True
    error: str = ""
    since: float = field(default_factory=time.monotonic)


class DependencyMonitor:
    """Runs each named check every `interval` seconds (each bounded by `timeout`); calls `on_change(ready)` when
    the conjunction of their results flips. A check raises to say its dependency is unreachable."""

    def __init__(
        self,
        on_change: Callable[[bool], Awaitable[None]],
        *,
        interval: float = 5.0,
        timeout: float = 3.0,
        failures_to_unready: int = 2,
    ) -> None:
        self.on_change, self.interval, self.timeout = on_change, interval, timeout
        self.failures_to_unready = max(1, failures_to_unready)
        self._checks: dict[str, Check] = {}
        self.states: dict[str, DependencyState] = {}
        self._failures: dict[str, int] = {}
        self.ready = True
        self._task: asyncio.Task[None] | None = None

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check
        self.states[name] = DependencyState(name)
        self._failures[name] = 0

    async def _probe(self, name: str, check: Check) -> None:
        state = self.states[name]
        try:
            await asyncio.wait_for(check(), self.timeout)
        except Exception as exc:
            self._failures[name] += 1
            error = f"{type(exc).__name__}: {exc}".strip()[:200] if str(exc) else type(exc).__name__
            if state.ok and self._failures[name] >= self.failures_to_unready:
                state.ok, state.error, state.since = False, error, time.monotonic()
                log.warning("dependency unreachable: not ready", extra={"dependency": name, "error": error})
            return
        self._failures[name] = 0
        if not state.ok:
            down_for = time.monotonic() - state.since
            state.ok, state.error, state.since = True, "", time.monotonic()
            log.info("dependency back: ready", extra={"dependency": name, "down_seconds": round(down_for, 1)})

    async def check_once(self) -> bool:
        await asyncio.gather(*(self._probe(n, c) for n, c in self._checks.items()))
        ready = all(s.ok for s in self.states.values())
        if ready != self.ready:
            self.ready = ready
            await self.on_change(ready)
        return ready

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check_once()
            except Exception:
                log.exception("readiness check failed")

    def start(self) -> None:
        if self._task is None and self._checks:
            self._task = asyncio.create_task(self._run(), name="readiness")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def database_check(engine: AsyncEngine) -> Check:
    """PostgreSQL answers a trivial query through the service's own pool."""

    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


def nats_check(is_connected: Callable[[], bool]) -> Check:
    """The NATS client holds a live connection (it reconnects on its own; this only reports)."""

    async def check() -> None:
        if not is_connected():
            raise ConnectionError("not connected to NATS")

    return check
