"""The notification stream: websockets and EventSource as a real Plex server sends them, and faults on it."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from plexsync.fakeplex import FakePlex, FakePlexControl
from plexsync.fakeplex.notify import Filters

from tests.unit.fakeplex.conftest import SMALL

WS = "/:/websockets/notifications"
SSE = "/:/eventsource/notifications"
Message = dict[str, Any]


def kind(m: Message) -> str:
    return str(m["NotificationContainer"]["type"])


def entries(m: Message) -> list[dict[str, Any]]:
    mc = m["NotificationContainer"]
    return list(mc.get("TimelineEntry", [])) if mc["type"] == "timeline" else []


def activity_event(m: Message) -> str | None:
    if kind(m) != "activity":
        return None
    return str(m["NotificationContainer"]["ActivityNotification"][0]["event"])


def ended(m: Message) -> bool:
    return activity_event(m) == "ended"


async def read_ws_until(ws: aiohttp.ClientWebSocketResponse, done: Any, within: float = 5.0) -> list[Message]:
    """Messages until one for which ``done(message)`` holds (included)."""
    out: list[Message] = []
    async with asyncio.timeout(within):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            out.append(orjson.loads(msg.data))
            if done(out[-1]):
                return out


def final_for(rk: str) -> Any:
    return lambda m: any(e["itemID"] == rk and e["state"] in (5, 9) for e in entries(m))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def ws_url(fp: FakePlex, filters: str | None = None, *, token: bool = False) -> str:
    params = []
    if filters is not None:
        params.append(f"filters={filters}")
    if token:
        params.append(f"X-Plex-Token={fp.token}")
    return fp.url + WS + ("?" + "&".join(params) if params else "")


# ---------------------------------------------------------------------- auth and filters
async def test_token_required_in_header_or_query(fp: FakePlex, session: aiohttp.ClientSession) -> None:
    for path in (WS, "/:/websocket/notifications"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await session.ws_connect(fp.url + path)
        assert err.value.status == 401
    async with session.ws_connect(ws_url(fp), headers={"X-Plex-Token": fp.token}) as ws:
        assert not ws.closed
    async with session.ws_connect(ws_url(fp, token=True)) as ws:
        assert not ws.closed
    async with session.get(fp.url + SSE) as r:
        assert r.status == 401
    async with session.get(fp.url + SSE, headers={"X-Plex-Token": fp.token}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    async with session.get(f"{fp.url}{SSE}?X-Plex-Token={fp.token}") as r:
        assert r.status == 200


def test_filters_rules() -> None:
    default = Filters.parse(None)
    assert default.accepts("timeline") and default.accepts("whatever") and not default.accepts("log")
    only = Filters.parse("timeline,activity")
    assert only.accepts("timeline") and only.accepts("activity") and not only.accepts("status")
    but = Filters.parse("-foo,bar")
    assert but.accepts("bar") and but.accepts("timeline") and not but.accepts("foo")
    assert Filters.parse("").accepts("timeline") and not Filters.parse("").accepts("log")


async def test_add_sends_states_0_to_5_inside_the_activity(
    fp: FakePlex, ctl: FakePlexControl, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(ws_url(fp, token=True)) as ws:
        rk = await ctl.add_item(1, title="Brand New")
        msgs = await read_ws_until(ws, ended)
    kinds = [kind(m) for m in msgs]
    assert activity_event(msgs[0]) == "started" and ended(msgs[-1])
    act = msgs[0]["NotificationContainer"]["ActivityNotification"][0]
    assert act["Activity"]["type"] == "library.update.section" and act["Activity"]["progress"] == 0
    assert act["Activity"]["Context"]["librarySectionID"] == "1"
    assert msgs[-1]["NotificationContainer"]["ActivityNotification"][0]["uuid"] == act["uuid"]
    assert msgs[-1]["NotificationContainer"]["ActivityNotification"][0]["Activity"]["progress"] == 100
    mine = [e for m in msgs for e in entries(m) if e["itemID"] == rk]
    assert [e["state"] for e in mine] == [0, 1, 3, 4, 5]
    assert mine[0]["metadataState"] == "created" and "metadataState" not in mine[-1]
    for e in mine:
        assert e["identifier"] == "com.plexapp.plugins.library" and e["sectionID"] == "1" and e["type"] == 1
        assert e["title"] == "Brand New" and isinstance(e["updatedAt"], int) and "queueSize" in e
    # Also what a client must ignore: status and other types, and activity progress in between.
    assert "status" in kinds and "backgroundProcessingQueue" in kinds and "progress" in kinds
    assert any(activity_event(m) == "updated" for m in msgs)
    status = next(m for m in msgs if kind(m) == "status")["NotificationContainer"]
    assert status["size"] == 1 and status["StatusNotification"][0]["title"]


async def test_edit_and_delete(fp: FakePlex, ctl: FakePlexControl, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(ws_url(fp, "timeline,activity"), headers={"X-Plex-Token": fp.token}) as ws:
        await ctl.change(1, title="Edited")
        edit = await read_ws_until(ws, ended)
        await ctl.delete(2)
        gone = await read_ws_until(ws, ended)
    assert [(e["itemID"], e["state"]) for m in edit for e in entries(m)] == [("1", 5)]
    assert [(e["itemID"], e["state"], e["metadataState"]) for m in gone for e in entries(m)] == [("2", 9, "deleted")]
    assert activity_event(edit[0]) == activity_event(gone[0]) == "started"


async def test_filters_on_the_websocket(fp: FakePlex, ctl: FakePlexControl, session: aiohttp.ClientSession) -> None:
    headers = {"X-Plex-Token": fp.token}
    async with (
        session.ws_connect(ws_url(fp, "timeline"), headers=headers) as timeline_only,
        session.ws_connect(ws_url(fp, "-timeline"), headers=headers) as no_timeline,
        session.ws_connect(ws_url(fp, "-foo,activity"), headers=headers) as all_but_foo,
    ):
        rk = await ctl.add_item(1, title="Filtered")
        await ctl.change(1, title="Marker")  # everything of the first burst arrives before this one's entry
        t = await read_ws_until(timeline_only, final_for("1"))
        n = await read_ws_until(no_timeline, ended)
        n += await read_ws_until(no_timeline, ended)
        a = await read_ws_until(all_but_foo, ended)
    assert {kind(m) for m in t} == {"timeline"} and any(final_for(rk)(m) for m in t)
    assert "timeline" not in {kind(m) for m in n} and {"activity", "status"} <= {kind(m) for m in n}
    assert {"timeline", "activity", "status", "progress", "backgroundProcessingQueue"} <= {kind(m) for m in a}


# ---------------------------------------------------------------------- EventSource
class SseReader:
    """Reads an EventSource stream in the background: ``messages`` (the ``data:`` JSON) and ``pings`` (times)."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.messages: list[Message] = []
        self.pings: list[float] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(resp))

    async def _run(self, resp: aiohttp.ClientResponse) -> None:
        loop = asyncio.get_running_loop()
        buf = b""
        async for chunk in resp.content.iter_any():
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                if event == b": ping":
                    self.pings.append(loop.time())
                else:
                    assert event.startswith(b"data: "), event
                    self.messages.append(orjson.loads(event[len(b"data: ") :]))
                self._changed.set()

    async def until(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def stop(self) -> None:
        self._task.cancel()


async def test_eventsource_same_messages_and_pings(
    fp: FakePlex, ctl: FakePlexControl, session: aiohttp.ClientSession
) -> None:
    fp.eventsource_ping_s = 0.2
    headers = {"X-Plex-Token": fp.token}
    async with (
        session.get(fp.url + SSE, headers=headers | {"Accept": "text/event-stream"}) as resp,
        session.ws_connect(ws_url(fp), headers=headers) as ws,
    ):
        assert resp.status == 200
        reader = SseReader(resp)
        rk = await ctl.add_item(1, title="Streamed")
        over_ws = await read_ws_until(ws, ended)
        await reader.until(lambda: len(reader.messages) >= len(over_ws) and len(reader.pings) >= 3)
        reader.stop()
    assert reader.messages == over_ws and any(final_for(rk)(m) for m in over_ws)
    gaps = [b - a for a, b in itertools.pairwise(reader.pings)]
    assert all(0.1 < g < 0.6 for g in gaps), gaps


async def test_eventsource_filters(fp: FakePlex, ctl: FakePlexControl, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{fp.url}{SSE}?filters=activity", headers={"X-Plex-Token": fp.token}) as resp:
        reader = SseReader(resp)
        await ctl.add_item(1)
        await reader.until(lambda: bool(reader.messages) and ended(reader.messages[-1]))
        reader.stop()
    assert {kind(m) for m in reader.messages} == {"activity"}


# ---------------------------------------------------------------------- bulk
async def test_bulk_add_one_burst(fp: FakePlex, ctl: FakePlexControl, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(ws_url(fp, "timeline,activity", token=True)) as ws:
        keys = await ctl.add_items_bulk(1, 300, title="Bulk")
        msgs = await read_ws_until(ws, ended)
    assert len(keys) == len(set(keys)) == 300 and all(isinstance(k, str) for k in keys)
    started = [m for m in msgs if activity_event(m) == "started"]
    assert len(started) == 1 and activity_event(msgs[0]) == "started" and ended(msgs[-1])
    finals = [m for m in msgs if any(e["state"] == 5 for e in entries(m))]
    assert [e["itemID"] for m in finals for e in entries(m) if e["state"] == 5] == keys
    assert len(finals) <= 4
    assert all(m["NotificationContainer"]["size"] == len(entries(m)) <= 100 for m in msgs if kind(m) == "timeline")
    assert sum(len(entries(m)) for m in msgs) == 300 * 5
    titles = {fp.library.nodes[int(k)].title for k in keys}
    assert titles == {f"Bulk {i}" for i in range(1, 301)}


async def test_bulk_add_episodes_and_errors(fp: FakePlex, ctl: FakePlexControl) -> None:
    season = next(rk for rk, n in fp.library.nodes.items() if n.type == "season")
    show = fp.library.nodes[season].section_key
    keys = await ctl.add_items_bulk(show, 3, parent=season)
    assert [fp.library.nodes[int(k)].type for k in keys] == ["episode"] * 3
    assert await ctl.add_items_bulk(1, 0) == []
    with pytest.raises(Exception, match="404"):
        await ctl.add_items_bulk(99, 2)


# ---------------------------------------------------------------------- faults
async def test_drop_aborts_with_no_close_frame(
    fp: FakePlex, ctl: FakePlexControl, session: aiohttp.ClientSession
) -> None:
    headers = {"X-Plex-Token": fp.token}
    async with (
        session.ws_connect(ws_url(fp), headers=headers) as ws,
        session.get(fp.url + SSE, headers=headers) as sse,
    ):
        assert (await ctl.notifications_status())["websockets"] == 1
        assert await ctl.notifications_drop() == 2
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR), msg
        assert ws.close_code in (None, 1006)
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(sse.content.read(), 5)
    status = await ctl.notifications_status()
    assert (status["websockets"], status["eventsources"], status["connections_total"]) == (0, 0, 2)


async def test_silence_times_out_the_heartbeat(
    fp: FakePlex, ctl: FakePlexControl, session: aiohttp.ClientSession
) -> None:
    headers = {"X-Plex-Token": fp.token}
    async with session.ws_connect(ws_url(fp), headers=headers, heartbeat=0.5) as ws:
        await ctl.notifications_silence(True)
        await ctl.add_item(1, title="Lost")
        msg = await asyncio.wait_for(ws.receive(), 5)  # nothing arrives; the missed pong closes it
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR), msg
        assert isinstance(ws.exception(), aiohttp.ServerTimeoutError)
    status = await ctl.notifications_status()
    assert status["silent"] is True and status["lost"] > 0 and status["sent"] == 0
    # New connections are still accepted while silent (and silent too).
    async with session.ws_connect(ws_url(fp), headers=headers) as ws:
        assert (await ctl.notifications_status())["websockets"] == 1
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.receive(), 0.3)
        await ctl.notifications_silence(False)
        rk = await ctl.add_item(1, title="Heard")
        msgs = await read_ws_until(ws, ended)
    assert any(final_for(rk)(m) for m in msgs)
    async with session.ws_connect(ws_url(fp), headers=headers, heartbeat=0.3) as ws:
        with pytest.raises(TimeoutError):  # pings answered: the socket stays open
            await asyncio.wait_for(ws.receive(), 1.2)
        assert not ws.closed


