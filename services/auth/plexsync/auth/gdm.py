"""GDM (G'Day Mate): Plex's LAN discovery over UDP 32414.

A client sends ``M-SEARCH * HTTP/1.1`` to the GDM multicast group (239.0.0.250) and/or the broadcast address on
port 32414; every Plex Media Server on the segment answers with an HTTP-like block of headers
(``Content-Type: plex/media-server``, ``Resource-Identifier``, ``Name``, ``Port``, ``Version``...). The answer's
source address plus its ``Port`` is a LOCAL connection. Multicast TTL is 1: GDM never leaves the LAN.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from dataclasses import dataclass

log = logging.getLogger(__name__)

GDM_PORT = 32414
GDM_MULTICAST = "239.0.0.250"
SEARCH = b"M-SEARCH * HTTP/1.1\r\n\r\n"
SERVER_CONTENT_TYPE = "plex/media-server"


@dataclass(frozen=True)
class GdmServer:
    machine_identifier: str
    name: str
    address: str
    port: int
    version: str
    protocol: str = "http"

    @property
    def uri(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol}://{host}:{self.port}"


def parse_response(data: bytes, address: str) -> GdmServer | None:
    """Parse one GDM answer; None for anything that is not a Plex Media Server's 200 answer."""
    try:
        text = data.decode("utf-8", errors="replace")
    except Exception:  # pragma: no cover - decode with replace does not fail
        return None
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    if not lines or not lines[0].upper().startswith("HTTP/") or " 200" not in lines[0]:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    if headers.get("content-type", "").lower() != SERVER_CONTENT_TYPE:
        return None
    machine = headers.get("resource-identifier", "")
    try:
        port = int(headers.get("port", "32400"))
    except ValueError:
        return None
    if not machine or not 0 < port < 65536:
        return None
    return GdmServer(machine, headers.get("name", ""), address, port, headers.get("version", ""))


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.found: dict[tuple[str, str], GdmServer] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        server = parse_response(data, str(addr[0]))
        if server is not None:
            self.found.setdefault((server.machine_identifier, server.uri), server)

    def error_received(self, exc: Exception) -> None:
        log.debug("GDM socket error", extra={"error": type(exc).__name__})


async def discover(targets: list[str], *, port: int = GDM_PORT, listen_seconds: float = 2.0) -> list[GdmServer]:
    """Send M-SEARCH to every target (multicast group, broadcast or unicast address) and collect answers."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, struct.pack("b", 1))
    sock.bind(("0.0.0.0", 0))
    sock.setblocking(False)
    transport, protocol = await loop.create_datagram_endpoint(_Collector, sock=sock)
    try:
        sent = 0
        for target in targets:
            try:
                transport.sendto(SEARCH, (target, port))
                sent += 1
            except OSError as exc:
                log.warning("GDM search not sent", extra={"target": target, "error": type(exc).__name__})
        if sent:
            await asyncio.sleep(listen_seconds)
    finally:
        transport.close()
    return list(protocol.found.values())
