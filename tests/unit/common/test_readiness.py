"""DependencyMonitor: readiness flips after consecutive failures and back on the first success."""

from __future__ import annotations

import asyncio

from plexsync.common.readiness import DependencyMonitor, nats_check


async def test_readiness_follows_the_checks_after_consecutive_failures() -> None:
    changes: list[bool] = []

    async def record(ready: bool) -> None:
        changes.append(ready)

    healthy = {"db": True}

    async def db() -> None:
        if not healthy["db"]:
            raise ConnectionRefusedError("connection refused")

    monitor = DependencyMonitor(record, failures_to_unready=2)
    monitor.add("postgresql", db)
    assert await monitor.check_once() and changes == []
    healthy["db"] = False
    assert await monitor.check_once()  # one failure is not an outage yet
    assert not await monitor.check_once() and changes == [False]
    assert "connection refused" in monitor.states["postgresql"].error
    assert not await monitor.check_once() and changes == [False]  # reported once
    healthy["db"] = True
    assert await monitor.check_once() and changes == [False, True]
    assert monitor.states["postgresql"].ok and not monitor.states["postgresql"].error


async def test_a_hanging_check_counts_as_a_failure() -> None:
    changes: list[bool] = []

    async def record(ready: bool) -> None:
        changes.append(ready)

    async def hangs() -> None:
        await asyncio.sleep(60)

    monitor = DependencyMonitor(record, timeout=0.05, failures_to_unready=1)
    monitor.add("nats", hangs)
    monitor.add("other", nats_check(lambda: True))
    assert not await monitor.check_once() and changes == [False]
    assert monitor.states["nats"].error == "TimeoutError" and monitor.states["other"].ok
