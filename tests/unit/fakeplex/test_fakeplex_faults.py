"""Fault injection behaves as configured, deterministically."""

from __future__ import annotations

import time

import httpx
import pytest
from plexsync.fakeplex import FakePlex, FakePlexControl
from plexsync.fakeplex.faults import FaultInjector, FaultRule


async def test_error_and_retry_after(client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    await ctl.add_fault("error", status=503, retry_after=7, times=1)
    r = await client.get("/library/sections")
    assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    assert (await client.get("/library/sections")).status_code == 200


async def test_rate_limit(client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    await ctl.add_fault("rate_limit", retry_after=2, path_prefix="/library/metadata")
    assert (await client.get("/library/sections")).status_code == 200
    r = await client.get("/library/metadata/1")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    await ctl.clear_faults()
    assert (await client.get("/library/metadata/1")).status_code == 200


async def test_drop_truncate_malformed(client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    await ctl.add_fault("drop", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get("/library/sections")
    await ctl.add_fault("truncate", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get("/library/sections/1/all")
    await ctl.add_fault("malformed", times=1)
    r = await client.get("/library/sections/1/all", headers={"Accept": "application/json"})
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    assert (await client.get("/library/sections/1/all", headers={"Accept": "application/json"})).json()


async def test_latency(client: httpx.AsyncClient, ctl: FakePlexControl) -> None:
    await ctl.add_fault("latency", latency_ms=150, jitter_ms=20)
    t0 = time.perf_counter()
    await client.get("/identity")
    assert time.perf_counter() - t0 >= 0.15
    await ctl.reset()
    t0 = time.perf_counter()
    await client.get("/identity")
    assert time.perf_counter() - t0 < 0.1


def test_probability_is_deterministic_with_seed() -> None:
    def run(seed: int) -> list[bool]:
        inj = FaultInjector(seed=seed, rules=[FaultRule("error", probability=0.3)])
        return [inj.decide("/library/sections").action is not None for _ in range(200)]

    assert run(3) == run(3)
    assert run(3) != run(4)
    assert 30 < sum(run(3)) < 90


def test_rule_validation() -> None:
    with pytest.raises(ValueError):
        FaultRule.from_dict({"kind": "explode"})
    with pytest.raises(ValueError):
        FaultRule.from_dict({"kind": "error", "probability": 2})


async def test_connections_down_and_slow(fp: FakePlex, ctl: FakePlexControl) -> None:
    relay = fp.listeners["relay"].uri
    remote = fp.listeners["remote"].uri
    headers = {"X-Plex-Token": fp.token}
    async with httpx.AsyncClient(headers=headers, timeout=5) as c:
        assert (await c.get(f"{relay}/identity")).status_code == 200
        await ctl.set_connection("relay", "down")
        with pytest.raises(httpx.TransportError):
            await c.get(f"{relay}/identity")
        await ctl.set_connection("remote", "slow", delay_ms=300)
        t0 = time.perf_counter()
        assert (await c.get(f"{remote}/identity")).status_code == 200
        assert time.perf_counter() - t0 >= 0.3
        await ctl.reset()
    async with httpx.AsyncClient(headers=headers, timeout=5) as c:
        assert (await c.get(f"{relay}/identity")).status_code == 200