async def test_silence_stops_eventsource_pings(
    fp: FakePlex, ctl: FakePlexControl, session: aiohttp.ClientSession
) -> None:
    fp.eventsource_ping_s = 0.1
    async with session.get(fp.url + SSE, headers={"X-Plex-Token": fp.token}) as resp:
        reader = SseReader(resp)
        await reader.until(lambda: len(reader.pings) >= 2)
        await ctl.notifications_silence(True)
        await asyncio.sleep(0.05)
        seen = len(reader.pings)
        await asyncio.sleep(0.4)
        assert len(reader.pings) == seen
        await ctl.notifications_silence(False)
        await reader.until(lambda: len(reader.pings) > seen, within=1)
        reader.stop()


async def test_skip_skips_exactly_n_messages_for_everyone(
    fp: FakePlex, ctl: FakePlexControl, session: aiohttp.ClientSession
) -> None:
    headers = {"X-Plex-Token": fp.token}
    async with (
        session.ws_connect(ws_url(fp), headers=headers) as a,
        session.ws_connect(ws_url(fp, "timeline,activity"), headers=headers) as b,
    ):
        await ctl.change(1, title="Whole")
        whole = await read_ws_until(a, ended)
        await read_ws_until(b, ended)
        await ctl.notifications_skip(2)
        await ctl.change(1, title="Partial")
        partial_a = await read_ws_until(a, ended)
        partial_b = await read_ws_until(b, ended)
        await ctl.change(1, title="Whole again")
        again = await read_ws_until(a, ended)
    assert [kind(m) for m in whole] == ["activity", "timeline", "activity"]
    assert [kind(m) for m in partial_a] == [kind(m) for m in partial_b] == ["activity"]  # started and entry skipped
    assert len(again) == len(whole)
    status = await ctl.notifications_status()
    assert status["skipped"] == 2 and status["published"] == 9


