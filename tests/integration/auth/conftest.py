"""Fixtures for the auth integration tests: fakeplex as a real process, a GDM responder, the auth service."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.msg import Msg
from plexsync.auth.crypto import new_key
from plexsync.devstack import process
from plexsync.devstack.process import ChildProcess
from plexsync.fakeplex import FakePlexControl
from plexsync.v1 import auth_pb2_grpc

from tests.support.stack import ServiceStack


@dataclass
class FakePlexProcess:
    """A running ``python -m plexsync.fakeplex`` and what its ready file says."""

    child: ChildProcess
    info: dict[str, Any]
    token: str
    account_token: str

    @property
    def listeners(self) -> dict[str, str]:
        return {name: entry["uri"] for name, entry in self.info["listeners"].items()}

    @property
    def local_url(self) -> str:
        return self.listeners["local"]

    @property
    def control_url(self) -> str:
        """plex.tv and the control API, on a listener that is not a server connection (``--control-listen``), so
        every connection - local, remote, https, relay - can be taken down."""
        return str(self.info["control_url"])

    @property
    def ca_file(self) -> str:
        """The CA that signed the ``https`` connection's ``*.<hash>.plex.direct`` certificate."""
        return str(self.info["tls_ca_file"])

    @property
    def machine_identifier(self) -> str:
        return str(self.info["machineIdentifier"])

    def control(self) -> FakePlexControl:
        return FakePlexControl(self.control_url)


@contextmanager
def running_fakeplex(directory: Path, *, seed: int, account_token: str | None = None) -> Iterator[FakePlexProcess]:
    """fakeplex as a real process for the block, with its control and TLS listeners, stopped afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    token = f"srvtok-{secrets.token_urlsafe(16)}"
    account = account_token or f"acctok-{secrets.token_urlsafe(16)}"
    args = ["--host", "127.0.0.1", "--port", "0", "--token", token, "--account-token", account]
    args += ["--control-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"]
    args += ["--movies", "2", "--shows", "0", "--other-videos", "0", "--seed", str(seed)]
    args += ["--friendly-name", f"FakePlex {seed}"]
    child, info = process.start_fakeplex(args, directory / f"fakeplex-{seed}.log")
    try:
        yield FakePlexProcess(child, info, token, account)
    finally:
        child.stop(timeout=5)


@pytest.fixture(scope="module")
def fakeplex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakePlexProcess]:
    with running_fakeplex(tmp_path_factory.mktemp("fakeplex"), seed=7) as fp:
        yield fp


@dataclass
class GdmResponder:
    """Answers GDM M-SEARCH on 127.0.0.1 only, like a Plex Media Server on the LAN would."""

    port: int
    answers: list[dict[str, str]]
    searches: list[bytes] = field(default_factory=list)


@pytest.fixture(scope="module")
def gdm_responder() -> Iterator[GdmResponder]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    responder = GdmResponder(port=sock.getsockname()[1], answers=[])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            responder.searches.append(data)
            if not data.startswith(b"M-SEARCH"):
                continue
            for answer in responder.answers:
                lines = ["HTTP/1.0 200 OK", "Content-Type: plex/media-server"]
                lines += [f"{key}: {value}" for key, value in answer.items()]
                sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield responder
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def auth_env(fp: FakePlexProcess, keys: str, gdm_port: int = 9, **extra: str) -> dict[str, str]:
    env = {
        "PLEXSYNC_PLEX_TV_URL": fp.control_url,
        "PLEXSYNC_PLEX_APP_URL": "https://app.plex.test",
        "PLEXSYNC_TOKEN_KEYS": keys,
        "PLEXSYNC_PROBE_TIMEOUT_SECONDS": "1",
        "PLEXSYNC_PLEX_TIMEOUT_SECONDS": "3",
        "PLEXSYNC_PIN_POLL_INTERVAL_SECONDS": "0.1",
        "PLEXSYNC_GDM_ADDRESSES": "127.0.0.1",
        "PLEXSYNC_GDM_PORT": str(gdm_port),
        "PLEXSYNC_GDM_TIMEOUT_SECONDS": "0.4",
        "PLEXSYNC_PLEX_CA_BUNDLE": fp.ca_file,
    }
    env.update(extra)
    return env


CLIENT_HEADERS = ("X-Plex-Product", "X-Plex-Version", "X-Plex-Client-Identifier", "X-Plex-Platform", "X-Plex-Device")


def assert_client_headers(requests: list[dict[str, Any]]) -> None:
    """Every request fakeplex recorded carries the X-Plex-* client headers, and no URL carries a token."""
    assert requests, "fakeplex recorded no requests"
    for entry in requests:
        where = f"{entry['method']} {entry['template']} on {entry['listener']}"
        headers = {name.lower(): value for name, value in entry["headers"].items()}
        for name in CLIENT_HEADERS:
            assert headers.get(name.lower()), f"{where} lacks {name}"
        assert headers["x-plex-client-identifier"].startswith("plexsync-"), where
        assert not entry["token_in_query"], f"{where} carried X-Plex-Token in its URL"
        assert not any(key.lower() == "x-plex-token" for key in entry["query"]), where


def key_spec(*pairs: tuple[str, str]) -> str:
    return ",".join(f"{kid}:{key}" for kid, key in pairs)


@pytest.fixture(scope="module")
def primary_key() -> tuple[str, str]:
    return ("k1", new_key())


def stub(stack: ServiceStack, identity: str = "cli") -> auth_pb2_grpc.AuthServiceStub:
    return auth_pb2_grpc.AuthServiceStub(stack.channel("auth", identity))


@dataclass
class EventLog:
    """Every message published on plexsync.v1.server.> while the module runs."""

    messages: list[Msg] = field(default_factory=list)

    async def wait_for(self, subject_suffix: str, within: float = 5.0) -> Msg:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for msg in self.messages:
                if msg.subject.endswith(subject_suffix):
                    return msg
            await asyncio.sleep(0.05)
        raise AssertionError(f"no event on *{subject_suffix}; got {[m.subject for m in self.messages]}")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server_events(nats_url: str) -> AsyncIterator[EventLog]:
    log = EventLog()
    nc = await nats.connect(nats_url)

    async def on_message(msg: Msg) -> None:
        log.messages.append(msg)

    await nc.subscribe("plexsync.v1.server.>", cb=on_message)
    try:
        yield log
    finally:
        await nc.drain()