async def test_refuse_then_clear(fp: FakePlex, ctl: FakePlexControl, session: aiohttp.ClientSession) -> None:
    headers = {"X-Plex-Token": fp.token}
    await ctl.notifications_refuse(503)
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await session.ws_connect(ws_url(fp), headers=headers)
    assert err.value.status == 503
    async with session.get(fp.url + SSE, headers=headers) as r:
        assert r.status == 503
    assert (await ctl.notifications_status())["refusing"] == 503
    await ctl.notifications_refuse(None)
    async with session.ws_connect(ws_url(fp), headers=headers) as ws:
        assert not ws.closed
    assert (await ctl.notifications_status())["refusing"] is None


async def test_reset_clears_stream_faults_but_keeps_connections(
    fp: FakePlex, ctl: FakePlexControl, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(ws_url(fp), headers={"X-Plex-Token": fp.token}) as ws:
        await ctl.notifications_silence(True)
        await ctl.notifications_skip(5)
        await ctl.notifications_refuse(500)
        await ctl.reset()
        status = await ctl.notifications_status()
        assert (status["silent"], status["refusing"], status["skip_pending"], status["websockets"]) == (
            False, None, 0, 1
        )  # fmt: skip
        rk = await ctl.add_item(1)
        assert any(final_for(rk)(m) for m in await read_ws_until(ws, ended))


async def test_token_revoke_closes_sockets(fp: FakePlex, ctl: FakePlexControl, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(ws_url(fp), headers={"X-Plex-Token": fp.token}) as ws:
        await ctl.revoke_token(fp.token)
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def _stalled_websocket(fp: FakePlex) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A websocket client that completes the handshake and then never reads (a tiny receive window)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (fp.host, fp.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {WS}?X-Plex-Token={fp.token} HTTP/1.1\r\nHost: {fp.host}:{fp.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def test_a_stalled_client_delays_no_one_and_is_dropped_when_it_overflows(
    session: aiohttp.ClientSession,
) -> None:
    async with FakePlex(spec=SMALL, notification_queue_size=200) as fp, FakePlexControl(fp.url) as ctl:
        _, stalled = await _stalled_websocket(fp)
        async with session.ws_connect(ws_url(fp), headers={"X-Plex-Token": fp.token}) as ws:
            assert (await ctl.notifications_status())["websockets"] == 2
            for _ in range(40):
                keys = await ctl.add_items_bulk(1, 200, title="Flood")
                msgs = await read_ws_until(ws, ended, within=2)  # never waits on the stalled client
                assert any(final_for(keys[-1])(m) for m in msgs)
                if (await ctl.notifications_status())["overflowed"]:
                    break
            status = await ctl.notifications_status()
            assert status["overflowed"] == 1 and status["websockets"] == 1
            rk = await ctl.add_item(1)
            assert any(final_for(rk)(m) for m in await read_ws_until(ws, ended))
        stalled.close()
